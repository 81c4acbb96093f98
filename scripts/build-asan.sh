#!/usr/bin/env bash
# The checking build: clang, with AddressSanitizer + UndefinedBehaviorSanitizer
# and the lock annotations checked (-Wthread-safety as errors, the top
# CMakeLists.txt's SIDECAR_THREAD_SAFETY option, on for any clang build).
# Configures and builds build-asan/ beside the normal GCC build/.
#
#   scripts/build-asan.sh              # everything
#   scripts/build-asan.sh sidecarctl   # only the named make targets
#
# -O1 -g (CMake's Debug type plus -O1): asserts on, usable stacks, tests not
# much slower than -O2. JOBS (default: nproc) may be set in the environment.
# scripts/test-asan.sh builds with this script and runs the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# clang-14, its sanitizer runtimes, and llvm-symbolizer for readable stacks.
scripts/install-deps.sh clang-14 libclang-rt-14-dev llvm-14

JOBS="${JOBS:-$(nproc)}"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
SAN="$SAN -fno-omit-frame-pointer"

CC=clang-14 CXX=clang++-14 cmake -S . -B build-asan \
  -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS="-O1 $SAN" \
  -DCMAKE_EXE_LINKER_FLAGS="$SAN" \
  -DCMAKE_SHARED_LINKER_FLAGS="$SAN" \
  -DSIDECAR_THREAD_SAFETY=ON
make -C build-asan -j"$JOBS" "$@"
