#!/usr/bin/env bash
# Installs missing dependencies, configures CMake in build/ and builds.
#
#   scripts/build.sh              # everything
#   scripts/build.sh sidecarctl   # only the named make targets
#
# BUILD_TYPE (default RelWithDebInfo) and JOBS (default: nproc) may be set in
# the environment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh

BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}"
JOBS="${JOBS:-$(nproc)}"

cmake -S . -B build -DCMAKE_BUILD_TYPE="$BUILD_TYPE"
make -C build -j"$JOBS" "$@"
