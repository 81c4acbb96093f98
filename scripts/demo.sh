#!/usr/bin/env bash
# The sidecar-sync demo: three devices of one person on this machine.
#
#   desktop <-> laptop <-> server      (paired; desktop and server are not)
#
# Installs dependencies, builds, starts a private PostgreSQL (two databases per
# device: availability and transfer) and, per device, an availability and a
# transfer service with its own state directory (device key, local API
# sockets), then uses sidecarctl to pair the devices as a person would (a
# code from `sidecarctl pair invite` on one, `sidecarctl pair join` on the
# other: the laptop with the desktop, the server with the laptop) and to
# show the desktop's new thumbnails becoming known on the laptop and,
# through the laptop's gossip, on the server; how each device resolves them;
# the laptop fetching one from the desktop (verified, byte for byte); and
# the laptop noticing when the desktop goes away. Everything it starts is
# stopped when it exits, also on failure or Ctrl-C. Data, state and logs stay
# in .demo/.
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

declare -A STATE=()  # device name -> its state directory (key, sockets)
declare -A ADDR=()   # device name -> host:port of its availability peer listener
declare -A XFER=()   # device name -> host:port of its transfer peer listener

# ctl DEVICE ARGS...: runs sidecarctl against DEVICE's services (their local
# API sockets in its state directory), showing it (stdout indented; stderr,
# e.g. fetch progress, as it comes). Its stdout is also kept in $DEMO/ctl.out.
ctl() {
  local device="$1"
  shift
  printf '%s[%s] $ sidecarctl %s%s\n' "$DIM" "$device" "$*" "$RESET"
  SIDECAR_STATE_DIR="${STATE[$device]}" "$CTL_BIN" "$@" |
    tee "$DEMO/ctl.out" | sed -u 's/^/    /'
  return "${PIPESTATUS[0]}"
}

# quiet_ctl DEVICE ARGS...: the same without showing anything.
quiet_ctl() {
  local device="$1"
  shift
  SIDECAR_STATE_DIR="${STATE[$device]}" "$CTL_BIN" "$@" 2>/dev/null
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
as_pg_owner "$PG_BIN/initdb" -D "$PG_DIR/data" --username=postgres \
  --auth=trust --encoding=UTF8 --no-locale >"$DEMO/initdb.log" 2>&1 ||
  die "initdb failed; see $DEMO/initdb.log"
# Only a unix socket in $PG_DIR, no TCP port: nothing else on the machine
# can be in the way.
# Set before starting: a Ctrl-C while pg_ctl waits must still stop the server.
PG_STARTED=1
as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
  -o "-k $PG_DIR -c listen_addresses=''" start >/dev/null 8>&- 9>&- ||
  die "PostgreSQL did not start; see $PG_DIR/server.log"
for db in dev_a dev_b dev_c xfer_desktop xfer_laptop xfer_server; do
  "$PG_BIN/createdb" -h "$PG_DIR" -U postgres "$db"
done
say "PostgreSQL 15 on a unix socket in ${PG_DIR#"$REPO"/} with databases dev_a, dev_b,"
say "dev_c (availability) and xfer_desktop, xfer_laptop, xfer_server (transfer jobs)"

# ---- 3. three devices --------------------------------------------------------

step "Starting the availability and transfer services of three devices"
declare -A DB=([desktop]=dev_a [laptop]=dev_b [server]=dev_c)
# The laptop's fetches are held to 64 KiB/s, so that the fetch below takes a
# few seconds and its progress can be seen.
declare -A XFER_FLAGS=([laptop]="--bandwidth_limit=65536 --chunk_bytes=65536")
for device in desktop laptop server; do
  STATE[$device]="$DEMO/$device/state"
done
# A unix socket's path has at most 107 bytes.
sock="${STATE[desktop]}/availability.sock"
((${#sock} <= 107)) ||
  die "$sock is too long for a unix socket; set DEMO_DIR to a shorter directory"
# start_availability DEVICE: its peer listener on a port the kernel picks,
# its local API on the socket in its state directory, where it also makes
# the device key on this first start.
start_availability() {
  local device="$1"
  mkdir -p "$DEMO/$device/sidecars"
  rm -f "$DEMO/$device/port"
  "$AVAILABILITY_BIN" \
    --state_dir="${STATE[$device]}" \
    --listen=127.0.0.1:0 \
    --db="host=$PG_DIR dbname=${DB[$device]} user=postgres" \
    --name="$device" \
    --sidecar_root="$DEMO/$device/sidecars" \
    --gossip_interval=5m \
    --prompt_delay=200ms \
    --ping_interval=1s \
    --offline_after=3s \
    --port_file="$DEMO/$device/port" \
    >"$DEMO/$device.log" 2>&1 &
  PID[$device]=$!
}
# start_transfer DEVICE: after the availability service (it needs the key);
# reaches it at its socket and tells it its own peer address.
start_transfer() {
  local device="$1"
  rm -f "$DEMO/$device/xfer_port"
  # shellcheck disable=SC2086  # XFER_FLAGS holds several flags
  "$TRANSFER_BIN" \
    --state_dir="${STATE[$device]}" \
    --listen=127.0.0.1:0 \
    --db="host=$PG_DIR dbname=xfer_$device user=postgres" \
    --sidecar_root="$DEMO/$device/sidecars" \
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
  start_availability "$device"
done
for device in desktop laptop server; do
  wait_started "$device" "$DEMO/$device/port" "$DEMO/$device.log"
  ADDR[$device]="127.0.0.1:$(cat "$DEMO/$device/port")"
  start_transfer "$device"
done
for device in desktop laptop server; do
  wait_started "${device}_xfer" "$DEMO/$device/xfer_port" "$DEMO/${device}_xfer.log"
  XFER[$device]="127.0.0.1:$(cat "$DEMO/$device/xfer_port")"
  say "$(printf '%-8s' "$device") availability: peers on ${ADDR[$device]} (mutual TLS)," \
    "database ${DB[$device]}, log $SHOWN/$device.log"
  say "         transfer: peers on ${XFER[$device]}, database xfer_$device," \
    "log $SHOWN/${device}_xfer.log${XFER_FLAGS[$device]:+, ${XFER_FLAGS[$device]}}"
  say "         state (device key, local API sockets): $SHOWN/$device/state/"
done
say "each availability service made its device's key (device.key, device.crt)"
say "in its state directory on this first start; the transfer service uses the"
say "same key, reaches its availability service at the socket there and tells"
say "it its own address. The ports are the kernel's choice (--listen=127.0.0.1:0)."
say "sidecarctl finds a device's services through its state directory; below,"
say "[DEVICE] runs it with SIDECAR_STATE_DIR=$SHOWN/DEVICE/state."
say "the periodic gossip round is every 5 minutes, so what follows travels by"
say "prompt gossip (--prompt_delay=200ms after a change), not by that round."
ctl desktop device

# ---- 4. pairing --------------------------------------------------------------

# invite_code: the code and address in the `pair invite` output just shown.
invite_code() {
  read -r CODE JOIN_ADDR < <(sed -nE 's/^  sidecarctl pair join ([0-9A-Z-]+) ([^ ]+)$/\1 \2/p' "$DEMO/ctl.out")
  [[ -n "${CODE:-}" && -n "${JOIN_ADDR:-}" ]] || die "pair invite printed no code and address"
}

step "Pairing: the laptop joins the desktop"
say "so far each device is a library of its own and refuses the others. On the"
say "desktop, a one-time pairing code (valid 10 minutes, for one device):"
ctl desktop pair invite || die "pair invite failed"
invite_code
say "on the laptop, the command the desktop printed:"
ctl laptop pair join "$CODE" "$JOIN_ADDR" || die "pair join failed"
say "the laptop first checked that the device at that address holds the key the"
say "code names (a man in the middle would have been caught there, before anything"
say "was sent); then each proved that it knows the code, without sending it."

step "Pairing: the server joins the laptop"
ctl laptop pair invite || die "pair invite failed"
invite_code
ctl server pair join "$CODE" "$JOIN_ADDR" || die "pair join failed"
say "the server is paired with the laptop only. The laptop signed its"
say "introduction, and gossip carries it to the desktop, which accepts it since"
say "the laptop is a member:"
# ...and the laptop's introduction of the desktop (below) has reached it too.
desktop_knows_server() {
  quiet_ctl desktop devices |
    awk '$1 == "server" { s = 1 } $1 == "desktop" && $4 == "laptop" { d = 1 }
         END { exit !(s && d) }'
}
wait_for 30 "the desktop lists the server" desktop_knows_server
ctl desktop devices
say "ADMITTED BY names the device that signed each one's introduction. The"
say "desktop founded the library; its first joiner, the laptop, vouched for it."

step "The server watches for availability changes (in the background)"
SIDECAR_STATE_DIR="${STATE[server]}" "$CTL_BIN" watch --remote \
  >"$DEMO/server-watch.log" 2>&1 &
WATCH_PID=$!
say "\$ sidecarctl watch --remote  > $SHOWN/server-watch.log"

# ---- 5. the desktop makes thumbnails -----------------------------------------

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

# ---- 6. the news spreads -----------------------------------------------------

step "The news spreads: to the laptop, and through it to the server"
say "each change starts a prompt gossip round (after --prompt_delay). The server"
say "is paired with the laptop only, but gossip carries every device's entries"
say "with its address, and the desktop is a member it knows (through the"
say "laptop), so it talks to the desktop directly too: news may reach it"
say "either way."
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
say "the server never paired with the desktop, yet would fetch from it: it"
say "learned the desktop's membership and address through the laptop and, since"
say "--contact_learned_peers is on by default, pings it itself to know whether"
say "it is online (FROM library in its peer table below: learned through the library; paired: paired directly)."

step "Peers as each device sees them"
ctl laptop peers
ctl server peers

step "What the server's watch saw"
# TERM, not INT: background jobs of a script start with SIGINT ignored.
kill -TERM "$WATCH_PID" 2>/dev/null || true
wait "$WATCH_PID" 2>/dev/null || true
WATCH_PID=""
sed 's/^/    /' "$DEMO/server-watch.log"

# ---- 7. the laptop fetches a thumbnail ---------------------------------------

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

# ---- 8. the desktop goes away ------------------------------------------------

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
