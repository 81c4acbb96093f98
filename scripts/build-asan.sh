#!/usr/bin/env bash
# The checking build: clang, with AddressSanitizer + UndefinedBehaviorSanitizer
# and the lock annotations checked (-Wthread-safety as errors, the top
# CMakeLists.txt's SIDECAR_THREAD_SAFETY option, on for any clang build).
# Configures and builds build-asan/ beside the normal GCC build/.
#
#   scripts/build-asan.sh                # everything
#   scripts/build-asan.sh fuzz_targets   # only the named make targets
#
# The same build serves the tests (scripts/test-sanitized.sh asan) and the libFuzzer
# targets (scripts/fuzz.sh): SIDECAR_FUZZ=ON adds libFuzzer's coverage hooks
# to everything, which costs the tests little and saves a second clang build
# of the whole tree (about 11 minutes on two cores).
#
# -O1 with line tables only (CMake's Debug type): asserts on, stacks with
# file:line, tests not much slower than -O2; full -g would make the objects
# several times larger and the links slower. JOBS (default: nproc) may be set
# in the environment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# clang-14, its sanitizer runtimes, and llvm-symbolizer for readable stacks.
scripts/install-deps.sh clang-14 libclang-rt-14-dev llvm-14

JOBS="${JOBS:-$(nproc)}"
CC=clang-14 CXX=clang++-14 cmake -S . -B build-asan \
  -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS_DEBUG="-gline-tables-only" \
  -DCMAKE_CXX_FLAGS="-O1" \
  -DSIDECAR_SANITIZE=address \
  -DSIDECAR_FUZZ=ON \
  -DSIDECAR_THREAD_SAFETY=ON
make -C build-asan -j"$JOBS" "$@"
