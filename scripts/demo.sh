#!/usr/bin/env bash
# The sidecar-sync demo: three devices of one person on this machine.
#
#   desktop <-> laptop <-> server      (desktop and server are not peers)
#
# Installs dependencies, builds, starts a private PostgreSQL (two databases per
# device: availability and transfer) and, per device, an availability and a
# transfer service, then uses sidecarctl to show the desktop's new thumbnails
# becoming known on the laptop and, through the laptop's gossip, on the
# server; how each device resolves them; the laptop fetching one from the
# desktop (verified, byte for byte); and the laptop noticing when the desktop
# goes away. Everything it starts is stopped when it exits, also on failure
# or Ctrl-C. Data and logs stay in .demo/.
#
# SKIP_BUILD=1 skips dependency installation and the build; AVAILABILITY_BIN,
# TRANSFER_BIN and CTL_BIN name other binaries; DEMO_DIR another directory
# for data and logs (default .demo; it is emptied first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"
DEMO="${DEMO_DIR:-$REPO/.demo}"
SHOWN="${DEMO#"$REPO"/}"  # how the narration names it: .demo unless DEMO_DIR
PG_BIN=/usr/lib/postgresql/15/bin
AVAILABILITY_BIN="${AVAILABILITY_BIN:-$REPO/build/services/availability/sidecar-availability}"
TRANSFER_BIN="${TRANSFER_BIN:-$REPO/build/services/transfer/sidecar-transfer}"
CTL_BIN="${CTL_BIN:-$REPO/build/services/sidecarctl/sidecarctl}"

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

declare -A PID=()   # "desktop", "desktop_xfer", ... -> service pid
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
    say "all stopped; data and logs stay in $SHOWN/"
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
declare -A XFER=()  # device name -> host:port of its transfer service

# ctl DEVICE ARGS...: runs sidecarctl against DEVICE's services, showing it
# (stdout indented; stderr, e.g. fetch progress, as it comes).
ctl() {
  local device="$1"
  shift
  printf '%s[%s] $ sidecarctl %s%s\n' "$DIM" "$device" "$*" "$RESET"
  "$CTL_BIN" --availability="${ADDR[$device]}" --transfer="${XFER[$device]}" \
    "$@" | sed -u 's/^/    /'
  return "${PIPESTATUS[0]}"
}

# quiet_ctl DEVICE ARGS...: the same without showing anything.
quiet_ctl() {
  local device="$1"
  shift
  "$CTL_BIN" --availability="${ADDR[$device]}" --transfer="${XFER[$device]}" \
    "$@" 2>/dev/null
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

# make_webp FILE TEXT [PAD]: writes a real 1x1 WebP (extended format: a VP8L
# image plus an XMP chunk carrying TEXT, so that every thumbnail has its own
# bytes, and PAD spaces, to make the file bigger) to FILE.
le32() {
  local n="$1"
  printf '%b' "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((n & 255)) \
    $(((n >> 8) & 255)) $(((n >> 16) & 255)) $(((n >> 24) & 255)))"
}
make_webp() {
  local file="$1" text="$2" padding=""
  [[ -n "${3:-}" ]] && printf -v padding '%*s' "$3" ''
  local xmp="<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><!-- $text$padding --></x:xmpmeta>"
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
  say "this takes a few minutes the first time; log: $SHOWN/build.log"
  if ! scripts/build.sh sidecar-availability sidecar-transfer sidecarctl \
    >"$DEMO/build.log" 2>&1; then
    tail -n 30 "$DEMO/build.log" >&2
    die "the build failed; log above ($SHOWN/build.log)"
  fi
else
  step "Using the existing build (SKIP_BUILD=1)"
fi
[[ -x "$AVAILABILITY_BIN" ]] || die "missing $AVAILABILITY_BIN (build failed?)"
[[ -x "$TRANSFER_BIN" ]] || die "missing $TRANSFER_BIN (build failed?)"
[[ -x "$CTL_BIN" ]] || die "missing $CTL_BIN (build failed?)"
say "built $(basename "$AVAILABILITY_BIN"), $(basename "$TRANSFER_BIN") and $(basename "$CTL_BIN")"

# ---- 2. PostgreSQL -----------------------------------------------------------

step "Starting a private PostgreSQL with two databases per device"
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
for db in dev_a dev_b dev_c xfer_desktop xfer_laptop xfer_server; do
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"
done
say "PostgreSQL 15 on 127.0.0.1:$PG_PORT with databases dev_a, dev_b, dev_c"
say "(availability) and xfer_desktop, xfer_laptop, xfer_server (transfer jobs)"

# ---- 3. three devices --------------------------------------------------------

step "Starting the availability and transfer services of three devices"
declare -A DB=([desktop]=dev_a [laptop]=dev_b [server]=dev_c)
declare -A PEERS_OF=([desktop]="laptop" [laptop]="desktop server" [server]="laptop")
# The laptop's fetches are held to 64 KiB/s, so that the fetch below takes a
# few seconds and its progress can be seen.
declare -A XFER_FLAGS=([laptop]="--bandwidth_limit=65536 --chunk_bytes=65536")
port=""
for device in desktop laptop server; do
  free_port port
  ADDR[$device]="127.0.0.1:$port"
  free_port port
  XFER[$device]="127.0.0.1:$port"
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
    --transfer_address="${XFER[$device]}" \
    --port_file="$DEMO/$device/port" \
    >"$DEMO/$device.log" 2>&1 &
  PID[$device]=$!
  rm -f "$DEMO/$device/xfer_port"
  # shellcheck disable=SC2086  # XFER_FLAGS holds several flags
  "$TRANSFER_BIN" \
    --listen="${XFER[$device]}" \
    --db="host=127.0.0.1 port=$PG_PORT dbname=xfer_$device user=postgres" \
    --sidecar_root="$DEMO/$device/sidecars" \
    --availability="${ADDR[$device]}" \
    --port_file="$DEMO/$device/xfer_port" \
    --prefetch_kinds= \
    ${XFER_FLAGS[$device]:-} \
    >"$DEMO/${device}_xfer.log" 2>&1 &
  PID[${device}_xfer]=$!
}
# wait_started NAME PORT_FILE LOG: waits for a service to write its port file.
wait_started() {
  local name="$1" port_file="$2" log="$3"
  for _ in $(seq 1 150); do
    [[ -s "$port_file" ]] && return 0
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      tail -n 20 "$log" >&2 || true
      die "$name exited; log above ($log)"
    fi
    sleep 0.2
  done
  die "$name did not start in 30s (log: $log)"
}
for device in desktop laptop server; do
  start_device "$device"
done
for device in desktop laptop server; do
  wait_started "$device" "$DEMO/$device/port" "$DEMO/$device.log"
  wait_started "${device}_xfer" "$DEMO/$device/xfer_port" "$DEMO/${device}_xfer.log"
  say "$(printf '%-8s' "$device") availability on ${ADDR[$device]}, peers: ${PEERS_OF[$device]// /, }" \
    "(database ${DB[$device]}, log $SHOWN/$device.log)"
  say "         transfer on ${XFER[$device]} (database xfer_$device," \
    "log $SHOWN/${device}_xfer.log)${XFER_FLAGS[$device]:+, ${XFER_FLAGS[$device]}}"
done
say "each transfer service uses its device's sidecar root and availability"
say "service; each availability service tells peers its transfer address."
say "the periodic gossip round is every 5 minutes, so what follows travels by"
say "prompt gossip (--prompt_delay=200ms after a change), not by that round."
ctl desktop device

step "The server watches for availability changes (in the background)"
"$CTL_BIN" --availability="${ADDR[server]}" watch --remote \
  >"$DEMO/server-watch.log" 2>&1 &
WATCH_PID=$!
say "\$ sidecarctl watch --remote  > $SHOWN/server-watch.log"

# ---- 4. the desktop makes thumbnails -----------------------------------------

step "The desktop generates thumbnails for three photos and registers them"
PHOTOS=(
  "7d9f3c2e-1a4b-4c8d-9e6f-0a1b2c3d4e5f beach.jpg"
  "b52e8a10-3c7d-4e9f-8a1b-2c3d4e5f6a7b mountain.jpg"
  "e0c4a9d8-5b6a-4f3e-9d2c-1b0a9f8e7d6c birthday.jpg"
)
URIS=()
pad=$((256 * 1024))  # only the first grid@2x: the one fetched later
for photo in "${PHOTOS[@]}"; do
  read -r uuid title <<<"$photo"
  for variant in icon@1x grid@2x; do
    rel="$(thumb_path "$uuid" "$variant")"
    if [[ "$variant" == grid@2x ]]; then
      make_webp "$DEMO/desktop/sidecars/$rel" "$title $variant" "$pad"
      pad=""
    else
      make_webp "$DEMO/desktop/sidecars/$rel" "$title $variant"
    fi
    URIS+=("sidecar://$uuid/thumbs/$variant.webp")
  done
done
say "wrote ${#URIS[@]} WebP files under $SHOWN/desktop/sidecars/content/...;"
say "the beach photo's grid@2x carries 256 KiB of padding in its XMP chunk so"
say "that fetching it later takes long enough to watch."
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

# ---- 6. the laptop fetches a thumbnail ---------------------------------------

step "The laptop fetches the beach photo's grid thumbnail from the desktop"
say "sidecarctl fetch asks the laptop's transfer service, which resolves the"
say "sidecar (REMOTE: the desktop has it), queues a job, reads the file from the"
say "desktop's transfer service, checks it against its SHA-256, renames it into"
say "place and registers it READY with the laptop's availability service."
say "Progress goes to stderr (a bar on a terminal, else a line a second; a job"
say "the service runs in its batch lane for small kinds shows no byte count,"
say "only its end); the laptop's --bandwidth_limit holds the transfer to 64 KiB/s"
say "after a first second's burst:"
ctl laptop fetch "${URIS[1]}" --priority=interactive ||
  die "the fetch did not end DONE (exit $?)"
rel="$(thumb_path "${PHOTOS[0]%% *}" grid@2x)"
say "\$ cmp desktop/sidecars/$rel laptop/sidecars/$rel"
cmp "$DEMO/desktop/sidecars/$rel" "$DEMO/laptop/sidecars/$rel" ||
  die "the laptop's copy differs from the desktop's"
say "identical: $(sha256sum "$DEMO/laptop/sidecars/$rel" | cut -c1-16)... on both, $(stat -c %s "$DEMO/laptop/sidecars/$rel") bytes"
ctl laptop jobs
say "the laptop now has it itself:"
ctl laptop resolve "${URIS[1]}"
say "and, since the laptop registered it READY, gossip tells the server that"
say "both devices hold it:"
both_hold() {
  quiet_ctl server who-has "${URIS[1]}" |
    awk '/desktop/ { d = 1 } /laptop/ { l = 1 } END { exit !(d && l) }'
}
wait_for 30 "the server knows the laptop has it too" both_hold
ctl server who-has "${URIS[1]}"

# ---- 7. the desktop goes away ------------------------------------------------

step "The desktop shuts down"
for name in desktop_xfer desktop; do
  kill -TERM "${PID[$name]}"
  wait "${PID[$name]}" 2>/dev/null || true
  unset "PID[$name]"
done
say "stopped (both its services); the laptop pings every 1s and marks a peer"
say "offline after 3s of silence"
desktop_offline() {
  quiet_ctl laptop peers | awk '$1 == "desktop" && $4 == "offline" { found = 1 } END { exit !found }'
}
wait_for 30 "the laptop marks the desktop offline" desktop_offline
ctl laptop peers
say "the beach photo's icon (the laptop did not fetch it):"
ctl laptop who-has "${URIS[0]}"
say "its only holder is offline, so resolve answers GENERATE, and with"
say "--mode=fetch-only (never generate) UNAVAILABLE:"
ctl laptop resolve "${URIS[0]}"
ctl laptop resolve "${URIS[0]}" --mode=fetch-only
say "and the transfer service, asked to fetch it, says the same (exit 3):"
rc=0
ctl laptop fetch "${URIS[0]}" || rc=$?
[[ $rc -eq 3 ]] || die "fetch of a sidecar only an offline device has exited $rc, not 3"

step "Done: stopping the services and PostgreSQL"
