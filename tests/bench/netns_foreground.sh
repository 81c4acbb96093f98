#!/usr/bin/env bash
# Foreground first, over one shaped link: holder h in its own network
# namespace behind a veth link shaped with tbf to RATE (default 20mbit)
# toward the fetching device B in the root namespace; both run availability
# + transfer with one private PostgreSQL on a unix socket (netns_lib.sh).
#
# h holds SAMPLES*4+1 thumbnails fetched interactively one at a time,
# THUMBS thumbnails for prefetch and one SIZE_MB proxy. transfer_bench
# --mode=foreground times the interactive fetches (Fetch to DONE) with the
# link idle, then while B fetches the proxy at normal priority, idle again,
# then while B prefetches the THUMBS thumbnails, and prints each loaded
# median against the idle one measured just before it, with what the load
# moved meanwhile.
#
#   sudo tests/bench/netns_foreground.sh [BUILD_DIR]     (default: build)
#   RATE=20mbit SIZE_MB=300 THUMBS=3000 SAMPLES=7 tests/bench/netns_foreground.sh
#
# Needs root, iproute2, postgresql-15 and built sidecar-availability,
# sidecar-transfer, sidecarctl and transfer_bench. Exits 77 (skipped) when
# not root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO="$(pwd)"
BUILD="$(realpath "${1:-$REPO/build}")"
RATE="${RATE:-20mbit}"
SIZE_MB="${SIZE_MB:-300}"
THUMBS="${THUMBS:-3000}"
SAMPLES="${SAMPLES:-7}"
if [[ "$(id -u)" -ne 0 ]]; then
  echo "netns_foreground: needs root (network namespaces); skipped" >&2
  exit 77
fi
source tests/bench/netns_lib.sh
netns_init netns-foreground

say "namespace and link"
netns_link 1 h "$RATE"
netns_pg b h
B_IP=10.77.1.1
start_device h "$PREFIX-h" 10.77.1.2 "$B_IP:7100"
start_device b - "$B_IP" 10.77.1.2:7100
wait_devices h b
pair_devices h b
say "devices up: B at $B_IP (root namespace), holder h at 10.77.1.2 behind $RATE"

# ---- publish on h ------------------------------------------------------------

head -c $((SIZE_MB * 1000 * 1000)) /dev/urandom >"$WORK/proxy.src"
head -c 45000 /dev/urandom >"$WORK/thumb.src"
THUMB_SHA="$(sha256sum "$WORK/thumb.src" | cut -d' ' -f1)"
: >"$WORK/batch" && : >"$WORK/interactive" && : >"$WORK/prefetch"
add_thumb() {  # add_thumb LIST: a thumbnail on h, its URI appended to LIST
  local u
  u="$(uuid)"
  local rel
  rel="$(rel_of "$u" thumbs grid@2x.webp)"
  mkdir -p "$(dirname "$WORK/h/root/$rel")"
  ln "$WORK/thumb.src" "$WORK/h/root/$rel"
  echo "sidecar://$u/thumbs/grid@2x.webp" >>"$1"
  echo "sidecar://$u/thumbs/grid@2x.webp 45000 $THUMB_SHA" >>"$WORK/batch"
}
for _ in $(seq $((SAMPLES * 4 + 1))); do add_thumb "$WORK/interactive"; done
for _ in $(seq "$THUMBS"); do add_thumb "$WORK/prefetch"; done
ctl_on h --timeout=120s register \
  --batch="$WORK/batch" --status=ready >/dev/null
u="$(uuid)"
PROXY="sidecar://$u/proxies/proxy_edit.mp4"
rel="$(rel_of "$u" proxies proxy_edit.mp4)"
mkdir -p "$(dirname "$WORK/h/root/$rel")"
mv "$WORK/proxy.src" "$WORK/h/root/$rel"
ctl_on h --timeout=120s register "$PROXY" \
  --file="$WORK/h/root/$rel" --status=ready >/dev/null
say "published on h: $((SAMPLES * 4 + 1)) + $THUMBS thumbnails of 45,000 B, one proxy of $SIZE_MB MB"

say "interactive thumbnail fetches, idle and loaded ($SAMPLES each)"
"$BENCH" --mode=foreground --transfer="$(local_api b transfer)" \
  --availability="$(local_api b availability)" \
  --interactive_file="$WORK/interactive" --prefetch_file="$WORK/prefetch" \
  --proxy="$PROXY" --samples="$SAMPLES" --rx_interface="${PREFIX:0:8}r1" |
  tee "$WORK/foreground.out"
