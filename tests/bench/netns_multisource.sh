#!/usr/bin/env bash
# Multi-source fetch over shaped links: three holders, each in its own
# network namespace behind a veth link shaped with tbf on the holder side
# (egress toward the fetcher), and the fetching device B in the root
# namespace. Every device runs availability + transfer; one private
# PostgreSQL serves them all over its unix socket (unix sockets are file
# system objects, so processes in any network namespace reach them and no
# database traffic crosses the shaped links).
#
#   h40  10.77.1.2  tbf 40mbit  --veth--  10.77.1.1  \
#   h100 10.77.2.2  tbf 100mbit --veth--  10.77.2.1   > root namespace: B
#   h10  10.77.3.2  tbf 10mbit  --veth--  10.77.3.1  /
#
# Measures (RUNS times) B's fetch of a SIZE_MB proxy sidecar held by all
# three, against the ideal at the summed rate (SIZE_MB*8/150 Mbit/s), with
# the bytes each holder sent (tbf counters); then a thumbnail held by all
# three, once before and once after the large fetches measured the links
# (the availability service ranks sources by RTT + size / measured
# throughput; until a source is measured it assumes 50 ms and 50 MB/s).
# With iperf3 installed, also what one TCP stream gets through each link.
#
#   sudo tests/bench/netns_multisource.sh [BUILD_DIR]     (default: build)
#   SIZE_MB=200 RUNS=3 TBF_BURST=32kbit tests/bench/netns_multisource.sh
#
# Needs root, iproute2 (ip, tc with tbf), postgresql-15, and built
# sidecar-availability, sidecar-transfer, sidecarctl and transfer_bench.
# Namespaces, links, processes and PostgreSQL are removed on exit, also on
# failure or Ctrl-C; logs stay in $WORK (printed) unless KEEP=0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO="$(pwd)"
BUILD="$(realpath "${1:-$REPO/build}")"
SIZE_MB="${SIZE_MB:-200}"
RUNS="${RUNS:-3}"
source tests/bench/netns_lib.sh
NAMES=(h40 h100 h10)
RATES=(40mbit 100mbit 10mbit)
SUM_MBIT=150
netns_init netns-multisource

# ---- namespaces and shaped links -------------------------------------------

say "namespaces and links"
for i in 1 2 3; do
  netns_link "$i" "${NAMES[$((i - 1))]}" "${RATES[$((i - 1))]}"
done

# ---- PostgreSQL (unix socket only) and devices ------------------------------

netns_pg b h40 h100 h10
B_IP=10.77.1.1
for i in 1 2 3; do
  start_device "${NAMES[$((i - 1))]}" "$PREFIX-${NAMES[$((i - 1))]}" "10.77.$i.2" "$B_IP:7100"
done
start_device b - "$B_IP" "10.77.1.2:7100,10.77.2.2:7100,10.77.3.2:7100"
wait_devices "${NAMES[@]}" b
pair_devices h40 b
pair_devices b h100
pair_devices b h10
say "devices up: B at $B_IP (root namespace), holders h40 h100 h10"

# ---- link baseline (one TCP stream per link, holder -> B) ---------------------

if command -v iperf3 >/dev/null; then
  say "link baseline: iperf3, one TCP stream from each holder to B, 4 s"
  for i in 1 2 3; do
    iperf3 -s -1 -B "10.77.$i.1" -p 5201 >/dev/null 2>&1 &
    sp=$!
    sleep 0.3
    mbit=$(ip netns exec "$PREFIX-${NAMES[$((i - 1))]}" iperf3 -c "10.77.$i.1" -p 5201 -t 4 -J 2>/dev/null |
      python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))' || echo "?")
    wait "$sp" 2>/dev/null || true
    echo "   ${NAMES[$((i - 1))]} (${RATES[$((i - 1))]}): $mbit Mbit/s"
  done
else
  say "(no iperf3: link baseline skipped; apt-get install iperf3)"
fi

# ---- publish -------------------------------------------------------------------

publish() {  # publish URI SRCFILE RELPATH: on all three holders
  local uri="$1" src="$2" rel="$3"
  for i in 1 2 3; do
    local name="${NAMES[$((i - 1))]}"
    mkdir -p "$(dirname "$WORK/$name/root/$rel")"
    cp "$src" "$WORK/$name/root/$rel"
    ctl_on "$name" --timeout=60s register "$uri" \
      --file="$WORK/$name/root/$rel" --status=ready >/dev/null
  done
}
head -c $((SIZE_MB * 1000 * 1000)) /dev/urandom >"$WORK/proxy.src"
head -c 45000 /dev/urandom >"$WORK/thumb.src"
declare -a BIG=() THUMB=()
for r in $(seq 0 "$RUNS"); do
  u="$(uuid)"
  BIG+=("sidecar://$u/proxies/proxy_edit.mp4")
  publish "${BIG[-1]}" "$WORK/proxy.src" "$(rel_of "$u" proxies proxy_edit.mp4)"
done
for r in 0 1; do
  u="$(uuid)"
  THUMB+=("sidecar://$u/thumbs/grid@2x.webp")
  publish "${THUMB[-1]}" "$WORK/thumb.src" "$(rel_of "$u" thumbs grid@2x.webp)"
done
say "published $((RUNS + 1)) proxies of $SIZE_MB MB and 2 thumbnails on all three holders"

fetch() {  # fetch URI: through B, waiting until B knows all three holders
  "$BENCH" --mode=fetch --transfer="$(local_api b transfer)" \
    --availability="$(local_api b availability)" \
    --wait_sources=3 "$@"
}
sent_bytes() { netns_sent_bytes "$1" "${NAMES[$(($1 - 1))]}"; }

# ---- thumbnail before any measurement ------------------------------------------

say "thumbnail fetch, cold (no source measured yet)"
fetch "${THUMB[0]}" | tee "$WORK/thumb-cold.out"

# ---- large fetches ---------------------------------------------------------------

IDEAL=$(python3 -c "print('%.2f' % ($SIZE_MB*1e6*8/($SUM_MBIT*1e6)))")
declare -a SECS=()
for r in $(seq 0 "$RUNS"); do
  label="run $r"
  [[ $r -eq 0 ]] && label="warm-up (measures the links for ranking; not counted)"
  declare -a before=()
  for i in 1 2 3; do before[$i]=$(sent_bytes $i); done
  out="$(fetch "${BIG[$r]}")"
  echo "$out" >"$WORK/big-$r.out"
  secs=$(echo "$out" | awk '/^fetched/ {for (i=1;i<=NF;i++) if ($i=="in") {print $(i+1); exit}}')
  state=$(echo "$out" | awk '/^fetched/ {print $4}')
  [[ "$state" == JOB_STATE_DONE ]] || { echo "$out"; die "large fetch failed"; }
  split=""
  for i in 1 2 3; do
    after=$(sent_bytes $i)
    split+="$(printf ' %s %.1f MB' "${NAMES[$((i - 1))]}" "$(python3 -c "print((${after}-${before[$i]})/1e6)")")"
  done
  pct=$(python3 -c "print('%.0f' % (100*$IDEAL/$secs))")
  rate=$(python3 -c "print('%.1f' % ($SIZE_MB*8/$secs))")
  echo "   $label: ${secs} s = $rate Mbit/s = ${pct}% of the summed $SUM_MBIT Mbit/s (ideal $IDEAL s); sent:$split"
  [[ $r -gt 0 ]] && SECS+=("$secs")
done
MED=$(printf '%s\n' "${SECS[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
say "large: median $MED s over $RUNS runs; ideal $IDEAL s; $(python3 -c "print('%.0f' % (100*$IDEAL/$MED))")% of the summed rate"

# ---- thumbnail after the links were measured --------------------------------------

say "thumbnail fetch, after the large fetches measured the links"
fetch "${THUMB[1]}" | tee "$WORK/thumb-warm.out"
