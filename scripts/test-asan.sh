#!/usr/bin/env bash
# The unit and integration tests under AddressSanitizer (leaks included) and
# UndefinedBehaviorSanitizer, in the clang build that also checks the lock
# annotations: builds build-asan/ (scripts/build-asan.sh), then runs CTest
# there (scripts/sanitized-ctest.sh), the fuzz targets' smoke runs included.
# Any report fails the run: the first error aborts the process, and a leak at
# exit fails it. The docker cluster test is not run here.
#
#   scripts/test-asan.sh              # every ctest test
#   scripts/test-asan.sh -R Inventory # extra arguments go to ctest
#
# Prints how long the build and the tests took.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

t0=$(date +%s)
nice -n 10 scripts/build-asan.sh
t1=$(date +%s)
rc=0
scripts/sanitized-ctest.sh build-asan "$@" || rc=$?
t2=$(date +%s)
echo "test-asan: build $((t1 - t0)) s, tests $((t2 - t1)) s, total $((t2 - t0)) s"
exit "$rc"
