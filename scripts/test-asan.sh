#!/usr/bin/env bash
# The unit and integration tests under AddressSanitizer (leaks included) and
# UndefinedBehaviorSanitizer, in the clang build that also checks the lock
# annotations: builds build-asan/ (scripts/build-asan.sh), then runs CTest
# there. Any report fails the run: the first error aborts the process, and
# a leak at exit fails it. The docker cluster test is not run here.
#
#   scripts/test-asan.sh              # every ctest test
#   scripts/test-asan.sh -R Inventory # extra arguments go to ctest
#
# Reports go to build-asan/sanitizer-logs/ (one file per process, test
# binaries and the services they start alike, since a service's own output
# goes to a log file its test deletes); they are printed at the end.
# Prints how long the build and the tests took.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

t0=$(date +%s)
nice -n 10 scripts/build-asan.sh
t1=$(date +%s)
echo "test-asan: build took $((t1 - t0)) s"

logs="$PWD/build-asan/sanitizer-logs"
rm -rf "$logs"
mkdir -p "$logs"
# One log file per process: $logs/report.<program>.<pid> (both runtimes).
log="log_path=$logs/report:log_exe_name=1"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:$log"
export LSAN_OPTIONS="suppressions=$PWD/tests/sanitizers/lsan.supp"
LSAN_OPTIONS+=":print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:$log"
export ASAN_SYMBOLIZER_PATH="${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || true)}"

rc=0
ctest --test-dir build-asan --output-on-failure -j2 "$@" || rc=$?
t2=$(date +%s)

if compgen -G "$logs/*" >/dev/null; then
  for f in "$logs"/*; do
    echo "==== $f"
    cat "$f"
  done
  echo "test-asan: sanitizer reports above" >&2
  rc=1
fi
echo "test-asan: build $((t1 - t0)) s, tests $((t2 - t1)) s, total $((t2 - t0)) s"
exit "$rc"
