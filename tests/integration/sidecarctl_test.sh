#!/usr/bin/env bash
# sidecarctl against real services: a private PostgreSQL and two devices,
# "alpha" and "beta", each with an availability and a transfer service (own
# databases), where beta is configured with alpha as its peer (alpha learns
# beta when beta calls). Checks register, who-has (across gossip), resolve,
# ls, the transfer commands (fetch to beta of alpha's sidecar with identical
# bytes, fetch of an unknown sidecar: GENERATE and exit 3, jobs, cancel of an
# unknown job: exit 1), and the exit status and message of a malformed URI
# (2) and of unreachable services (1).
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

# free_port: prints a TCP port on 127.0.0.1 that nothing listens on now.
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
# Another test may take the port between the check and the start: retry.
PG_STARTED=1
started=0
for attempt in 1 2 3; do
  PG_PORT="$(free_port)"
  if as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" \
    -w -t 60 -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 \
-c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >"$WORK/pg_ctl.log" 2>&1; then
    started=1
    break
  fi
done
[[ "$started" -eq 1 ]] || fail "PostgreSQL did not start"
for db in alpha beta alpha_xfer beta_xfer; do
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db" ||
    fail "createdb $db"
done
pass "PostgreSQL on port $PG_PORT"

# ---- two devices: availability and transfer services -----------------------

declare -A ADDR=()   # device -> availability service host:port
declare -A XFER=()   # device -> transfer service host:port
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
# start_device NAME [FLAGS...]: starts NAME's availability service on a port
# the kernel picks, then its transfer service on a free port (which the
# availability service advertises, so it is chosen first) with its own
# database and the same sidecar root.
start_device() {
  local name="$1"
  shift
  mkdir -p "$WORK/$name/sidecars"
  XFER[$name]="127.0.0.1:$(free_port)"
  "$AVAILABILITY_BIN" \
    --listen=127.0.0.1:0 \
    --db="host=127.0.0.1 port=$PG_PORT dbname=$name user=postgres" \
    --name="$name" \
    --sidecar_root="$WORK/$name/sidecars" \
    --transfer_address="${XFER[$name]}" \
    --port_file="$WORK/$name.port" \
    --prompt_delay=100ms \
    --ping_interval=500ms \
    "$@" >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  wait_port "$name"
  ADDR[$name]="127.0.0.1:$PORT"
  "$TRANSFER_BIN" \
    --listen="${XFER[$name]}" \
    --db="host=127.0.0.1 port=$PG_PORT dbname=${name}_xfer user=postgres" \
    --sidecar_root="$WORK/$name/sidecars" \
    --availability="${ADDR[$name]}" \
    --retry_initial_backoff=100ms \
    --max_attempts=3 \
    --min_free_bytes=0 \
    --prefetch_kinds= \
    --port_file="$WORK/${name}_xfer.port" \
    >"$WORK/${name}_xfer.log" 2>&1 &
  PID[${name}_xfer]=$!
  wait_port "${name}_xfer"
  pass "$name serves on ${ADDR[$name]}, its transfer service on ${XFER[$name]}"
}
# ---- a signal during start-up is not held up by the database wait --------

# Each service waits up to --db_connect_timeout for PostgreSQL; SIGTERM in
# that time ends it at once, with status 0.
DEAD_DB="host=127.0.0.1 port=$(free_port) dbname=x user=postgres connect_timeout=1"
for svc in availability transfer; do
  if [[ $svc == availability ]]; then bin="$AVAILABILITY_BIN"; else bin="$TRANSFER_BIN"; fi
  "$bin" --listen=127.0.0.1:0 --db="$DEAD_DB" --db_connect_timeout=60s \
    --sidecar_root="$WORK/startup/sidecars" >"$WORK/startup-$svc.log" 2>&1 &
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

start_device alpha
start_device beta --peers="${ADDR[alpha]}"

# ctl DEVICE ARGS...: runs sidecarctl against DEVICE; stdout to $WORK/out,
# stderr to $WORK/err; returns its exit status.
ctl() {
  local device="$1"
  shift
  local rc=0
  "$CTL_BIN" --availability="${ADDR[$device]}" --transfer="${XFER[$device]}" \
    --timeout=5s "$@" >"$WORK/out" 2>"$WORK/err" || rc=$?
  return "$rc"
}
show() { sed 's/^/    /' "$WORK/out" "$WORK/err"; }

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
