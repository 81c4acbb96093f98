#!/usr/bin/env bash
# sidecarctl against real services: a private PostgreSQL and two devices,
# "alpha" and "beta", each with its own state directory (device key,
# local API sockets) and an availability and a transfer service (own
# databases), all on port 0. beta is paired with alpha as a person would:
# `sidecarctl pair invite` on alpha, `sidecarctl pair join CODE ADDRESS` on
# beta. Checks the device key (a copy works, a missing or world-readable one
# stops a service with a message), pairing and `devices`, register, who-has
# (across gossip), resolve, ls, missing, the transfer commands (fetch to
# beta of alpha's sidecar with identical bytes, fetch of an unknown
# sidecar: GENERATE and exit 3, jobs, cancel of an unknown job: exit 1), the
# exit status and message of a malformed URI (2) and of unreachable services
# (1); then a third device, "gamma": `pair join` with a mistyped code and
# with a used one (refused, exit 1), paired through beta and so accepted by
# alpha (beta introduced it), then `unpair gamma` on alpha: removed on
# alpha and beta, no longer a peer. `status` on beta (device, members, what
# is missing, jobs by state, store, prefetch; colour on a terminal only, not
# with NO_COLOR; paused prefetch when metered), `--json` of status, device,
# who-has, jobs, fetch, ls, peers, devices, resolve, store, prefetch and
# missing (one JSON document holding the answer), and at the end
# `status` on alpha with its transfer service stopped (exit 1, transfer
# named unreachable, availability's part still shown).
#
#   sidecarctl_test.sh AVAILABILITY_BIN SIDECARCTL_BIN TRANSFER_BIN
#
# CTest passes the three paths. PG_BIN (default /usr/lib/postgresql/15/bin) names
# PostgreSQL's server binaries. As root, PostgreSQL runs as user postgres.
# Everything started is stopped on exit; on failure the logs are printed.
set -euo pipefail

if [[ $# -ne 3 ]]; then
  echo "usage: $0 AVAILABILITY_BIN SIDECARCTL_BIN TRANSFER_BIN" >&2
  exit 2
fi
AVAILABILITY_BIN="$1"
CTL_BIN="$2"
TRANSFER_BIN="$3"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
for bin in "$AVAILABILITY_BIN" "$CTL_BIN" "$TRANSFER_BIN" "$PG_BIN/initdb" \
  "$PG_BIN/pg_ctl"; do
  [[ -x "$bin" ]] || { echo "FAIL: missing executable $bin" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sidecarctl-test.XXXXXX")"
PG_DIR="$WORK/pg"
PG_STARTED=0
declare -A PID=()  # "alpha", "alpha_xfer", ... -> service pid

as_pg_owner() {
  if [[ "$(id -u)" -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

dump_logs() {
  local f
  for f in "$WORK"/*.log "$PG_DIR"/server.log; do
    [[ -f "$f" ]] || continue
    echo "---- $f (last 40 lines)"
    tail -n 40 "$f"
  done
}

cleanup() {
  local rc=$?
  set +e
  local name
  for name in "${!PID[@]}"; do kill -TERM "${PID[$name]}" 2>/dev/null; done
  for name in "${!PID[@]}"; do wait "${PID[$name]}" 2>/dev/null; done
  if [[ "$PG_STARTED" -eq 1 ]]; then
    as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1
  fi
  if [[ $rc -ne 0 ]]; then
    dump_logs
    echo "sidecarctl_test: FAILED (exit $rc)"
  else
    echo "sidecarctl_test: all checks passed"
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
pass() { echo "ok: $*"; }

# free_port: prints a TCP port on 127.0.0.1 that nothing listens on now (the
# address of a service that is not there).
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  fail "found no free TCP port"
}

# ---- PostgreSQL ----------------------------------------------------------

mkdir -p "$PG_DIR"
if [[ "$(id -u)" -eq 0 ]]; then
  chmod 755 "$WORK"
  chown postgres:postgres "$PG_DIR"
fi
as_pg_owner "$PG_BIN/initdb" -D "$PG_DIR/data" --username=postgres \
  --auth=trust --encoding=UTF8 --no-locale --no-sync >"$WORK/initdb.log" 2>&1 ||
  fail "initdb failed"
# A unix socket in $PG_DIR only, no TCP port: no other test can be in its way.
PG_STARTED=1
as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" \
  -w -t 60 -o "-k $PG_DIR -c listen_addresses='' \
-c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >"$WORK/pg_ctl.log" 2>&1 || fail "PostgreSQL did not start"
for db in alpha beta gamma alpha_xfer beta_xfer; do
  "$PG_BIN/createdb" -h "$PG_DIR" -U postgres "$db" || fail "createdb $db"
done
PG="host=$PG_DIR user=postgres"  # libpq connection string, without dbname
pass "PostgreSQL on a unix socket in ${PG_DIR#"$WORK"/}"

# ---- devices: availability and transfer services ----------------------------

declare -A STATE=()  # device -> its state directory (key, local API sockets)
declare -A PEER=()   # device -> host:port of its availability peer listener
declare -A XFER=()   # device -> host:port of its transfer peer listener
# wait_port NAME: waits for the port file of service NAME ("alpha",
# "alpha_xfer", ...) and sets PORT to the port it names.
wait_port() {
  local name="$1"
  for _ in $(seq 1 150); do
    [[ -s "$WORK/$name.port" ]] && break
    kill -0 "${PID[$name]}" 2>/dev/null || fail "$name exited at start"
    sleep 0.1
  done
  [[ -s "$WORK/$name.port" ]] || fail "$name did not start in 15s"
  PORT="$(cat "$WORK/$name.port")"
}
# start_availability NAME [FLAGS...]: starts NAME's availability service with
# its own state directory (where it makes the device key on this first
# start) and database, its peer listener on a port the kernel picks.
start_availability() {
  local name="$1"
  shift
  mkdir -p "$WORK/$name/sidecars"
  STATE[$name]="$WORK/$name/state"
  "$AVAILABILITY_BIN" \
    --state_dir="${STATE[$name]}" \
    --listen=127.0.0.1:0 \
    --db="$PG dbname=$name" \
    --name="$name" \
    --sidecar_root="$WORK/$name/sidecars" \
    --port_file="$WORK/$name.port" \
    --prompt_delay=100ms \
    --ping_interval=500ms \
    "$@" >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  wait_port "$name"
  PEER[$name]="127.0.0.1:$PORT"
}
# start_transfer NAME: starts NAME's transfer service with the same state
# directory (it reaches the availability service at its socket there and
# tells it its own address) and sidecar root, and a database of its own.
start_transfer() {
  local name="$1"
  "$TRANSFER_BIN" \
    --state_dir="${STATE[$name]}" \
    --listen=127.0.0.1:0 \
    --db="$PG dbname=${name}_xfer" \
    --sidecar_root="$WORK/$name/sidecars" \
    --retry_initial_backoff=100ms \
    --max_attempts=3 \
    --min_free_bytes=0 \
    --prefetch_kinds= \
    --members_interval=200ms \
    --port_file="$WORK/${name}_xfer.port" \
    >"$WORK/${name}_xfer.log" 2>&1 &
  PID[${name}_xfer]=$!
  wait_port "${name}_xfer"
  XFER[$name]="127.0.0.1:$PORT"
}
start_device() {
  start_availability "$@"
  start_transfer "$1"
  pass "$1 serves peers on ${PEER[$1]}, its transfer service on ${XFER[$1]}; state in ${STATE[$1]#"$WORK"/}"
}

# ctl DEVICE ARGS...: runs sidecarctl against DEVICE (its services' sockets
# in its state directory); stdout to $WORK/out, stderr to $WORK/err; returns
# its exit status.
ctl() {
  local device="$1"
  shift
  local rc=0
  "$CTL_BIN" --state_dir="${STATE[$device]}" --timeout=5s "$@" \
    >"$WORK/out" 2>"$WORK/err" || rc=$?
  return "$rc"
}
show() { sed 's/^/    /' "$WORK/out" "$WORK/err"; }
# json_ok CONDITION...: $WORK/out is one line holding one JSON document,
# which python3 parses, and each CONDITION (a Python expression over it,
# named d) is true; else prints the first that is not and fails.
json_ok() {
  [[ "$(wc -l <"$WORK/out")" == 1 ]] || { echo "not one line of JSON" >&2; return 1; }
  python3 -c 'import json,sys; json.load(sys.stdin)' <"$WORK/out" ||
    { echo "not JSON" >&2; return 1; }
  python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
for condition in sys.argv[2:]:
    if not eval(condition, {"d": d}):
        sys.exit("JSON check failed: " + condition)
' "$WORK/out" "$@"
}
# eventually SECONDS DESCRIPTION COMMAND...: retries COMMAND every 0.1 s until
# it succeeds, else fails after SECONDS with DESCRIPTION.
eventually() {
  local limit="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      show
      fail "$what within ${limit}s"
    fi
    sleep 0.1
  done
}

start_device alpha

# ---- the device key --------------------------------------------------------

KEY="${STATE[alpha]}/device.key"
CRT="${STATE[alpha]}/device.crt"
[[ -f "$KEY" && -f "$CRT" ]] || fail "alpha made no device.key and device.crt in its state dir"
[[ "$(stat -c %a "$KEY")" == 600 ]] || fail "device.key has mode $(stat -c %a "$KEY"), not 600"
grep -q "key fingerprint " "$WORK/alpha.log" || fail "alpha does not log its key fingerprint"
pass "alpha made its device key (device.key mode 600, device.crt)"

rc=0
"$TRANSFER_BIN" --state_dir="$WORK/nokey" --listen=127.0.0.1:0 \
  --db="$PG dbname=alpha_xfer" \
  --sidecar_root="$WORK/nokey/sidecars" >"$WORK/nokey.log" 2>&1 || rc=$?
[[ $rc == 1 ]] || { cat "$WORK/nokey.log"; fail "the transfer service without a key exited $rc, not 1"; }
grep -q "no device key in $WORK/nokey" "$WORK/nokey.log" ||
  { cat "$WORK/nokey.log"; fail "the transfer service without a key does not say so"; }
pass "transfer service without a device key: exit 1, $(grep -o 'no device key in [^:]*' "$WORK/nokey.log")"

# A copy of the key (a backup restored) is the same device; one that others
# may read is refused.
mkdir -m 700 "$WORK/copy" "$WORK/exposed"
cp -p "$KEY" "$CRT" "$WORK/copy/"
cp -p "$KEY" "$CRT" "$WORK/exposed/"
chmod 644 "$WORK/exposed/device.key"
rc=0
"$AVAILABILITY_BIN" --state_dir="$WORK/exposed" --listen=127.0.0.1:0 \
  --db="$PG dbname=alpha" \
  --sidecar_root="$WORK/exposed/sidecars" >"$WORK/exposed.log" 2>&1 || rc=$?
[[ $rc == 1 ]] || { cat "$WORK/exposed.log"; fail "a world-readable key exited $rc, not 1"; }
grep -q "cannot use the device key: .*mode 0644" "$WORK/exposed.log" ||
  { cat "$WORK/exposed.log"; fail "a world-readable key is not reported as such"; }
pass "world-readable device.key: exit 1, cannot use the device key (mode 0644)"

# ---- a signal during start-up is not held up by the database wait --------

# Each service waits up to --db_connect_timeout for PostgreSQL; SIGTERM in
# that time ends it at once, with status 0. (Both use the copy of alpha's
# key: the transfer service needs one before it opens its database.)
DEAD_DB="host=127.0.0.1 port=$(free_port) dbname=x user=postgres connect_timeout=1"
for svc in availability transfer; do
  if [[ $svc == availability ]]; then bin="$AVAILABILITY_BIN"; else bin="$TRANSFER_BIN"; fi
  "$bin" --state_dir="$WORK/copy" --listen=127.0.0.1:0 --db="$DEAD_DB" \
    --db_connect_timeout=60s --sidecar_root="$WORK/startup/sidecars" \
    >"$WORK/startup-$svc.log" 2>&1 &
  spid=$!
  sleep 1
  kill -0 "$spid" 2>/dev/null || { cat "$WORK/startup-$svc.log"; fail "$svc exited before the signal"; }
  start=$SECONDS
  kill -TERM "$spid"
  rc=0
  for _ in $(seq 1 50); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$spid" 2>/dev/null; then
    kill -KILL "$spid"
    fail "$svc still waiting for its database 5 s after SIGTERM"
  fi
  wait "$spid" || rc=$?
  [[ $rc == 0 ]] || { cat "$WORK/startup-$svc.log"; fail "$svc exited $rc after SIGTERM during start-up"; }
  grep -q "during start-up: exiting" "$WORK/startup-$svc.log" ||
    { cat "$WORK/startup-$svc.log"; fail "$svc did not say why it exited"; }
  pass "$svc: SIGTERM while waiting for PostgreSQL ends it in $((SECONDS - start)) s, status 0"
done

start_device beta

# ---- pairing: invite on alpha, join on beta --------------------------------

ctl alpha pair invite || { rc=$?; show; fail "pair invite on alpha exited $rc"; }
CODE="$(sed -nE 's/^pairing code: ([0-9A-Z]{4}(-[0-9A-Z]{4}){3}) .*/\1/p' "$WORK/out")"
[[ -n "$CODE" ]] || { show; fail "pair invite printed no code XXXX-XXXX-XXXX-XXXX"; }
# The date shows only when the code expires on another day (a run in the last
# ten minutes before midnight).
grep -Eq "\(valid until ([0-9]{4}-[0-9]{2}-[0-9]{2} )?[0-9]{2}:[0-9]{2}:[0-9]{2}, for one device\)" "$WORK/out" ||
  { show; fail "pair invite does not say until when and for how many"; }
JOIN_ADDR="$(sed -nE "s/^  sidecarctl pair join $CODE ([^ ]+)\$/\1/p" "$WORK/out")"
[[ "$JOIN_ADDR" == "${PEER[alpha]}" ]] ||
  { show; fail "pair invite's join command names \"$JOIN_ADDR\", not alpha's peer listener ${PEER[alpha]}"; }
pass "pair invite on alpha: code $CODE, join at $JOIN_ADDR"

ctl beta pair join "$CODE" "$JOIN_ADDR" || { rc=$?; show; fail "pair join on beta exited $rc"; }
ALPHA_ID="$(sed -nE 's/^paired with alpha \(([0-9a-f-]{36})\), fingerprint .*; the library has 2 devices$/\1/p' "$WORK/out")"
[[ -n "$ALPHA_ID" ]] || { show; fail "pair join does not say: paired with alpha (ID), ...; 2 devices"; }
pass "pair join on beta: $(cat "$WORK/out")"

# ---- devices: both list both, this device marked ----------------------------

ctl beta device || { rc=$?; show; fail "device on beta exited $rc"; }
BETA_ID="$(grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' "$WORK/out" | head -n 1)"
[[ -n "$BETA_ID" ]] || { show; fail "device on beta shows no device id"; }
# devices_ok DEVICE: DEVICE lists alpha and beta as the only members, itself
# as "this device".
devices_ok() {
  local self="$1" other
  [[ $self == alpha ]] && other=beta || other=alpha
  declare -A id=([alpha]="$ALPHA_ID" [beta]="$BETA_ID")
  ctl "$self" devices &&
    grep -Eq "^$self +${id[$self]} .* this device\$" "$WORK/out" &&
    grep -Eq "^$other +${id[$other]} .* member\$" "$WORK/out" &&
    grep -q "^2 devices in the library\$" "$WORK/out" &&
    [[ "$(grep -c ' member$\| this device$' "$WORK/out")" == 2 ]]
}
for device in beta alpha; do  # alpha last: its table is checked below
  eventually 5 "$device's devices did not list alpha and beta, itself marked" devices_ok "$device"
done
grep -Eq "^beta +$BETA_ID .* alpha +[0-9-]+ [0-9:]+ +127\.0\.0\.1:[0-9]+ +member\$" "$WORK/out" ||
  { show; fail "devices on alpha does not show beta admitted by alpha, with its address"; }
pass "devices on alpha and beta: 2 members, alpha ${ALPHA_ID:0:8} and beta ${BETA_ID:0:8}, this device marked"

# ---- register on alpha ---------------------------------------------------

UUID=3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8
URI="sidecar://$UUID/thumbs/grid@2x.webp"
FILE="$WORK/alpha/sidecars/content/3f/2a/$UUID/thumbs/grid@2x.webp"
mkdir -p "$(dirname "$FILE")"
printf 'RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00' >"$FILE"
SIZE="$(stat -c %s "$FILE")"
SHA8="$(sha256sum "$FILE" | cut -c1-8)"

ctl alpha register "$URI" --file="$FILE" --generator=test/1 ||
  { rc=$?; show; fail "register exited $rc"; }
grep -q "registered $URI as ready: $SIZE B, sha256 $SHA8" "$WORK/out" ||
  { show; fail "register did not report size $SIZE and sha256 $SHA8"; }
pass "register $URI ($SIZE B, sha256 $SHA8)"

# ---- ls on alpha ---------------------------------------------------------

ctl alpha ls || { rc=$?; show; fail "ls exited $rc"; }
grep -Eq "^ready +$SIZE B +$SHA8 +test/1 +$URI\$" "$WORK/out" ||
  { show; fail "ls does not list $URI as ready"; }
grep -q "^1 sidecar\$" "$WORK/out" || { show; fail "ls does not count 1 sidecar"; }
pass "ls lists it"

# ---- who-has from beta (gossip) ------------------------------------------

deadline=$((SECONDS + 5))
until ctl beta who-has "$URI" && grep -q "alpha" "$WORK/out"; do
  if ((SECONDS >= deadline)); then
    show
    fail "beta's who-has did not show alpha within 5s"
  fi
  sleep 0.1
done
grep -Eq "alpha \([0-9a-f]{8}\) +online .* $SIZE B +$SHA8" "$WORK/out" ||
  { show; fail "beta's who-has does not show alpha online with size and checksum"; }
pass "who-has from beta shows alpha"

# ---- resolve on beta and on alpha ----------------------------------------

ctl beta resolve "$URI" || { rc=$?; show; fail "resolve on beta exited $rc"; }
grep -Eq "^  outcome +REMOTE\$" "$WORK/out" || { show; fail "resolve on beta is not REMOTE"; }
grep -Eq "^ +1 +alpha \(" "$WORK/out" || { show; fail "resolve on beta does not list alpha as source 1"; }
pass "resolve on beta: REMOTE from alpha"

ctl alpha resolve "$URI" || { rc=$?; show; fail "resolve on alpha exited $rc"; }
grep -Eq "^  outcome +LOCAL\$" "$WORK/out" || { show; fail "resolve on alpha is not LOCAL"; }
grep -qF "$FILE" "$WORK/out" || { show; fail "resolve on alpha does not name $FILE"; }
pass "resolve on alpha: LOCAL"

# ---- missing: what peers hold and this device lacks ------------------------

ctl beta missing --kinds=thumb || { rc=$?; show; fail "missing on beta exited $rc"; }
grep -qxF "$URI" "$WORK/out" || { show; fail "missing on beta does not list $URI"; }
grep -q "^1 sidecar held by peers and not here\$" "$WORK/out" ||
  { show; fail "missing on beta does not count 1 sidecar"; }
ctl beta missing --kinds=proxy || { rc=$?; show; fail "missing --kinds=proxy exited $rc"; }
grep -q "^0 sidecars held by peers" "$WORK/out" ||
  { show; fail "missing --kinds=proxy lists a thumbnail"; }
ctl alpha missing || { rc=$?; show; fail "missing on alpha exited $rc"; }
grep -q "^0 sidecars held by peers" "$WORK/out" ||
  { show; fail "missing on alpha lists its own sidecar"; }
rc=0
ctl beta missing --kinds=nope || rc=$?
[[ $rc == 2 ]] || { show; fail "missing --kinds=nope exited $rc, not 2"; }
pass "missing: beta lacks $URI (thumb), alpha lacks nothing, bad kind exit 2"

# ---- usage errors: exit 2 ------------------------------------------------

rc=0
ctl beta who-has "sidecar://not-a-uuid/thumbs/grid@2x.webp" || rc=$?
[[ $rc -eq 2 ]] || { show; fail "a malformed URI exited $rc, not 2"; }
grep -q 'malformed sidecar URI "sidecar://not-a-uuid/thumbs/grid@2x.webp"' "$WORK/err" ||
  { show; fail "a malformed URI is not reported as such"; }
pass "malformed URI: exit 2, $(head -n 1 "$WORK/err")"

rc=0
ctl alpha register "$URI" --file="$WORK/no-such-file" || rc=$?
[[ $rc -eq 2 ]] || { show; fail "an unreadable file exited $rc, not 2"; }
pass "unreadable file: exit 2"

# ---- unreachable service: exit 1 -----------------------------------------

DEAD="127.0.0.1:$(free_port)"
rc=0
"$CTL_BIN" --availability="$DEAD" --timeout=3s who-has "$URI" \
  >"$WORK/out" 2>"$WORK/err" || rc=$?
[[ $rc -eq 1 ]] || { show; fail "an unreachable service exited $rc, not 1"; }
grep -q "cannot reach the availability service at $DEAD" "$WORK/err" ||
  { show; fail "an unreachable service is not reported as such"; }
pass "unreachable service: exit 1, cannot reach ... at $DEAD"

rc=0
"$CTL_BIN" --state_dir="$WORK/nokey" --timeout=3s who-has "$URI" \
  >"$WORK/out" 2>"$WORK/err" || rc=$?
[[ $rc -eq 1 ]] || { show; fail "a state dir without services exited $rc, not 1"; }
grep -q "cannot reach the availability service at unix:$WORK/nokey/availability.sock: is it running?" "$WORK/err" ||
  { show; fail "a state dir without services is not reported as unreachable"; }
pass "state dir without services: exit 1, cannot reach ... at unix:.../nokey/availability.sock"

# ---- fetch: beta copies alpha's sidecar ----------------------------------

BETA_FILE="$WORK/beta/sidecars/content/3f/2a/$UUID/thumbs/grid@2x.webp"
ctl beta fetch "$URI" --priority=interactive || { rc=$?; show; fail "fetch on beta exited $rc"; }
grep -Eq "^QUEUED +$URI +job [0-9a-f-]{36}\$" "$WORK/out" ||
  { show; fail "fetch on beta did not queue a job"; }
grep -Eq "^DONE +$URI +$BETA_FILE" "$WORK/out" ||
  { show; fail "fetch on beta did not end DONE at $BETA_FILE"; }
cmp "$FILE" "$BETA_FILE" || { show; fail "the fetched file differs from alpha's"; }
JOB_ID="$(sed -nE 's/^QUEUED .* job ([0-9a-f-]{36})$/\1/p' "$WORK/out")"
pass "fetch on beta: DONE, bytes identical (job ${JOB_ID:0:8})"

ctl beta resolve "$URI" || { rc=$?; show; fail "resolve on beta exited $rc"; }
grep -Eq "^  outcome +LOCAL\$" "$WORK/out" || { show; fail "resolve on beta is not LOCAL after the fetch"; }
pass "resolve on beta after the fetch: LOCAL"

ctl beta missing || { rc=$?; show; fail "missing on beta exited $rc"; }
grep -q "^0 sidecars held by peers" "$WORK/out" ||
  { show; fail "missing on beta still lists the fetched sidecar"; }
pass "missing on beta after the fetch: nothing"

ctl beta fetch "$URI" || { rc=$?; show; fail "a second fetch on beta exited $rc"; }
grep -Eq "^LOCAL +$URI +$BETA_FILE\$" "$WORK/out" || { show; fail "a second fetch is not LOCAL"; }
pass "fetch again: LOCAL"

# ---- fetch of a sidecar nobody has: GENERATE, exit 3 ---------------------

UNKNOWN="sidecar://0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9/thumbs/grid@2x.webp"
rc=0
ctl beta fetch "$UNKNOWN" || rc=$?
[[ $rc -eq 3 ]] || { show; fail "fetch of an unknown sidecar exited $rc, not 3"; }
grep -Eq "^GENERATE +$UNKNOWN +[^ ]" "$WORK/out" ||
  { show; fail "fetch of an unknown sidecar does not say GENERATE with a reason"; }
pass "fetch of an unknown sidecar: exit 3, $(head -n 1 "$WORK/out" | tr -s ' ')"

# ---- jobs ----------------------------------------------------------------

ctl beta jobs || { rc=$?; show; fail "jobs exited $rc"; }
grep -Eq "^${JOB_ID:0:8} +DONE +$URI +" "$WORK/out" ||
  { show; fail "jobs does not list job ${JOB_ID:0:8} as DONE"; }
pass "jobs lists ${JOB_ID:0:8} as DONE"

ctl beta jobs --active || { rc=$?; show; fail "jobs --active exited $rc"; }
grep -q "^no active jobs\$" "$WORK/out" || { show; fail "jobs --active lists jobs"; }
pass "jobs --active: none"

# ---- status: both services up ----------------------------------------------

# missing_count: the number on status's "missing" line in $WORK/out (0 for
# "none"), or nothing if the line is not one of its two forms.
missing_count() {
  if grep -Eq "^missing +none: this device holds all its members advertise\$" "$WORK/out"; then
    echo 0
  else
    sed -nE 's/^missing +([0-9]+) sidecars? members hold and this device lacks \(([a-z_]+ [0-9]+(, )?)+; sidecarctl missing lists them\)$/\1/p' "$WORK/out"
  fi
}

ctl beta status || { rc=$?; show; fail "status on beta exited $rc"; }
MISSING0="$(missing_count)"
[[ "$MISSING0" =~ ^[0-9]+$ ]] || { show; fail "status on beta has no missing line"; }
grep -Eq "^device +beta $BETA_ID  peer address ${PEER[beta]}\$" "$WORK/out" ||
  { show; fail "status on beta does not name beta, its id and peer address"; }
grep -Eq "^members +1 online, 0 offline\$" "$WORK/out" ||
  { show; fail "status on beta does not count alpha online"; }
grep -Eq "^  alpha +online +last contact [0-9]+s ago\$" "$WORK/out" ||
  { show; fail "status on beta does not show alpha online with its last contact"; }
grep -Eq "^jobs +0 QUEUED, 0 RUNNING, 0 WAITING_RETRY, 1 DONE, 0 GENERATE, 0 CANCELLED  \(newest 1\)\$" "$WORK/out" ||
  { show; fail "status on beta does not count its one DONE job by state"; }
grep -Eq "^ +fetching nothing now\$" "$WORK/out" || { show; fail "status on beta shows something being fetched"; }
grep -Eq "^store +used $SIZE B, no quota; .* free on the filesystem\$" "$WORK/out" ||
  { show; fail "status on beta has no store line with $SIZE B used and no quota"; }
grep -Eq "^prefetch +active; 0 of at most [0-9]+ running; rules " "$WORK/out" ||
  { show; fail "status on beta does not say prefetch is active"; }
grep -Eq "^last errors +none\$" "$WORK/out" || { show; fail "status on beta shows errors"; }
grep -q $'\x1b' "$WORK/out" && { show; fail "status in a pipe writes ANSI escapes"; }
[[ ! -s "$WORK/err" ]] || { show; fail "status on beta wrote to stderr"; }
pass "status on beta: device, 1 member online, $MISSING0 missing, jobs by state, store, prefetch; no ANSI escapes in a pipe"

# On a terminal (script(1) gives it one) the states are coloured, unless
# NO_COLOR is set.
on_tty() {
  script -qec "$(printf '%q ' "$CTL_BIN" --state_dir="${STATE[beta]}" status)" /dev/null >"$WORK/out" 2>&1
}
on_tty || { rc=$?; show; fail "status on a terminal exited $rc"; }
grep -q $'\x1b\\[32monline' "$WORK/out" || { show; fail "status on a terminal does not colour online green"; }
NO_COLOR=1 on_tty || { rc=$?; show; fail "status on a terminal with NO_COLOR exited $rc"; }
grep -q $'\x1b' "$WORK/out" && { show; fail "status with NO_COLOR writes ANSI escapes"; }
grep -q "^members" "$WORK/out" || { show; fail "status with NO_COLOR on a terminal shows no members"; }
pass "status on a terminal: coloured; with NO_COLOR: not"

ctl beta prefetch set metered=yes || { rc=$?; show; fail "prefetch set metered=yes exited $rc"; }
ctl beta status || { rc=$?; show; fail "status on metered beta exited $rc"; }
grep -Eq "^prefetch +paused: this device's link is metered" "$WORK/out" ||
  { show; fail "status on metered beta does not say prefetch is paused, and why"; }
ctl beta --json prefetch set metered=no || { rc=$?; show; fail "prefetch set metered=no exited $rc"; }
json_ok "d['metered'] is False and d['paused'] is False" ||
  { show; fail "prefetch --json set metered=no does not answer the policy, not metered"; }
pass "status on metered beta: prefetch paused (metered); prefetch --json set metered=no: the policy"

# ---- --json ------------------------------------------------------------------

ctl beta --json status || { rc=$?; show; fail "status --json on beta exited $rc"; }
json_ok "d['device']['device_id'] == '$BETA_ID'" "d['device']['name'] == 'beta'" \
  "d['availability']['reachable'] and d['transfer']['reachable']" \
  "[(p['name'], p['online']) for p in d['peers']['peers']] == [('alpha', True)]" \
  "d['jobs_by_state']['JOB_STATE_DONE'] == 1 and d['jobs_by_state']['JOB_STATE_QUEUED'] == 0" \
  "d['jobs']['jobs'][0]['job_id'] == '$JOB_ID'" \
  "d['store']['used_bytes'] == '$SIZE' and d['store']['quota_bytes'] == '0'" \
  "d['prefetch']['paused'] is False and d['errors'] == {}" \
  "d['missing']['count'] == $MISSING0 and d['missing']['complete'] is True" ||
  { show; fail "status --json on beta is not the JSON expected"; }
pass "status --json on beta: one JSON object, device id $BETA_ID, alpha online, 1 DONE job, store, prefetch"

ctl beta device --json || { rc=$?; show; fail "device --json exited $rc"; }
json_ok "d['device_id'] == '$BETA_ID'" "d['peer_address'] == '${PEER[beta]}'" \
  "d['local_ready'] == '1'" || { show; fail "device --json on beta is not beta's DeviceInfo"; }
pass "device --json: DeviceInfo with the id device shows ($BETA_ID)"

ctl beta --json who-has "$URI" || { rc=$?; show; fail "who-has --json exited $rc"; }
json_ok "sorted(x['name'] for x in d['devices']) == ['alpha', 'beta']" \
  "len(d['results']) == 1 and len(d['results'][0]['holders']) == 2" ||
  { show; fail "who-has --json on beta does not show alpha and beta holding it"; }
pass "who-has --json: WhoHasResponse, alpha and beta hold it"

ctl beta --json jobs || { rc=$?; show; fail "jobs --json exited $rc"; }
json_ok "[(j['job_id'], j['state']) for j in d['jobs']] == [('$JOB_ID', 'JOB_STATE_DONE')]" ||
  { show; fail "jobs --json on beta does not list job $JOB_ID DONE"; }
pass "jobs --json: ListJobsResponse, job ${JOB_ID:0:8} JOB_STATE_DONE"

# The other commands that read: one JSON document each, about what the
# command shows (the text of any of its values, anywhere in it).
json_mentions() { json_ok "__import__('json').dumps(d).find('$1') >= 0"; }
for cmd in "ls|$UUID" "peers|$ALPHA_ID" "devices|$ALPHA_ID" "devices|$BETA_ID" \
  "resolve $URI|OUTCOME_LOCAL" "store|$SIZE" "prefetch|max_concurrent_prefetch" \
  "missing --kinds=thumb|"; do
  # shellcheck disable=SC2086
  ctl beta --json ${cmd%%|*} || { rc=$?; show; fail "${cmd%%|*} --json exited $rc"; }
  json_mentions "${cmd#*|}" || { show; fail "${cmd%%|*} --json is not one JSON document with ${cmd#*|}"; }
done
pass "--json of ls, peers, devices, resolve, store, prefetch and missing: one JSON document each, with what they show"

ctl beta --json fetch "$URI" || { rc=$?; show; fail "fetch --json of a local sidecar exited $rc"; }
json_ok "[r['outcome'] for r in d['results']] == ['OUTCOME_LOCAL']" \
  "d['results'][0]['local_path'] == '$BETA_FILE'" "d['jobs'] == []" ||
  { show; fail "fetch --json on beta does not say LOCAL at $BETA_FILE"; }
rc=0
ctl beta --json fetch "$UNKNOWN" || rc=$?
[[ $rc -eq 3 ]] || { show; fail "fetch --json of an unknown sidecar exited $rc, not 3"; }
json_ok "d['results'][0]['outcome'] == 'OUTCOME_GENERATE'" ||
  { show; fail "fetch --json of an unknown sidecar does not say GENERATE"; }
pass "fetch --json: {results, jobs}, LOCAL; an unknown sidecar GENERATE with exit 3"

rc=0
"$CTL_BIN" --state_dir="$WORK/nokey" --timeout=3s --json device \
  >"$WORK/out" 2>"$WORK/err" || rc=$?
[[ $rc -eq 1 ]] || { show; fail "device --json without services exited $rc, not 1"; }
[[ ! -s "$WORK/out" ]] || { show; fail "device --json without services wrote to stdout"; }
grep -q "cannot reach the availability service" "$WORK/err" ||
  { show; fail "device --json without services does not say so on stderr"; }
pass "device --json without services: exit 1, nothing on stdout, the error on stderr"

# ---- status shows the last errors: a fetch that fails at its source ---------

# alpha advertises a sidecar it has no file for (a batch line: no file is
# read), so each of beta's attempts fails at alpha and the job ends GENERATE.
BROKEN="sidecar://5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f/thumbs/grid@2x.webp"
printf '%s 1000 %s\n' "$BROKEN" "$(printf x | sha256sum | cut -d' ' -f1)" >"$WORK/broken.batch"
ctl alpha register --batch="$WORK/broken.batch" || { rc=$?; show; fail "register --batch of a sidecar without a file exited $rc"; }
broken_known() { ctl beta who-has "$BROKEN" && grep -q "alpha" "$WORK/out"; }
eventually 5 "beta's who-has did not show alpha holding $BROKEN" broken_known
rc=0
ctl beta fetch "$BROKEN" || rc=$?
[[ $rc -eq 3 ]] || { show; fail "fetch of a sidecar alpha cannot send exited $rc, not 3"; }
BROKEN_JOB="$(sed -nE 's/^QUEUED .* job ([0-9a-f-]{36})$/\1/p' "$WORK/out")"
[[ -n "$BROKEN_JOB" ]] || { show; fail "fetch of a sidecar alpha cannot send was not queued"; }
ctl beta status || { rc=$?; show; fail "status on beta after a failed fetch exited $rc"; }
grep -Eq "^jobs +0 QUEUED, 0 RUNNING, 0 WAITING_RETRY, 1 DONE, 1 GENERATE, 0 CANCELLED  \(newest 2\)\$" "$WORK/out" ||
  { show; fail "status on beta does not count the GENERATE job"; }
grep -Eq "^last errors +1 job\$" "$WORK/out" || { show; fail "status on beta does not count 1 failed job"; }
[[ "$(missing_count)" == "$((MISSING0 + 1))" ]] && grep -Eq "^missing .*[(, ]thumb [0-9]+" "$WORK/out" ||
  { show; fail "status on beta does not count the sidecar it could not fetch as missing ($MISSING0 before)"; }
grep -Eq "^  ${BROKEN_JOB:0:8} +GENERATE  $BROKEN  [^ ]" "$WORK/out" ||
  { show; fail "status on beta does not show job ${BROKEN_JOB:0:8} GENERATE with its error"; }
pass "status after a fetch failing at its source: 1 GENERATE, $((MISSING0 + 1)) missing, last errors: $(grep -E "^  ${BROKEN_JOB:0:8} " "$WORK/out" | tr -s ' ')"

# ---- cancel --------------------------------------------------------------

rc=0
ctl beta cancel 00000000-0000-4000-8000-000000000000 || rc=$?
[[ $rc -eq 1 ]] || { show; fail "cancel of an unknown job exited $rc, not 1"; }
grep -q "cancel: NOT_FOUND: " "$WORK/err" || { show; fail "cancel of an unknown job does not say NOT_FOUND"; }
pass "cancel of an unknown job: exit 1, $(head -n 1 "$WORK/err")"

rc=0
ctl beta cancel "$JOB_ID" || rc=$?
[[ $rc -eq 1 ]] || { show; fail "cancel of a finished job exited $rc, not 1"; }
grep -q "FAILED_PRECONDITION" "$WORK/err" || { show; fail "cancel of a finished job does not say FAILED_PRECONDITION"; }
pass "cancel of a finished job: exit 1 (FAILED_PRECONDITION)"

# ---- unreachable transfer service: exit 1 --------------------------------

DEAD="127.0.0.1:$(free_port)"
rc=0
"$CTL_BIN" --transfer="$DEAD" --timeout=3s fetch "$URI" \
  >"$WORK/out" 2>"$WORK/err" || rc=$?
[[ $rc -eq 1 ]] || { show; fail "an unreachable transfer service exited $rc, not 1"; }
grep -q "cannot reach the transfer service at $DEAD: is it running?" "$WORK/err" ||
  { show; fail "an unreachable transfer service is not reported as such"; }
pass "unreachable transfer service: exit 1, cannot reach ... at $DEAD"

# ---- pairing refused: a mistyped code, a used code --------------------------

start_availability gamma
pass "gamma serves peers on ${PEER[gamma]} (availability only)"

ctl alpha pair invite || { rc=$?; show; fail "a second pair invite on alpha exited $rc"; }
CODE2="$(sed -nE 's/^pairing code: ([0-9A-Z]{4}(-[0-9A-Z]{4}){3}) .*/\1/p' "$WORK/out")"
[[ -n "$CODE2" && "$CODE2" != "$CODE" ]] || { show; fail "a second pair invite printed no new code"; }
# One character mistyped (the first changed to another code character).
if [[ "${CODE2:0:1}" == 7 ]]; then TYPO="8${CODE2:1}"; else TYPO="7${CODE2:1}"; fi
rc=0
ctl gamma pair join "$TYPO" "${PEER[alpha]}" || rc=$?
[[ $rc == 1 ]] || { show; fail "pair join with a mistyped code exited $rc, not 1"; }
grep -q "pair join: PERMISSION_DENIED: wrong pairing code for the device at ${PEER[alpha]}: it is not the one that made this code" "$WORK/err" ||
  { show; fail "pair join with a mistyped code does not say the code is wrong"; }
grep -q "nothing was sent" "$WORK/err" || { show; fail "pair join with a mistyped code does not say nothing was sent"; }
pass "pair join with a mistyped code: exit 1, $(sed -E 's/: it is not the one.*//' "$WORK/err")"

rc=0
ctl gamma pair join "${CODE:0:4}" "${PEER[alpha]}" || rc=$?
[[ $rc == 2 ]] || { show; fail "pair join with a truncated code exited $rc, not 2"; }
pass "pair join with a truncated code: exit 2, $(head -n 1 "$WORK/err")"

rc=0
ctl gamma pair join "$CODE" "${PEER[alpha]}" || rc=$?
[[ $rc == 1 ]] || { show; fail "pair join with a used code exited $rc, not 1"; }
grep -q "pair join: FAILED_PRECONDITION: .*this pairing code was already used" "$WORK/err" ||
  { show; fail "pair join with a used code does not say it was used"; }
pass "pair join with beta's used code: exit 1, $(sed -E 's/; make a new one.*//' "$WORK/err")"

ctl gamma devices || { rc=$?; show; fail "devices on gamma exited $rc"; }
grep -q "^1 device in the library\$" "$WORK/out" || { show; fail "gamma is paired after refused joins"; }
ctl alpha devices || { rc=$?; show; fail "devices on alpha exited $rc"; }
grep -q "^gamma " "$WORK/out" && { show; fail "alpha lists gamma after refused joins"; }
pass "after the refused joins gamma is alone and alpha does not list it"

# ---- gamma pairs through beta; alpha accepts it (beta introduced it) --------

ctl beta pair invite || { rc=$?; show; fail "pair invite on beta exited $rc"; }
CODE3="$(sed -nE 's/^pairing code: ([0-9A-Z]{4}(-[0-9A-Z]{4}){3}) .*/\1/p' "$WORK/out")"
ctl gamma pair join "$CODE3" "${PEER[beta]}" || { rc=$?; show; fail "pair join on gamma exited $rc"; }
grep -q "^paired with beta (.*), fingerprint .*; the library has 3 devices\$" "$WORK/out" ||
  { show; fail "pair join on gamma does not report beta and 3 devices"; }
pass "gamma paired through beta: $(cat "$WORK/out")"
gamma_on() {
  ctl "$1" devices && grep -Eq "^gamma +[0-9a-f-]{36} .* beta +.* member\$" "$WORK/out" &&
    grep -q "^3 devices in the library\$" "$WORK/out"
}
eventually 10 "alpha did not list gamma, admitted by beta" gamma_on alpha
GAMMA_ID="$(awk '$1 == "gamma" { print $2 }' "$WORK/out")"
gamma_peer() { ctl alpha peers && grep -Eq "^gamma +${GAMMA_ID:0:8} " "$WORK/out"; }
eventually 10 "alpha's peers did not list gamma" gamma_peer
pass "alpha lists gamma (admitted by beta) as a member and a peer"

# ---- unpair gamma on alpha ---------------------------------------------------

ctl alpha unpair gamma || { rc=$?; show; fail "unpair gamma on alpha exited $rc"; }
grep -q "^removed gamma ($GAMMA_ID) from the library" "$WORK/out" ||
  { show; fail "unpair does not report gamma removed"; }
pass "unpair on alpha: $(sed -E 's/ from the library.*/ from the library/' "$WORK/out")"

ctl alpha devices --removed || { rc=$?; show; fail "devices --removed on alpha exited $rc"; }
grep -Eq "^gamma +$GAMMA_ID .* removed [0-9-]+ [0-9:]+ by alpha\$" "$WORK/out" ||
  { show; fail "devices --removed on alpha does not show gamma removed by alpha"; }
grep -q "^2 devices in the library, 1 removed\$" "$WORK/out" ||
  { show; fail "devices --removed on alpha does not count 2 members and 1 removed"; }
ctl alpha devices || { rc=$?; show; fail "devices on alpha exited $rc"; }
grep -q "^gamma " "$WORK/out" && { show; fail "devices on alpha still lists gamma"; }
pass "devices --removed on alpha: gamma removed by alpha; devices: 2"

gamma_gone_from_peers() { ctl alpha peers && ! grep -q "^gamma " "$WORK/out"; }
eventually 5 "alpha's peers still list gamma" gamma_gone_from_peers
removed_on_beta() {
  ctl beta devices --removed && grep -Eq "^gamma +$GAMMA_ID .* removed .* by alpha\$" "$WORK/out"
}
eventually 5 "beta did not learn that gamma was removed" removed_on_beta
gamma_gone_from_beta_peers() { ctl beta peers && ! grep -q "^gamma " "$WORK/out"; }
eventually 5 "beta's peers still list gamma" gamma_gone_from_beta_peers
pass "gamma is no peer of alpha's, and beta has it removed (by alpha) too"

# ---- status with the transfer service stopped ---------------------------------

kill -TERM "${PID[alpha_xfer]}"
wait "${PID[alpha_xfer]}" || true
unset 'PID[alpha_xfer]'
rc=0
ctl alpha status || rc=$?
[[ $rc -eq 1 ]] || { show; fail "status with the transfer service stopped exited $rc, not 1"; }
grep -Eq "^transfer +the transfer service is unreachable at unix:${STATE[alpha]}/transfer.sock\$" "$WORK/out" ||
  { show; fail "status does not say plainly that the transfer service is unreachable"; }
grep -q "start it: sidecar-transfer --state_dir=${STATE[alpha]} " "$WORK/out" ||
  { show; fail "status does not say how to start the transfer service"; }
grep -Eq "^device +alpha $ALPHA_ID  peer address ${PEER[alpha]}\$" "$WORK/out" ||
  { show; fail "status without transfer does not show alpha's device line"; }
grep -Eq "^  beta +online " "$WORK/out" || { show; fail "status without transfer does not show beta online"; }
grep -q "^jobs\|^store" "$WORK/out" && { show; fail "status without transfer shows jobs or store"; }
grep -q "cannot reach the transfer service" "$WORK/err" ||
  { show; fail "status without transfer does not report the error on stderr"; }
pass "status with alpha's transfer service stopped: exit 1, transfer unreachable (how to start it), alpha and beta still shown"

rc=0
ctl alpha --json status || rc=$?
[[ $rc -eq 1 ]] || { show; fail "status --json with the transfer service stopped exited $rc, not 1"; }
json_ok "d['device']['device_id'] == '$ALPHA_ID'" \
  "d['availability']['reachable'] and not d['transfer']['reachable']" \
  "'cannot reach the transfer service' in d['transfer']['error']" \
  "d['jobs'] is None and d['store'] is None and list(d['errors']) == ['jobs']" ||
  { show; fail "status --json with the transfer service stopped is not the JSON expected"; }
pass "status --json with the transfer service stopped: exit 1, transfer not reachable, alpha's device"
