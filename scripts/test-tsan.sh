#!/usr/bin/env bash
# The unit and integration tests under ThreadSanitizer: builds build-tsan/
# (scripts/build-tsan.sh, with an instrumented Abseil), then runs CTest there
# (scripts/sanitized-ctest.sh). The first race reported fails its process;
# tests/sanitizers/tsan.supp lists what is suppressed and why. The docker
# cluster test is not run here.
#
#   scripts/test-tsan.sh              # every ctest test
#   scripts/test-tsan.sh -R Inventory # extra arguments go to ctest
#
# Prints how long the build and the tests took.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

t0=$(date +%s)
nice -n 10 scripts/build-tsan.sh
t1=$(date +%s)
rc=0
scripts/sanitized-ctest.sh build-tsan "$@" || rc=$?
t2=$(date +%s)
echo "test-tsan: build $((t1 - t0)) s, tests $((t2 - t1)) s, total $((t2 - t0)) s"
exit "$rc"
