#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run): installs missing
# dependencies, builds everything, then runs every test with CTest. Tests
# that need PostgreSQL start their own private server.
#
# Extra arguments go to ctest, e.g.: scripts/test.sh -R Inventory
#
# Without arguments it then runs, each from its own clang build:
#   - scripts/test-sanitized.sh asan: the same tests under AddressSanitizer
#     and UndefinedBehaviorSanitizer, with the fuzz targets' smoke runs;
#   - scripts/fuzz.sh: every libFuzzer target for FUZZ_SECONDS (default 60),
#     two at a time;
#   - scripts/test-sanitized.sh tsan: the same tests under ThreadSanitizer;
#   - scripts/cluster-test.sh: the docker-compose cluster test.
# SKIP_SANITIZERS=1 skips the first three, SKIP_CLUSTER_TEST=1 the last.
# Prints how long each stage took.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

times=()
stage() {
  local name="$1" t0=$SECONDS
  shift
  "$@"
  times+=("$name $((SECONDS - t0)) s")
  echo "test.sh: $name took $((SECONDS - t0)) s"
}

stage build scripts/build.sh
stage ctest ctest --test-dir build --output-on-failure -j2 "$@"

if [[ $# -eq 0 && "${SKIP_SANITIZERS:-0}" != 1 ]]; then
  stage asan scripts/test-sanitized.sh asan
  stage fuzz scripts/fuzz.sh
  stage tsan scripts/test-sanitized.sh tsan
fi

# The docker-compose cluster test (tests/cluster/): installs and starts Docker
# as needed, builds the images, runs the three-device cluster's scenarios and
# cleans up; about 10-12 minutes from nothing. Needs root.
if [[ $# -eq 0 && "${SKIP_CLUSTER_TEST:-0}" != 1 ]]; then
  stage cluster scripts/cluster-test.sh
fi
echo "test.sh: ${times[*]/%/,} total ${SECONDS} s"
