#!/usr/bin/env bash
# Runs the docker-compose cluster test (tests/cluster/cluster_test.sh) on a
# Debian 12 machine, from nothing: as root it
#   1. installs docker.io, docker-compose, debootstrap, webp (cwebp, for
#      the test's thumbnails), curl and jq (the test queries Prometheus's
#      HTTP API) from Debian's archive when missing;
#   2. starts a Docker engine (dockerd --storage-driver=vfs) when none is
#      running, and stops it again at the end;
#   3. makes the base image debian:bookworm-slim locally when it is absent
#      (no registry can be reached): debootstrap --variant=minbase from the
#      archive this machine's apt sources name, then docker import;
#   4. runs the cluster test, which builds the images (one compile), brings
#      the three-device cluster up (mutual TLS between the devices, paired at
#      start by the compose file's one-shot "pairing" service), runs its
#      scenarios and tears it down.
# The images stay in Docker's store as the next run's cache; untagged (stale)
# ones are removed at the end (CLUSTER_PRUNE=0: not). Logs: .cache/cluster-test/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LOGS="$ROOT/.cache/cluster-test"
mkdir -p "$LOGS"
T0=$SECONDS
say() { printf '[cluster-test %4ds] %s\n' $((SECONDS - T0)) "$*"; }
die() {
  say "FAIL: $*" >&2
  exit 1
}

[[ "$(id -u)" -eq 0 ]] || die "run as root: it installs packages and starts dockerd"

# ---- 1. packages -------------------------------------------------------------

missing=()
for pkg in docker.io docker-compose debootstrap webp curl jq; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >"$LOGS/apt.log" 2>&1 || { tail -20 "$LOGS/apt.log"; die "apt-get update failed"; }
  apt-get install -y -q "${missing[@]}" >>"$LOGS/apt.log" 2>&1 ||
    { tail -20 "$LOGS/apt.log"; die "apt-get install failed"; }
fi
# Debian's CLI matches Debian's engine; another docker earlier in PATH may not.
export DOCKER=/usr/bin/docker
[[ -x "$DOCKER" ]] || DOCKER="$(command -v docker)"

# ---- 2. the engine -----------------------------------------------------------

DOCKERD_PID=""
ROOTFS=""
finish() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n "$ROOTFS" ]] && rm -rf "$ROOTFS"
  # Stale layers of earlier builds (untagged images); the tagged images,
  # the build stage's included, stay as the next run's cache.
  if [[ "${CLUSTER_PRUNE:-1}" == 1 ]] && "$DOCKER" info >/dev/null 2>&1; then
    "$DOCKER" image prune -f >/dev/null 2>&1 || true
  fi
  if [[ -n "$DOCKERD_PID" ]]; then
    say "stopping the dockerd this script started (pid $DOCKERD_PID)"
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 1 60); do
      kill -0 "$DOCKERD_PID" 2>/dev/null || break
      sleep 0.5
    done
  fi
  say "done (exit $rc) in $((SECONDS - T0))s"
  exit $rc
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! "$DOCKER" info >/dev/null 2>&1; then
  say "starting dockerd --storage-driver=vfs (log: $LOGS/dockerd.log)"
  dockerd --storage-driver=vfs >"$LOGS/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 120); do
    [[ -S /var/run/docker.sock ]] && "$DOCKER" info >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$LOGS/dockerd.log"; die "dockerd exited"; }
    sleep 0.5
  done
  "$DOCKER" info >/dev/null 2>&1 || { tail -20 "$LOGS/dockerd.log"; die "dockerd did not come up in 60s"; }
fi
say "Docker engine $("$DOCKER" version -f '{{.Server.Version}}'), storage driver $("$DOCKER" info -f '{{.Driver}}')"

# ---- 3. the base image -------------------------------------------------------

# The archive this machine installs Debian bookworm from, as its apt sources
# say (deb822 .sources files or one-line sources.list entries).
debian_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    awk '
      /^[[:space:]]*$/ { if (uri != "" && suite) { print uri; done = 1; exit }
                         uri = ""; suite = 0; next }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") suite = 1 }
      END { if (!done && uri != "" && suite) print uri }
    ' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                       if ($(i + 1) == "bookworm") print $i }'
}

if ! "$DOCKER" image inspect debian:bookworm-slim >/dev/null 2>&1; then
  mirror="$(debian_mirror | head -n 1 || true)"
  [[ -n "$mirror" ]] || die "no bookworm archive in this machine's apt sources"
  ROOTFS="$(mktemp -d /tmp/bookworm-rootfs.XXXXXX)"
  chmod 755 "$ROOTFS"  # it becomes the image's "/": mktemp made it 0700
  say "making debian:bookworm-slim: debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$ROOTFS" "$mirror" >"$LOGS/debootstrap.log" 2>&1 ||
    { tail -20 "$LOGS/debootstrap.log"; die "debootstrap failed"; }
  # Point the image's apt at the same archive (debootstrap already did) and
  # keep its caches out.
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
  tar -C "$ROOTFS" -c . | "$DOCKER" import - debian:bookworm-slim >/dev/null
  rm -rf "$ROOTFS"
  ROOTFS=""
  say "imported debian:bookworm-slim"
fi

# ---- 4. the cluster test -----------------------------------------------------

say "running tests/cluster/cluster_test.sh"
tests/cluster/cluster_test.sh
