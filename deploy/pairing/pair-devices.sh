#!/bin/bash
# The one-shot pairing step of the docker-compose cluster (the "pairing"
# service of docker-compose.yml): pairs the devices, each through the local
# API of its availability service, a unix socket in its state directory.
#
#   pair-devices.sh JOINER:INVITER:ADDRESS...
#
# For each JOINER:INVITER:ADDRESS, in order: "sidecarctl pair invite" on
# INVITER, then "sidecarctl pair join CODE ADDRESS" on JOINER (ADDRESS: the
# inviter's availability peer listener, host:port on the mesh network). A
# joiner that "sidecarctl devices" already shows paired (2 or more devices
# in its library) is skipped, so a second "up" changes nothing. Then it waits
# until every device's library lists every device (membership spreads by
# gossip: pairing laptop with desktop and homeserver with laptop is enough).
#
# Device D's state directory is $PAIRING_STATE_ROOT/D (default /state/D).
# PAIRING_WAIT (seconds, default 120): how long to wait for a device's
# availability socket, and for the libraries to agree.
# Exit status: 0 paired (or already), 1 otherwise. Everything it runs and
# prints goes to stdout: "docker-compose logs pairing".
set -uo pipefail

STATE_ROOT="${PAIRING_STATE_ROOT:-/state}"
WAIT="${PAIRING_WAIT:-120}"
T0=$SECONDS

log() { printf '[pairing %3ds] %s\n' $((SECONDS - T0)) "$*"; }
fail() {
  log "FAILED: $*"
  exit 1
}

# ctl DEVICE ARGS...: sidecarctl against DEVICE's local sockets.
ctl() {
  local dev="$1"
  shift
  sidecarctl --state_dir="$STATE_ROOT/$dev" "$@"
}
# shown DEVICE ARGS...: ctl, with the command and its output in the log;
# the output is also left in $OUT.
OUT=""
shown() {
  local dev="$1" rc
  shift
  log "$dev\$ sidecarctl --state_dir=$STATE_ROOT/$dev $*"
  OUT="$(ctl "$dev" "$@" 2>&1)"
  rc=$?
  [[ -n "$OUT" ]] && printf '%s\n' "$OUT" | sed 's/^/    /'
  return $rc
}

# members DEVICE: how many devices DEVICE's library lists (0 if none).
members() {
  local n
  n="$(ctl "$1" devices 2>/dev/null |
    sed -n 's/^\([0-9][0-9]*\) devices* in the library.*/\1/p' | tail -n 1)"
  echo "${n:-0}"
}

wait_up() {
  local dev="$1" end=$((SECONDS + WAIT))
  until ctl "$dev" devices >/dev/null 2>&1; do
    if ((SECONDS >= end)); then
      shown "$dev" devices
      fail "$dev's availability service does not answer at" \
        "unix:$STATE_ROOT/$dev/availability.sock after ${WAIT}s"
    fi
    sleep 1
  done
}

(($# > 0)) || fail "usage: pair-devices.sh JOINER:INVITER:HOST:PORT..."
declare -a ALL=()
add_device() {
  local d
  for d in "${ALL[@]}"; do [[ "$d" == "$1" ]] && return; done
  ALL+=("$1")
}
for spec in "$@"; do
  IFS=: read -r joiner inviter address <<<"$spec"
  [[ -n "$joiner" && -n "$inviter" && "$address" == *:* ]] ||
    fail "bad pair \"$spec\": want JOINER:INVITER:HOST:PORT"
  add_device "$inviter"
  add_device "$joiner"
done

log "devices: ${ALL[*]}; waiting for their availability sockets"
for d in "${ALL[@]}"; do wait_up "$d"; done
log "all ${#ALL[@]} availability services answer"

for spec in "$@"; do
  IFS=: read -r joiner inviter address <<<"$spec"
  n="$(members "$joiner")"
  if ((n >= 2)); then
    log "$joiner is already paired ($n devices in its library): skipped"
    continue
  fi
  log "pairing $joiner with $inviter (reached at $address)"
  shown "$inviter" pair invite --ttl=5m || fail "pair invite on $inviter failed"
  code="$(awk '/^pairing code:/ { print $3; exit }' <<<"$OUT")"
  [[ -n "$code" ]] || fail "no pairing code in the output of pair invite on $inviter"
  shown "$joiner" pair join "$code" "$address" ||
    fail "pair join on $joiner (with $inviter at $address) failed"
done

log "waiting until every device's library lists all ${#ALL[@]} devices"
end=$((SECONDS + WAIT))
while :; do
  behind=()
  for d in "${ALL[@]}"; do
    (($(members "$d") >= ${#ALL[@]})) || behind+=("$d")
  done
  ((${#behind[@]} == 0)) && break
  if ((SECONDS >= end)); then
    for d in "${behind[@]}"; do shown "$d" devices; done
    fail "after ${WAIT}s, not every device knows all ${#ALL[@]}: ${behind[*]}"
  fi
  sleep 1
done
for d in "${ALL[@]}"; do shown "$d" devices; done
log "done: ${#ALL[@]} devices paired"
exit 0
