# Shared by the namespace benchmarks (netns_multisource.sh,
# netns_foreground.sh): shaped links to holders in their own network
# namespaces, a private PostgreSQL on a unix socket, devices (availability +
# transfer) and cleanup on exit. Source it after setting BUILD and, if the
# defaults do not fit, TBF_BURST, TBF_LATENCY and KEEP; then call
# netns_init NAME.
#
# Holder i lives in namespace "$PREFIX-NAME" at 10.77.i.2, behind a veth link
# whose holder side (egress toward the fetching device) is shaped with tbf;
# the fetching device B is in the root namespace at 10.77.i.1 on each link.
# Unix sockets are file system objects, so processes in any namespace reach
# PostgreSQL and no database traffic crosses the shaped links.

TBF_BURST="${TBF_BURST:-32kbit}"
TBF_LATENCY="${TBF_LATENCY:-50ms}"
KEEP="${KEEP:-1}"
PG_BIN=/usr/lib/postgresql/15/bin
AVAIL="$BUILD/services/availability/sidecar-availability"
XFER="$BUILD/services/transfer/sidecar-transfer"
CTL="$BUILD/services/sidecarctl/sidecarctl"
BENCH="$BUILD/tests/bench/transfer_bench"
PREFIX="scbench$$"           # namespace names, unique per run
declare -a PIDS=() NSS=()
PG_STARTED=0
NETNS_NAME=netns

die() { echo "$NETNS_NAME: $*" >&2; exit 1; }
say() { echo "== $*"; }

# netns_init NAME: checks what the run needs, makes $WORK and cleans up on
# exit (also on failure or Ctrl-C).
netns_init() {
  NETNS_NAME="$1"
  [[ "$(id -u)" -eq 0 ]] || die "must run as root (network namespaces)"
  for b in "$AVAIL" "$XFER" "$CTL" "$BENCH"; do
    [[ -x "$b" ]] || die "missing $b (make sidecar-availability sidecar-transfer sidecarctl transfer_bench)"
  done
  command -v tc >/dev/null || die "tc missing (apt-get install iproute2)"
  [[ -x "$PG_BIN/initdb" ]] || die "PostgreSQL 15 missing (apt-get install postgresql-15)"
  WORK="$(mktemp -d "/tmp/$NETNS_NAME.XXXXXX")"
  chmod 755 "$WORK"
  trap netns_cleanup EXIT
  trap 'exit 130' INT TERM
}

netns_cleanup() {
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
  for i in 1 2 3 4 5 6 7 8; do ip link del "${PREFIX:0:8}r$i" 2>/dev/null; done
  if [[ $rc -ne 0 ]]; then
    echo "$NETNS_NAME: failed (exit $rc); logs in $WORK" >&2
  elif [[ "$KEEP" == 0 ]]; then
    rm -rf "$WORK"
  else
    echo "logs in $WORK"
  fi
  exit $rc
}

# netns_link I NAME RATE: namespace "$PREFIX-NAME" for holder I (10.77.I.2),
# its link to the root namespace (10.77.I.1) shaped to RATE toward B.
netns_link() {
  local i="$1" name="$2" rate="$3"
  local ns="$PREFIX-$name"
  local root_if="${PREFIX:0:8}r$i" ns_if="${PREFIX:0:8}h$i"  # <= 15 chars
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
    rate "$rate" burst "$TBF_BURST" latency "$TBF_LATENCY"
  echo "   $name: 10.77.$i.2, $(ip netns exec "$ns" tc qdisc show dev "$ns_if" | head -1)"
}

# netns_sent_bytes I NAME: bytes holder I (NAME) has sent through its tbf.
netns_sent_bytes() {
  ip netns exec "$PREFIX-$2" tc -s qdisc show dev "${PREFIX:0:8}h$1" |
    awk '/Sent/ {print $2; exit}'
}

# netns_pg DEVICE...: PostgreSQL on a unix socket in $WORK/pg, with the
# databases avail_DEVICE and xfer_DEVICE for each.
netns_pg() {
  mkdir -p "$WORK/pg"
  chown postgres:postgres "$WORK/pg"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pg/data" --username=postgres \
    --auth=trust --encoding=UTF8 --no-locale >"$WORK/pg/initdb.log" 2>&1 ||
    die "initdb failed; see $WORK/pg/initdb.log"
  PG_STARTED=1
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w -t 60 \
    -o "-k $WORK/pg -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c max_connections=200" \
    start >/dev/null || die "PostgreSQL did not start; see $WORK/pg/server.log"
  for d in "$@"; do
    "$PG_BIN/createdb" -h "$WORK/pg" -U postgres "avail_$d"
    "$PG_BIN/createdb" -h "$WORK/pg" -U postgres "xfer_$d"
  done
  say "PostgreSQL on unix socket $WORK/pg"
}

AFLAGS=(--prompt_delay=50ms --ping_interval=1s --offline_after=20s)
# start_device NAME NETNS(or -) IP PEERS [extra transfer flags...]
start_device() {
  local name="$1" ns="$2" ip="$3" peers="$4"
  shift 4
  local run=()
  [[ "$ns" != - ]] && run=(ip netns exec "$ns")
  mkdir -p "$WORK/$name/root" "$WORK/$name/state"
  "${run[@]}" "$AVAIL" --listen="$ip:7100" --name="$name" \
    --state_dir="$WORK/$name/state" \
    --db="host=$WORK/pg dbname=avail_$name user=postgres" \
    --sidecar_root="$WORK/$name/root" --transfer_address="$ip:7200" \
    --peers="$peers" "${AFLAGS[@]}" >"$WORK/$name/availability.log" 2>&1 &
  PIDS+=($!)
  # The availability service makes the device key the transfer service uses.
  for _ in $(seq 300); do [[ -s "$WORK/$name/state/device.crt" ]] && break; sleep 0.1; done
  "${run[@]}" "$XFER" --listen="$ip:7200" \
    --db="host=$WORK/pg dbname=xfer_$name user=postgres" \
    --sidecar_root="$WORK/$name/root" --state_dir="$WORK/$name/state" \
    --port_file="$WORK/$name/transfer.port" --prefetch_kinds= "$@" >"$WORK/$name/transfer.log" 2>&1 &
  PIDS+=($!)
}

# wait_devices NAME...: until each device's transfer service is up.
wait_devices() {
  for name in "$@"; do
    for _ in $(seq 300); do [[ -s "$WORK/$name/transfer.port" ]] && break; sleep 0.1; done
    [[ -s "$WORK/$name/transfer.port" ]] || die "transfer service of $name did not start; see $WORK/$name"
  done
}

# ctl_on NAME ARGS...: sidecarctl on device NAME's local API (unix sockets in
# its state directory, reachable from any namespace).
ctl_on() {
  local name="$1"
  shift
  SIDECAR_STATE_DIR="$WORK/$name/state" "$CTL" "$@"
}

# local_api NAME SERVICE: the local API address of NAME's SERVICE
# (availability or transfer).
local_api() { echo "unix:$WORK/$1/state/$2.sock"; }

# pair_devices INVITER JOINER: JOINER joins INVITER's library, as a person
# would, with a code from `pair invite` on the inviter.
pair_devices() {
  local code addr
  read -r code addr < <(ctl_on "$1" pair invite |
    sed -nE 's/^  sidecarctl pair join ([0-9A-Z-]+) ([^ ]+)$/\1 \2/p')
  [[ -n "${code:-}" && -n "${addr:-}" ]] || die "pair invite on $1 printed no code"
  ctl_on "$2" pair join "$code" "$addr" >/dev/null || die "$2 could not join $1"
}

uuid() { cat /proc/sys/kernel/random/uuid; }
rel_of() {  # rel_of UUID KINDDIR FILE
  local hex="${1//-/}"
  echo "content/${hex:0:2}/${hex:2:2}/$1/$2/$3"
}
