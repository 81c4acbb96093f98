#!/usr/bin/env bash
# The sidecar-sync demo: three devices of one person on this machine.
#
#   desktop <-> laptop <-> server      (desktop and server are not peers)
#
# Installs dependencies, builds, starts a private PostgreSQL (one database per
# device) and three availability services, then uses sidecarctl to show the
# desktop's new thumbnails becoming known on the laptop and, through the
# laptop's gossip, on the server; how each device resolves them; and the
# laptop noticing when the desktop goes away. Everything it starts is stopped
# when it exits, also on failure or Ctrl-C. Data and logs stay in .demo/.
#
# SKIP_BUILD=1 skips dependency installation and the build; AVAILABILITY_BIN
# names another availability binary.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"
DEMO="$REPO/.demo"
PG_BIN=/usr/lib/postgresql/15/bin
AVAILABILITY_BIN="${AVAILABILITY_BIN:-$REPO/build/services/availability/sidecar-availability}"
CTL_BIN="$REPO/build/services/sidecarctl/sidecarctl"

# ---- narration ---------------------------------------------------------------

if [[ -t 1 ]]; then
  BOLD=$'\e[1m' DIM=$'\e[2m' RESET=$'\e[0m'
else
  BOLD='' DIM='' RESET=''
fi
step() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$RESET"; }
say() { printf '    %s\n' "$*"; }
die() {
  printf '%sdemo: %s%s\n' "$BOLD" "$*" "$RESET" >&2
  exit 1
}

# ---- cleanup -----------------------------------------------------------------

declare -A PID=()   # device name -> availability service pid
WATCH_PID=""
PG_DIR=""
PG_STARTED=0

as_pg_owner() {
  if [[ "$(id -u)" -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# The script's own stdout and stderr: a signal may arrive while a command's
# output is redirected to a log, and cleanup runs in that redirection.
exec 8>&1 9>&2

cleanup() {
  local rc=$?
  set +e
  exec 1>&8 2>&9
  if [[ -n "$WATCH_PID" ]]; then
    kill -TERM "$WATCH_PID" 2>/dev/null
    wait "$WATCH_PID" 2>/dev/null
  fi
  local name
  for name in "${!PID[@]}"; do
    kill -TERM "${PID[$name]}" 2>/dev/null
  done
  for name in "${!PID[@]}"; do
    wait "${PID[$name]}" 2>/dev/null
  done
  if [[ "$PG_STARTED" -eq 1 ]]; then
    as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1
  fi
  if [[ $rc -eq 0 ]]; then
    say "all stopped; data and logs stay in .demo/"
  else
    printf '\ndemo failed (exit %d); logs are in %s\n' "$rc" "$DEMO" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- helpers -----------------------------------------------------------------

declare -a TAKEN_PORTS=()
# free_port VAR: sets VAR to a TCP port on 127.0.0.1 that nothing listens on
# and that this script has not handed out yet. (Not run in a subshell, so
# that TAKEN_PORTS remembers.)
free_port() {
  local _fp_port _fp_taken
  for _ in $(seq 1 200); do
    _fp_port=$((20000 + RANDOM % 40000))
    for _fp_taken in "${TAKEN_PORTS[@]}"; do
      [[ "$_fp_taken" == "$_fp_port" ]] && continue 2
    done
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$_fp_port") 2>/dev/null; then
      TAKEN_PORTS+=("$_fp_port")
      printf -v "$1" '%s' "$_fp_port"
      return 0
    fi
  done
  die "found no free TCP port"
}

declare -A ADDR=()  # device name -> host:port of its availability service

# ctl DEVICE ARGS...: runs sidecarctl against DEVICE's service, showing it.
ctl() {
  local device="$1"
  shift
  printf '%s[%s] $ sidecarctl %s%s\n' "$DIM" "$device" "$*" "$RESET"
  "$CTL_BIN" --availability="${ADDR[$device]}" "$@" | sed 's/^/    /'
  return "${PIPESTATUS[0]}"
}

# quiet_ctl DEVICE ARGS...: the same without showing anything.
quiet_ctl() {
  local device="$1"
  shift
  "$CTL_BIN" --availability="${ADDR[$device]}" "$@" 2>/dev/null
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s until it
# succeeds; says how long that took, or fails after SECONDS.
wait_for() {
  local limit="$1" what="$2"
  shift 2
  local start="${EPOCHREALTIME/./}" now
  until "$@"; do
    now="${EPOCHREALTIME/./}"
    if (((now - start) / 1000000 >= limit)); then
      die "gave up after ${limit}s waiting for: $what"
    fi
    sleep 0.2
  done
  now="${EPOCHREALTIME/./}"
  say "($what after $(((now - start) / 1000)) ms)"
}

# Writes a real 1x1 WebP (extended format: a VP8L image plus an XMP chunk
# carrying TEXT, so that every thumbnail has its own bytes) to FILE.
le32() {
  local n="$1"
  printf '%b' "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((n & 255)) \
    $(((n >> 8) & 255)) $(((n >> 16) & 255)) $(((n >> 24) & 255)))"
}
make_webp() {
  local file="$1" text="$2"
  local xmp="<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><!-- $text --></x:xmpmeta>"
  local xlen=${#xmp} pad=""
  ((xlen % 2 == 1)) && pad=" "
  local riff=$((4 + 18 + 22 + 8 + xlen + ${#pad}))
  mkdir -p "$(dirname "$file")"
  {
    printf 'RIFF'; le32 "$riff"; printf 'WEBP'
    # VP8X: flags = alpha (0x10) | XMP (0x04); canvas 1x1 (stored minus one).
    printf 'VP8X'; le32 10
    printf '\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00'
    # VP8L: one lossless pixel (13 bytes and a padding byte).
    printf 'VP8L'; le32 13
    printf '\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00'
    printf 'XMP '; le32 "$xlen"; printf '%s%s' "$xmp" "$pad"
  } >"$file"
}

# Layout path of a thumbnail: content/{h0}/{h1}/{uuid}/thumbs/{variant}.webp
thumb_path() {
  local uuid="$1" variant="$2" hex
  hex="${uuid//-/}"
  echo "content/${hex:0:2}/${hex:2:2}/$uuid/thumbs/$variant.webp"
}

# ---- 1. build ----------------------------------------------------------------

rm -rf "$DEMO"
mkdir -p "$DEMO"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  step "Building sidecar-sync (dependencies come from Debian's archive)"
  say "this takes a few minutes the first time; log: .demo/build.log"
  if ! scripts/build.sh sidecar-availability sidecarctl >"$DEMO/build.log" 2>&1; then
    tail -n 30 "$DEMO/build.log" >&2
    die "the build failed; log above (.demo/build.log)"
  fi
else
  step "Using the existing build (SKIP_BUILD=1)"
fi
[[ -x "$AVAILABILITY_BIN" ]] || die "missing $AVAILABILITY_BIN (build failed?)"
[[ -x "$CTL_BIN" ]] || die "missing $CTL_BIN (build failed?)"
say "built $(basename "$AVAILABILITY_BIN") and $(basename "$CTL_BIN")"

# ---- 2. PostgreSQL -----------------------------------------------------------

step "Starting a private PostgreSQL with one database per device"
PG_DIR="$DEMO/pg"
mkdir -p "$PG_DIR"
if [[ "$(id -u)" -eq 0 ]]; then
  chown postgres:postgres "$PG_DIR"
  if ! runuser -u postgres -- test -w "$PG_DIR"; then
    # The repository is somewhere user postgres cannot reach (e.g. /root).
    PG_DIR="$(mktemp -d /tmp/sidecar-demo-pg.XXXXXX)"
    chown postgres:postgres "$PG_DIR"
    say "user postgres cannot reach $DEMO; using $PG_DIR instead"
  fi
fi
free_port PG_PORT
as_pg_owner "$PG_BIN/initdb" -D "$PG_DIR/data" --username=postgres \
  --auth=trust --encoding=UTF8 --no-locale >"$DEMO/initdb.log" 2>&1 ||
  die "initdb failed; see $DEMO/initdb.log"
# Set before starting: a Ctrl-C while pg_ctl waits must still stop the server.
PG_STARTED=1
as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
  -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1" start >/dev/null 8>&- 9>&- ||
  die "PostgreSQL did not start; see $PG_DIR/server.log"
for db in dev_a dev_b dev_c; do
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"
done
say "PostgreSQL 15 on 127.0.0.1:$PG_PORT with databases dev_a, dev_b, dev_c"

# ---- 3. three devices --------------------------------------------------------

step "Starting the availability service of three devices"
declare -A DB=([desktop]=dev_a [laptop]=dev_b [server]=dev_c)
declare -A PEERS_OF=([desktop]="laptop" [laptop]="desktop server" [server]="laptop")
port=""
for device in desktop laptop server; do
  free_port port
  ADDR[$device]="127.0.0.1:$port"
done
start_device() {
  local device="$1" peers="" p
  for p in ${PEERS_OF[$device]}; do
    peers+="${peers:+,}${ADDR[$p]}"
  done
  mkdir -p "$DEMO/$device/sidecars"
  rm -f "$DEMO/$device/port"
  "$AVAILABILITY_BIN" \
    --listen="${ADDR[$device]}" \
    --advertise_address="${ADDR[$device]}" \
    --db="host=127.0.0.1 port=$PG_PORT dbname=${DB[$device]} user=postgres" \
    --name="$device" \
    --sidecar_root="$DEMO/$device/sidecars" \
    --peers="$peers" \
    --gossip_interval=5m \
    --prompt_delay=200ms \
    --ping_interval=1s \
    --offline_after=3s \
    --port_file="$DEMO/$device/port" \
    >"$DEMO/$device.log" 2>&1 &
  PID[$device]=$!
}
for device in desktop laptop server; do
  start_device "$device"
done
for device in desktop laptop server; do
  for _ in $(seq 1 150); do
    [[ -s "$DEMO/$device/port" ]] && break
    if ! kill -0 "${PID[$device]}" 2>/dev/null; then
      tail -n 20 "$DEMO/$device.log" >&2 || true
      die "the $device's service exited; log above ($DEMO/$device.log)"
    fi
    sleep 0.2
  done
  [[ -s "$DEMO/$device/port" ]] || die "the $device's service did not start in 30s"
  say "$(printf '%-8s' "$device") listens on ${ADDR[$device]}, peers: ${PEERS_OF[$device]// /, }" \
    "(database ${DB[$device]}, log .demo/$device.log)"
done
say "the periodic gossip round is every 5 minutes, so what follows travels by"
say "prompt gossip (--prompt_delay=200ms after a change), not by that round."
ctl desktop device

step "The server watches for availability changes (in the background)"
"$CTL_BIN" --availability="${ADDR[server]}" watch --remote \
  >"$DEMO/server-watch.log" 2>&1 &
WATCH_PID=$!
say "\$ sidecarctl watch --remote  > .demo/server-watch.log"

# ---- 4. the desktop makes thumbnails -----------------------------------------

step "The desktop generates thumbnails for three photos and registers them"
PHOTOS=(
  "7d9f3c2e-1a4b-4c8d-9e6f-0a1b2c3d4e5f beach.jpg"
  "b52e8a10-3c7d-4e9f-8a1b-2c3d4e5f6a7b mountain.jpg"
  "e0c4a9d8-5b6a-4f3e-9d2c-1b0a9f8e7d6c birthday.jpg"
)
URIS=()
for photo in "${PHOTOS[@]}"; do
  read -r uuid title <<<"$photo"
  for variant in icon@1x grid@2x; do
    rel="$(thumb_path "$uuid" "$variant")"
    make_webp "$DEMO/desktop/sidecars/$rel" "$title $variant"
    URIS+=("sidecar://$uuid/thumbs/$variant.webp")
  done
done
say "wrote ${#URIS[@]} WebP files under .demo/desktop/sidecars/content/..."
for uri in "${URIS[@]}"; do
  uuid="${uri#sidecar://}"
  uuid="${uuid%%/*}"
  variant="${uri##*/}"
  variant="${variant%.webp}"
  ctl desktop register "$uri" \
    --file="$DEMO/desktop/sidecars/$(thumb_path "$uuid" "$variant")" \
    --generator=demo-thumbnailer/1
done
ctl desktop ls

# ---- 5. the news spreads -----------------------------------------------------

step "The news spreads: to the laptop, and through it to the server"
say "each change starts a prompt gossip round (after --prompt_delay). The server"
say "is configured with only the laptop, but gossip carries every device's"
say "entries with its address, so the server hears of the desktop through the"
say "laptop; once it has, it talks to the desktop directly too, and news may"
say "then reach it either way."
LAST_URI="${URIS[${#URIS[@]} - 1]}"
holds() { quiet_ctl "$1" who-has "$LAST_URI" | grep -q "desktop"; }
wait_for 30 "the laptop knows" holds laptop
wait_for 30 "the server knows" holds server
ctl laptop who-has "${URIS[0]}" "${URIS[1]}"
ctl server who-has "${URIS[0]}"

step "How each device would get the beach photo's grid thumbnail"
ctl desktop resolve "${URIS[1]}"
ctl laptop resolve "${URIS[1]}"
ctl server resolve "${URIS[1]}"
say "the server was never told about the desktop, yet would fetch from it:"
say "it learned the desktop's address through the laptop and, since"
say "--contact_learned_peers is on by default, now pings it itself to know"
say "whether it is online (FROM gossip in its peer table below)."

step "Peers as each device sees them"
ctl laptop peers
ctl server peers

step "What the server's watch saw"
# TERM, not INT: background jobs of a script start with SIGINT ignored.
kill -TERM "$WATCH_PID" 2>/dev/null || true
wait "$WATCH_PID" 2>/dev/null || true
WATCH_PID=""
sed 's/^/    /' "$DEMO/server-watch.log"

# ---- 6. the desktop goes away ------------------------------------------------

step "The desktop shuts down"
kill -TERM "${PID[desktop]}"
wait "${PID[desktop]}" 2>/dev/null || true
unset 'PID[desktop]'
say "stopped; the laptop pings every 1s and marks a peer offline after 3s of silence"
desktop_offline() {
  quiet_ctl laptop peers | awk '$1 == "desktop" && $4 == "offline" { found = 1 } END { exit !found }'
}
wait_for 30 "the laptop marks the desktop offline" desktop_offline
ctl laptop peers
ctl laptop who-has "${URIS[1]}"
say "its only holder is offline, so resolve answers GENERATE, and with"
say "--mode=fetch-only (never generate) UNAVAILABLE:"
ctl laptop resolve "${URIS[1]}"
ctl laptop resolve "${URIS[1]}" --mode=fetch-only

step "Done: stopping the services and PostgreSQL"
