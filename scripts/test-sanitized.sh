#!/usr/bin/env bash
# The unit and integration tests under a sanitizer, each from its own clang
# build beside build/:
#   asan: AddressSanitizer (leaks included) and UndefinedBehaviorSanitizer,
#         build-asan/ (scripts/build-asan.sh), the fuzz targets' smoke runs
#         included;
#   tsan: ThreadSanitizer, build-tsan/ (scripts/build-tsan.sh, with an
#         instrumented Abseil and the library that marks libgrpc's order).
# Any report fails the run: the first error or race aborts its process, and a
# leak at exit fails it. Reports go to BUILD/sanitizer-logs/, one file per
# process (report.<program>.<pid>), test binaries and the services they start
# alike, and are printed at the end. The docker cluster test is not run here.
#
#   scripts/test-sanitized.sh asan              # every ctest test
#   scripts/test-sanitized.sh tsan -R Inventory # extra arguments go to ctest
#
# Prints how long the build and the tests took.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
kind="${1:-}"
if [[ "$kind" != asan && "$kind" != tsan ]]; then
  echo "usage: scripts/test-sanitized.sh asan|tsan [ctest args]" >&2
  exit 2
fi
shift
build="build-$kind"

t0=$(date +%s)
nice -n 10 "scripts/build-$kind.sh"
t1=$(date +%s)

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
if [[ "$kind" == tsan ]]; then
  # The instrumented Abseil, before Debian's, and the library that marks
  # libgrpc's order of operations and completions (every process of the run
  # loads it; it does nothing in those without ThreadSanitizer).
  export LD_LIBRARY_PATH="$PWD/$build/absl-tsan/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LD_PRELOAD="$PWD/$build/libtsan_grpc_order.so${LD_PRELOAD:+:$LD_PRELOAD}"
fi

rc=0
ctest --test-dir "$build" --output-on-failure -j2 "$@" || rc=$?
if compgen -G "$logs/*" >/dev/null; then
  for f in "$logs"/*; do
    echo "==== $f"
    cat "$f"
  done
  echo "test-sanitized: sanitizer reports above" >&2
  rc=1
fi
t2=$(date +%s)
echo "test-sanitized $kind: build $((t1 - t0)) s, tests $((t2 - t1)) s, total $((t2 - t0)) s"
exit "$rc"
