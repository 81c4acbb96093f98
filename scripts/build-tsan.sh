#!/usr/bin/env bash
# The ThreadSanitizer build: clang, -fsanitize=thread, the lock annotations
# checked as in every clang build. Configures and builds build-tsan/ beside
# the normal GCC build/.
#
#   scripts/build-tsan.sh              # everything
#   scripts/build-tsan.sh sidecarctl   # only the named make targets
#
# ThreadSanitizer sees only synchronization compiled with it, and Debian's
# libabsl was not: every absl::Mutex would be invisible and every access it
# guards reported as a race. So this script first builds Abseil's
# synchronization library and what it links (about 20 shared libraries, under
# a minute) from Debian's own source package of the installed version, with
# -fsanitize=thread, into build-tsan/absl-tsan/lib. The random pool too: it
# inlines SpinLock::Lock, and uninstrumented it would call the instrumented
# SpinLock::SlowLock, when the lock is contended, without the annotations
# that precede it, and ThreadSanitizer aborts ("CHECK failed: ...
# ignore_sync > 0"). Not all of Abseil: absl::Status instrumented, which
# uninstrumented gRPC hands between threads, draws false reports. They keep Debian's
# sonames; scripts/test-sanitized.sh tsan puts that directory first on
# LD_LIBRARY_PATH, so the tests, the services they start and gRPC all lock
# through the instrumented Mutex. gRPC itself stays uninstrumented
# (tests/sanitizers/tsan.supp says what that costs); the order libgrpc keeps
# between starting an operation and running its completion is marked by a
# small preloaded library (tests/sanitizers/tsan_grpc_order.c), built here
# into build-tsan/libtsan_grpc_order.so.
#
# -O1 with line tables only, as build-asan.sh. JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# clang-14 and its runtimes; dpkg-dev unpacks the source package.
scripts/install-deps.sh clang-14 libclang-rt-14-dev llvm-14 dpkg-dev

JOBS="${JOBS:-$(nproc)}"
OUT="$PWD/build-tsan"
ABSL_LIB="$OUT/absl-tsan/lib"
mkdir -p "$OUT"

# Adds deb-src entries beside the archive's deb entries, once.
enable_deb_src() {
  local list=/etc/apt/sources.list.d/sidecar-deb-src.sources
  [[ -e "$list" ]] && return 0
  local SUDO=()
  [[ "$(id -u)" -ne 0 ]] && SUDO=(sudo)
  if [[ -e /etc/apt/sources.list.d/debian.sources ]]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources |
      "${SUDO[@]}" tee "$list" >/dev/null
  else
    grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' |
      "${SUDO[@]}" tee "${list%.sources}.list" >/dev/null
    "${SUDO[@]}" touch "$list"
  fi
  "${SUDO[@]}" apt-get update -q
}

build_absl() {
  local version
  version="$(dpkg-query -W -f='${Version}' libabsl-dev)"
  # "+pool": with the random pool (an older build-tsan/ lacks it).
  if [[ -e "$ABSL_LIB/.version" && "$(cat "$ABSL_LIB/.version")" == "$version +pool" ]]; then
    return 0
  fi
  local src="$OUT/absl-src"
  rm -rf "$src" "$OUT/absl-tsan"
  mkdir -p "$src"
  enable_deb_src
  (cd "$src" && apt-get source -q "abseil=$version" >/dev/null)
  local tree
  tree="$(find "$src" -mindepth 1 -maxdepth 1 -type d -name 'abseil-*' | head -1)"
  # As Debian builds it (C++17, shared), plus ThreadSanitizer.
  CC=clang-14 CXX=clang++-14 cmake -S "$tree" -B "$src/build" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_STANDARD=17 \
    -DBUILD_SHARED_LIBS=ON -DCMAKE_CXX_FLAGS="-fsanitize=thread" \
    -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" >/dev/null
  make -C "$src/build" -j"$JOBS" synchronization random_internal_pool_urbg \
    >/dev/null
  mkdir -p "$ABSL_LIB"
  find "$src/build" -name 'libabsl_*.so*' -exec cp -a {} "$ABSL_LIB/" \;
  echo "$version +pool" >"$ABSL_LIB/.version"
  echo "build-tsan: Abseil $version with ThreadSanitizer in $ABSL_LIB"
}

# The preloaded library that marks how libgrpc orders a call's operations
# (tests/sanitizers/tsan_grpc_order.c); deliberately not instrumented.
build_grpc_order() {
  local src=tests/sanitizers/tsan_grpc_order.c lib="$OUT/libtsan_grpc_order.so"
  [[ -e "$lib" && "$lib" -nt "$src" ]] && return 0
  clang-14 -shared -fPIC -O2 -Wall -Werror -o "$lib" "$src" -ldl
}

build_absl
build_grpc_order
CC=clang-14 CXX=clang++-14 cmake -S . -B build-tsan \
  -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS_DEBUG="-gline-tables-only" \
  -DCMAKE_CXX_FLAGS="-O1" \
  -DSIDECAR_SANITIZE=thread \
  -DSIDECAR_THREAD_SAFETY=ON
make -C build-tsan -j"$JOBS" "$@"
