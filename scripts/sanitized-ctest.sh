#!/usr/bin/env bash
# Runs CTest in a sanitizer build (build-asan/ or build-tsan/) so that any
# report fails the run, and prints the reports. Used by scripts/test-asan.sh
# and scripts/test-tsan.sh; extra arguments go to ctest.
#
#   scripts/sanitized-ctest.sh build-asan [ctest args]
#
# Reports go to BUILD/sanitizer-logs/, one file per process
# (report.<program>.<pid>), test binaries and the services they start alike:
# a service's own output goes to a log file its test deletes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build="$1"
shift

logs="$PWD/$build/sanitizer-logs"
rm -rf "$logs"
mkdir -p "$logs"
log="log_path=$logs/report:log_exe_name=1"
supp="$PWD/tests/sanitizers"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:$log"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:$log"
# halt_on_error: the first race fails the process, as ASan's first error does.
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1:$log"
TSAN_OPTIONS+=":suppressions=$supp/tsan.supp:print_suppressions=0"
symbolizer="$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || true)"
export ASAN_SYMBOLIZER_PATH="${ASAN_SYMBOLIZER_PATH:-$symbolizer}"
export TSAN_SYMBOLIZER_PATH="${TSAN_SYMBOLIZER_PATH:-$symbolizer}"
# The instrumented Abseil of build-tsan.sh, before Debian's.
if [[ -d "$PWD/$build/absl-tsan/lib" ]]; then
  export LD_LIBRARY_PATH="$PWD/$build/absl-tsan/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

rc=0
ctest --test-dir "$build" --output-on-failure -j2 "$@" || rc=$?
if compgen -G "$logs/*" >/dev/null; then
  for f in "$logs"/*; do
    echo "==== $f"
    cat "$f"
  done
  echo "sanitized-ctest: sanitizer reports above" >&2
  rc=1
fi
exit "$rc"
