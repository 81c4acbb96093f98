#!/usr/bin/env bash
# Installs what building, testing and the demo need, from Debian 12's archive.
# Idempotent: installs only packages that are missing, and runs
# "apt-get update" only when something has to be installed. Needs root
# (or sudo) only when something is missing.
#
#   scripts/install-deps.sh                 # the packages below
#   scripts/install-deps.sh clang-14 ...    # and these too (build-asan.sh)
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev grpc-proto
  libpq-dev postgresql-15
  libssl-dev libisal-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-format iproute2
  "$@"
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  # dpkg -s succeeds for removed-but-configured packages too; check the state.
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null; then
    SUDO=(sudo)
  else
    echo "install-deps: missing packages: ${missing[*]}" >&2
    echo "install-deps: run this script as root to install them" >&2
    exit 1
  fi
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q "${missing[@]}"
echo "install-deps: done"
