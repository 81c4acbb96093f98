#!/usr/bin/env bash
# sidecarctl against real availability services: a private PostgreSQL and two
# devices, "alpha" and "beta", where beta is configured with alpha as its peer
# (alpha learns beta when beta calls). Checks register, who-has (across
# gossip), resolve, ls, and the exit status and message of a malformed URI
# (2) and of an unreachable service (1).
#
#   sidecarctl_test.sh AVAILABILITY_BIN SIDECARCTL_BIN
#
# CTest passes both paths. PG_BIN (default /usr/lib/postgresql/15/bin) names
# PostgreSQL's server binaries. As root, PostgreSQL runs as user postgres.
# Everything started is stopped on exit; on failure the logs are printed.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 AVAILABILITY_BIN SIDECARCTL_BIN" >&2
  exit 2
fi
AVAILABILITY_BIN="$1"
CTL_BIN="$2"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
for bin in "$AVAILABILITY_BIN" "$CTL_BIN" "$PG_BIN/initdb" "$PG_BIN/pg_ctl"; do
  [[ -x "$bin" ]] || { echo "FAIL: missing executable $bin" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sidecarctl-test.XXXXXX")"
PG_DIR="$WORK/pg"
PG_STARTED=0
declare -A PID=()  # device -> availability service pid

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
for db in alpha beta; do
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db" ||
    fail "createdb $db"
done
pass "PostgreSQL on port $PG_PORT"

# ---- two availability services -------------------------------------------

declare -A ADDR=()
# start_device NAME [FLAGS...]: starts NAME's service on a port the kernel
# picks and waits for its port file.
start_device() {
  local name="$1"
  shift
  mkdir -p "$WORK/$name/sidecars"
  "$AVAILABILITY_BIN" \
    --listen=127.0.0.1:0 \
    --db="host=127.0.0.1 port=$PG_PORT dbname=$name user=postgres" \
    --name="$name" \
    --sidecar_root="$WORK/$name/sidecars" \
    --port_file="$WORK/$name/port" \
    --prompt_delay=100ms \
    --ping_interval=500ms \
    "$@" >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  for _ in $(seq 1 150); do
    [[ -s "$WORK/$name/port" ]] && break
    kill -0 "${PID[$name]}" 2>/dev/null || fail "$name's service exited at start"
    sleep 0.1
  done
  [[ -s "$WORK/$name/port" ]] || fail "$name's service did not start in 15s"
  ADDR[$name]="127.0.0.1:$(cat "$WORK/$name/port")"
  pass "$name serves on ${ADDR[$name]}"
}
start_device alpha
start_device beta --peers="${ADDR[alpha]}"

# ctl DEVICE ARGS...: runs sidecarctl against DEVICE; stdout to $WORK/out,
# stderr to $WORK/err; returns its exit status.
ctl() {
  local device="$1"
  shift
  local rc=0
  "$CTL_BIN" --availability="${ADDR[$device]}" --timeout=5s "$@" \
    >"$WORK/out" 2>"$WORK/err" || rc=$?
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
