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
TBF_BURST="${TBF_BURST:-32kbit}"
TBF_LATENCY="${TBF_LATENCY:-50ms}"
KEEP="${KEEP:-1}"
PG_BIN=/usr/lib/postgresql/15/bin
AVAIL="$BUILD/services/availability/sidecar-availability"
XFER="$BUILD/services/transfer/sidecar-transfer"
CTL="$BUILD/services/sidecarctl/sidecarctl"
BENCH="$BUILD/tests/bench/transfer_bench"
PREFIX="scbench$$"           # namespace names, unique per run
NAMES=(h40 h100 h10)
RATES=(40mbit 100mbit 10mbit)
SUM_MBIT=150

die() { echo "netns_multisource: $*" >&2; exit 1; }
say() { echo "== $*"; }

[[ "$(id -u)" -eq 0 ]] || die "must run as root (network namespaces)"
for b in "$AVAIL" "$XFER" "$CTL" "$BENCH"; do
  [[ -x "$b" ]] || die "missing $b (make sidecar-availability sidecar-transfer sidecarctl transfer_bench)"
done
command -v tc >/dev/null || die "tc missing (apt-get install iproute2)"
[[ -x "$PG_BIN/initdb" ]] || die "PostgreSQL 15 missing (apt-get install postgresql-15)"

WORK="$(mktemp -d /tmp/netns-multisource.XXXXXX)"
chmod 755 "$WORK"
declare -a PIDS=() NSS=()
PG_STARTED=0

cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [[ $PG_STARTED -eq 1 ]]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w stop >/dev/null 2>&1
  fi
  for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null; done
  for i in 1 2 3; do ip link del "${PREFIX:0:8}r$i" 2>/dev/null; done
  if [[ $rc -ne 0 ]]; then
    echo "netns_multisource: failed (exit $rc); logs in $WORK" >&2
  elif [[ "$KEEP" == 0 ]]; then
    rm -rf "$WORK"
  else
    echo "logs in $WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- namespaces and shaped links -------------------------------------------

for i in 1 2 3; do
  ns="$PREFIX-${NAMES[$((i - 1))]}"
  root_if="${PREFIX:0:8}r$i"   # interface names: at most 15 characters
  ns_if="${PREFIX:0:8}h$i"
  ip netns add "$ns"
  NSS+=("$ns")
  ip link add "$root_if" type veth peer name "$ns_if"
  ip link set "$ns_if" netns "$ns"
  ip addr add "10.77.$i.1/24" dev "$root_if"
  ip link set "$root_if" up
  ip netns exec "$ns" ip addr add "10.77.$i.2/24" dev "$ns_if"
  ip netns exec "$ns" ip link set "$ns_if" up
  ip netns exec "$ns" ip link set lo up
  # B listens on 10.77.1.1; holders reach it through their own link.
  ip netns exec "$ns" ip route add default via "10.77.$i.1"
  ip netns exec "$ns" tc qdisc add dev "$ns_if" root tbf \
    rate "${RATES[$((i - 1))]}" burst "$TBF_BURST" latency "$TBF_LATENCY"
done
say "namespaces: ${NSS[*]}"
for i in 1 2 3; do
  echo "   ${NAMES[$((i - 1))]}: 10.77.$i.2, $(ip netns exec "${NSS[$((i - 1))]}" tc qdisc show dev "${PREFIX:0:8}h$i" | head -1)"
done

# ---- PostgreSQL (unix socket only) ------------------------------------------

mkdir -p "$WORK/pg"
chown postgres:postgres "$WORK/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pg/data" --username=postgres \
  --auth=trust --encoding=UTF8 --no-locale >"$WORK/pg/initdb.log" 2>&1 ||
  die "initdb failed; see $WORK/pg/initdb.log"
PG_STARTED=1
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w -t 60 \
  -o "-k $WORK/pg -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c max_connections=200" \
  start >/dev/null || die "PostgreSQL did not start; see $WORK/pg/server.log"
for d in b h40 h100 h10; do
  "$PG_BIN/createdb" -h "$WORK/pg" -U postgres "avail_$d"
  "$PG_BIN/createdb" -h "$WORK/pg" -U postgres "xfer_$d"
done
say "PostgreSQL on unix socket $WORK/pg"

# ---- devices -----------------------------------------------------------------

AFLAGS=(--prompt_delay=50ms --ping_interval=1s --offline_after=20s)
# start_device NAME NETNS(or -) IP PEERS [extra transfer flags...]
start_device() {
  local name="$1" ns="$2" ip="$3" peers="$4"
  shift 4
  local run=()
  [[ "$ns" != - ]] && run=(ip netns exec "$ns")
  mkdir -p "$WORK/$name/root"
  "${run[@]}" "$AVAIL" --listen="$ip:7100" --name="$name" \
    --db="host=$WORK/pg dbname=avail_$name user=postgres" \
    --sidecar_root="$WORK/$name/root" --transfer_address="$ip:7200" \
    --peers="$peers" "${AFLAGS[@]}" >"$WORK/$name/availability.log" 2>&1 &
  PIDS+=($!)
  "${run[@]}" "$XFER" --listen="$ip:7200" \
    --db="host=$WORK/pg dbname=xfer_$name user=postgres" \
    --sidecar_root="$WORK/$name/root" --availability="$ip:7100" \
    --port_file="$WORK/$name/transfer.port" --prefetch_kinds= "$@" >"$WORK/$name/transfer.log" 2>&1 &
  PIDS+=($!)
}
B_IP=10.77.1.1
for i in 1 2 3; do
  start_device "${NAMES[$((i - 1))]}" "${NSS[$((i - 1))]}" "10.77.$i.2" "$B_IP:7100"
done
start_device b - "$B_IP" "10.77.1.2:7100,10.77.2.2:7100,10.77.3.2:7100"
for name in "${NAMES[@]}" b; do
  for _ in $(seq 300); do [[ -s "$WORK/$name/transfer.port" ]] && break; sleep 0.1; done
  [[ -s "$WORK/$name/transfer.port" ]] || die "transfer service of $name did not start; see $WORK/$name"
done
say "devices up: B at $B_IP (root namespace), holders h40 h100 h10"

# ---- link baseline (one TCP stream per link, holder -> B) ---------------------

if command -v iperf3 >/dev/null; then
  say "link baseline: iperf3, one TCP stream from each holder to B, 4 s"
  for i in 1 2 3; do
    iperf3 -s -1 -B "10.77.$i.1" -p 5201 >/dev/null 2>&1 &
    sp=$!
    sleep 0.3
    mbit=$(ip netns exec "${NSS[$((i - 1))]}" iperf3 -c "10.77.$i.1" -p 5201 -t 4 -J 2>/dev/null |
      python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))' || echo "?")
    wait "$sp" 2>/dev/null || true
    echo "   ${NAMES[$((i - 1))]} (${RATES[$((i - 1))]}): $mbit Mbit/s"
  done
else
  say "(no iperf3: link baseline skipped; apt-get install iperf3)"
fi

# ---- publish -------------------------------------------------------------------

uuid() { cat /proc/sys/kernel/random/uuid; }
rel_of() {  # rel_of UUID KINDDIR FILE
  local hex="${1//-/}"
  echo "content/${hex:0:2}/${hex:2:2}/$1/$2/$3"
}
publish() {  # publish URI SRCFILE RELPATH: on all three holders
  local uri="$1" src="$2" rel="$3"
  for i in 1 2 3; do
    local name="${NAMES[$((i - 1))]}"
    mkdir -p "$(dirname "$WORK/$name/root/$rel")"
    cp "$src" "$WORK/$name/root/$rel"
    "$CTL" --availability="10.77.$i.2:7100" --timeout=60s register "$uri" \
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
  "$BENCH" --mode=fetch --transfer="$B_IP:7200" --availability="$B_IP:7100" \
    --wait_sources=3 "$@"
}
sent_bytes() {  # bytes sent by holder i through its tbf
  ip netns exec "${NSS[$(($1 - 1))]}" tc -s qdisc show dev "${PREFIX:0:8}h$1" |
    awk '/Sent/ {print $2; exit}'
}

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
