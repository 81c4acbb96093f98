#!/usr/bin/env bash
# The docker-compose cluster test: brings up the three-device cluster of
# docker-compose.yml (desktop, laptop, homeserver) and drives it from outside
# the containers, with sidecarctl run by "docker exec" in each device's
# availability container, against the local API sockets in the device's
# state directory (so all traffic stays in the containers and on the compose
# networks).
#
#   0. Start-up and mutual TLS: the one-shot "pairing" service exits 0 (its
#      log shows the pair invite / pair join commands); "sidecarctl devices"
#      on each device lists 3 devices, the desktop and the home server having
#      learned of each other by gossip; both containers of a device share
#      one device key (0600); a plaintext gRPC call (health probe, sidecarctl)
#      aimed at a peer listener over mesh fails although the port is open;
#      the local APIs are unix sockets, and the only TCP ports the service
#      containers listen on are the peer listeners (7100, 7200).
#   1. Scenario 1: the desktop generates real WebP thumbnails and registers
#      them; the laptop learns of them, resolves them REMOTE and fetches them:
#      identical bytes.
#   2. Scenario 2: the desktop and the home server both hold a sidecar; the
#      laptop's resolve lists both, and the fetch comes from the first (best).
#   3. A large sidecar is fetched by the laptop (its transfer service held to
#      CLUSTER_LAPTOP_BANDWIDTH_LIMIT): the laptop's transfer container is
#      killed in the middle and started again, and the job resumes and ends
#      DONE; then the same with the serving side (the home server's transfer
#      container) killed in the middle.
#   4. The laptop is disconnected from the "mesh" network (docker network
#      disconnect): the desktop and the home server mark it offline; once
#      reconnected, online again.
#   5. A second "docker-compose up" (volumes kept): the pairing step runs
#      again, skips the devices already paired and exits 0.
# Prometheus (the compose file's "prometheus", deploy/prometheus), through its
# HTTP API on 127.0.0.1 (curl and jq): after start-up, all six services are
# scraped ("up") with their device labels and the rules are loaded; the
# metrics port (9464) is on the devices' monitoring networks, not on mesh;
# after scenarios 1 and 2, the laptop's received bytes (per source) and its
# fetch jobs ended DONE match what the scenarios fetched; during the
# partition (4), the desktop's and the home server's sidecar_peer_up for the
# laptop is 0 and the alert SidecarDeviceOffline fires for it, and once the
# laptop is back, peer_up is 1 again and no such alert is left.
# Everything it started is removed when it exits (trap), also on failure.
#
# Needs a running Docker engine, docker-compose 1.29 and the base image
# debian:bookworm-slim (scripts/cluster-test.sh provides all three).
# Needs curl and jq on the host (scripts/cluster-test.sh installs them).
# Environment: CLUSTER_PROJECT (compose project name, default
# sidecar-cluster-test), CLUSTER_KEEP=1 (leave the cluster up after a failure,
# for a look), CLUSTER_NO_BUILD=1 (use the images as they are).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

PROJECT="${CLUSTER_PROJECT:-sidecar-cluster-test}"
# Debian's docker CLI matches the engine scripts/cluster-test.sh starts.
if [[ -z "${DOCKER:-}" ]]; then
  if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
DC=(docker-compose --no-ansi -p "$PROJECT" -f "$ROOT/docker-compose.yml")
WORK="$(mktemp -d /tmp/sidecar-cluster.XXXXXX)"

# Faster liveness than the defaults, so that offline/online take seconds; the
# laptop's fetches are held to 2 MiB/s so that a 16 MiB fetch takes ~8 s.
# The values are the compose file's variables (see docker-compose.yml).
export CLUSTER_PING_INTERVAL=1s CLUSTER_OFFLINE_AFTER=4s
export CLUSTER_PROMPT_DELAY=200ms CLUSTER_GOSSIP_INTERVAL=5m
export CLUSTER_LAPTOP_BANDWIDTH_LIMIT=2097152 CLUSTER_MAX_ATTEMPTS=12
# No prefetch: the scenarios fetch on request, so each step is deterministic
# (with the default, thumbnails would spread to every device by themselves).
export CLUSTER_PREFETCH_KINDS=""
export CLUSTER_BIND=127.0.0.1
# Prometheus on any free host port ("docker-compose port prometheus 9090"),
# scraping every second; SidecarDeviceOffline fires 3s after a device is
# seen offline.
export CLUSTER_PROMETHEUS_PORT="" CLUSTER_SCRAPE_INTERVAL=1s
export CLUSTER_ALERT_OFFLINE_FOR=3s CLUSTER_ALERT_PREFETCH_STUCK_FOR=10m
for tool in curl jq; do
  command -v "$tool" >/dev/null || {
    echo "cluster_test.sh: $tool is missing (apt-get install $tool)" >&2
    exit 1
  }
done

DEVICES=(desktop laptop homeserver)
STORE=/var/lib/sidecar
# The device's state directory (a volume shared by its two service
# containers): device key and certificate, local API sockets.
STATE=/var/lib/sidecar-state
T0=$SECONDS

say() { printf '[cluster %4ds] %s\n' $((SECONDS - T0)) "$*"; }
step() { printf '\n[cluster %4ds] ==== %s\n' $((SECONDS - T0)) "$*"; }
die() {
  printf '[cluster %4ds] FAIL: %s\n' $((SECONDS - T0)) "$*" >&2
  exit 1
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ $rc -ne 0 ]]; then
    say "failed (exit $rc); state and recent logs:" >&2
    "${DC[@]}" ps >&2 || true
    "${DC[@]}" logs --no-color --tail=25 >&2 || true
  fi
  if [[ $rc -ne 0 && "${CLUSTER_KEEP:-0}" == 1 ]]; then
    say "CLUSTER_KEEP=1: leaving project $PROJECT up" \
      "(docker-compose -p $PROJECT down -v to remove it)"
  else
    say "tearing down project $PROJECT"
    "${DC[@]}" down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# container SERVICE: the id of a service's container.
container() {
  local id
  id="$("${DC[@]}" ps -q "$1")"
  [[ -n "$id" ]] || die "no container for service $1"
  echo "$id"
}
declare -A CID=()
refresh_ids() {
  local d s
  for d in "${DEVICES[@]}"; do
    for s in db availability transfer; do
      CID[$d-$s]="$(container "$d-$s")"
    done
  done
}

# ctl DEVICE ARGS...: sidecarctl in the device's availability container, on
# the local sockets unix:$STATE/availability.sock and unix:$STATE/transfer.sock.
ctl() {
  local dev="$1"
  shift
  "$DOCKER" exec "${CID[$dev-availability]}" sidecarctl --state_dir="$STATE" "$@"
}
# show DEVICE ARGS...: like ctl, echoing the command and indenting the output.
show() {
  local dev="$1"
  shift
  say "$dev\$ sidecarctl $*"
  ctl "$dev" "$@" 2>&1 | sed 's/^/      /'
  return "${PIPESTATUS[0]}"
}
# in_store DEVICE CMD...: a shell command in the device's store.
in_store() {
  local dev="$1"
  shift
  "$DOCKER" exec -i -w "$STORE" "${CID[$dev-availability]}" sh -c "$*"
}
# put DEVICE RELPATH < DATA: writes a file into the device's store.
put() {
  "$DOCKER" exec -i "${CID[$1-availability]}" sh -c \
    'mkdir -p "$(dirname "$1")" && cat >"$1"' sh "$STORE/$2"
}
sha_of() { in_store "$1" "sha256sum '$2' | cut -d' ' -f1"; }

# wait_for SECONDS WHAT CMD...: polls CMD every half second.
wait_for() {
  local timeout="$1" what="$2"
  shift 2
  local end=$((SECONDS + timeout))
  while ! "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || die "timed out after ${timeout}s waiting: $what"
    sleep 0.5
  done
  say "ok: $what"
}

health_of() { "$DOCKER" inspect -f '{{.State.Health.Status}}' "$1"; }
all_healthy() {
  local d s
  for d in "${DEVICES[@]}"; do
    for s in db availability transfer; do
      [[ "$(health_of "${CID[$d-$s]}")" == healthy ]] || return 1
    done
  done
}
healthy() { [[ "$(health_of "${CID[$1]}")" == healthy ]]; }
healthy_cid() { [[ "$(health_of "$1")" == healthy ]]; }
exited() { [[ "$("$DOCKER" inspect -f '{{.State.Status}}' "$1")" == exited ]]; }

# members DEVICE: how many devices DEVICE's library lists.
members() {
  ctl "$1" devices | sed -n 's/^\([0-9][0-9]*\) devices* in the library.*/\1/p'
}
members_are() { [[ "$(members "$1")" == "$2" ]]; }

# tcp_listen_ports CONTAINER: the TCP ports the container listens on (any
# address, IPv4 and IPv6), from /proc/net/tcp{,6}, sorted, one a line;
# without Docker's embedded DNS resolver, which listens on 127.0.0.11.
tcp_listen_ports() {
  "$DOCKER" exec "$1" cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    awk '$4 == "0A" { split($2, a, ":"); if (a[1] != "0B00007F") print a[2] }' |
    while read -r hex; do echo $((16#$hex)); done | sort -un
}

# peer_state OBSERVER NAME: online/offline as OBSERVER's peer table says.
peer_state() {
  ctl "$1" peers | awk -v n="$2" '$1 == n && !found { print $4; found = 1 }'
}
peer_is() { [[ "$(peer_state "$1" "$2")" == "$3" ]]; }

# holds OBSERVER URI DEVICE: OBSERVER's who-has lists DEVICE as a holder.
holds() { ctl "$1" who-has "$2" | grep "^  *$3 " >/dev/null; }

# layout URI: the layout path of a sidecar URI (content/h0/h1/uuid/dir/file).
layout() {
  local rest="${1#sidecar://}" uuid hex
  uuid="${rest%%/*}"
  hex="${uuid//-/}"
  echo "content/${hex:0:2}/${hex:2:2}/$rest"
}

# ---- Prometheus ----------------------------------------------------------------

PROM=""  # http://127.0.0.1:PORT, once the cluster is up
# prom_get PATH [CURL ARGS...]: a GET of Prometheus's HTTP API; the JSON
# answer on stdout, or a failure (not "success", or no answer in 5s).
prom_get() {
  local path="$1" out
  shift
  out="$(curl -sS --fail --max-time 5 -G "$PROM$path" "$@")" || return 1
  [[ "$(jq -r .status <<<"$out")" == success ]] || return 1
  printf '%s\n' "$out"
}
# prom_value EXPR: the value of a query that gives one series (e.g. a
# sum(...)); fails when it gives none or several.
prom_value() {
  local out
  out="$(prom_get /api/v1/query --data-urlencode "query=$1")" || return 1
  jq -re 'if (.data.result | length) == 1 then .data.result[0].value[1]
          else error("not one series") end' <<<"$out"
}
# prom_is EXPR OP NUMBER: EXPR's value compares so (OP: == >= <= > <).
prom_is() {
  local v
  v="$(prom_value "$1")" || return 1
  case "$2" in
    "==" | ">=" | "<=" | ">" | "<") ;;
    *) die "prom_is: no operator $2" ;;
  esac
  awk -v v="$v" -v n="$3" "BEGIN { exit !((v + 0) $2 (n + 0)) }"
}
# targets_up N: Prometheus has N active targets, all of them up.
targets_up() {
  local out
  out="$(prom_get /api/v1/targets --data-urlencode state=active)" || return 1
  jq -e --argjson n "$1" '(.data.activeTargets | length) == $n and
    all(.data.activeTargets[]; .health == "up")' <<<"$out" >/dev/null
}
# alert_state NAME LABEL=VALUE...: the state (pending, firing) of the alert
# NAME whose labels include all those given, or nothing.
alert_state() {
  local name="$1" out sel
  shift
  sel='{}'
  if (($#)); then
    sel="$(printf '%s\n' "$@" | jq -R 'split("=") | {(.[0]): (.[1:] | join("="))}' | jq -s add)"
  fi
  out="$(prom_get /api/v1/alerts)" || return 1
  jq -r --arg name "$name" --argjson sel "$sel" '[.data.alerts[] |
    select(.labels.alertname == $name and
           (.labels as $l | all($sel | to_entries[]; $l[.key] == .value)))
    | .state] | first // empty' <<<"$out"
}
alert_is() {
  local want="$1" st
  shift
  st="$(alert_state "$@")" || return 1
  [[ " $want " == *" $st "* && -n "$st" ]]
}
no_alert() {
  local st
  st="$(alert_state "$@")" || return 1
  [[ -z "$st" ]]
}
# device_id DEVICE: the full device id of DEVICE (the label device_id of
# sidecar_peer_up), from its own library's member list.
device_id() {
  ctl "$1" devices --json |
    jq -r --arg n "$1" 'first(.. | objects | select(.name? == $n) |
      (.deviceId // .device_id // empty))'
}

# ---- real thumbnails ---------------------------------------------------------

# make_thumb OUT W H R G B: a W x H WebP of a gradient around colour R,G,B
# (a picture encoded by cwebp, from Debian's "webp"); without cwebp, a
# one-pixel lossless WebP carrying the same parameters in an XMP chunk.
make_thumb() {
  local out="$1" w="$2" h="$3" r="$4" g="$5" b="$6"
  if command -v cwebp >/dev/null; then
    # A binary PPM (P6) from perl (perl-base is always there), then cwebp.
    perl -e 'my ($w, $h, $r, $g, $b) = @ARGV;
      print "P6\n$w $h\n255\n";
      for my $y (0 .. $h - 1) {
        print pack("C*", map { (($r + $_ * 255 / $w) % 256,
                                ($g + $y * 255 / $h) % 256,
                                ($b + ($_ + $y) * 2) % 256) } 0 .. $w - 1);
      }' "$w" "$h" "$r" "$g" "$b" >"$WORK/pic.ppm"
    cwebp -quiet -q 80 "$WORK/pic.ppm" -o "$out"
  else
    local xmp="<x:xmpmeta xmlns:x='adobe:ns:meta/'>${w}x${h} $r $g $b</x:xmpmeta>"
    ((${#xmp} % 2 == 1)) && xmp+=" "
    le32() { printf "\\x$(printf %02x $(($1 & 255)))\\x$(printf %02x $((($1 >> 8) & 255)))\\x$(printf %02x $((($1 >> 16) & 255)))\\x$(printf %02x $((($1 >> 24) & 255)))"; }
    {
      printf 'RIFF'; le32 $((4 + 18 + 22 + 8 + ${#xmp})); printf 'WEBP'
      printf 'VP8X'; le32 10; printf '\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00'
      printf 'VP8L'; le32 13
      printf '\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00'
      printf 'XMP '; le32 ${#xmp}; printf '%s' "$xmp"
    } >"$out"
  fi
}

# ---- 0. build and start ------------------------------------------------------

step "Building the images (one compile in deploy/Dockerfile's build stage)"
if [[ "${CLUSTER_NO_BUILD:-0}" != 1 ]]; then
  # With the docker CLI, not "docker-compose build": the two clients send the
  # build context differently, and the compile step would not be reused
  # between them. The images are the ones docker-compose.yml names. The build
  # stage is tagged too (sidecar-sync-build), so that it is no dangling image:
  # "docker image prune" then removes only stale layers, and the next run
  # reuses this one's compile when the sources are unchanged.
  #
  # Both builds read one snapshot of the build context (what .dockerignore
  # lets in), taken here: with the working tree itself, a file edited
  # between the two builds would make the second compile everything again.
  CTX="$WORK/context"
  mkdir -p "$CTX/deploy"
  cp .dockerignore "$CTX/"
  cp deploy/Dockerfile "$CTX/deploy/"
  while read -r path; do
    if [[ -e "$path" ]]; then
      cp -a --parents "$path" "$CTX/" || die "cannot copy $path into the build context"
    fi
  done < <(awk '/^!/ { print substr($0, 2) }' .dockerignore)
  "$DOCKER" build --network host -f "$CTX/deploy/Dockerfile" --target build \
    -t sidecar-sync-build:latest "$CTX"
  "$DOCKER" build --network host -f "$CTX/deploy/Dockerfile" -t sidecar-sync:latest "$CTX"
  "$DOCKER" build --network host -t sidecar-postgres:latest deploy/postgres
  "$DOCKER" build --network host -t sidecar-prometheus:latest deploy/prometheus
fi
"$DOCKER" image inspect sidecar-sync:latest sidecar-postgres:latest \
  sidecar-prometheus:latest >/dev/null ||
  die "the images sidecar-sync:latest, sidecar-postgres:latest and sidecar-prometheus:latest are missing"

step "Starting the cluster: 3 devices x (PostgreSQL, availability, transfer), then pairing"
"${DC[@]}" down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
"${DC[@]}" up -d
refresh_ids
wait_for 180 "all nine containers are healthy" all_healthy
PAIRING="$(container pairing)"
wait_for 120 "the pairing step has finished" exited "$PAIRING"
"${DC[@]}" ps
say "docker-compose logs pairing:"
"${DC[@]}" logs --no-color pairing 2>&1 | sed 's/^/      /'
rc="$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$PAIRING")"
[[ "$rc" == 0 ]] || die "the pairing step exited $rc"
say "ok: the pairing step exited 0"
"${DC[@]}" logs --no-color pairing 2>&1 | grep "sidecarctl .*pair join" >/dev/null ||
  die "the pairing log does not show the pair join commands"
for d in "${DEVICES[@]}"; do
  for s in availability transfer; do
    say "$d-$s health: $("$DOCKER" exec "${CID[$d-$s]}" sidecar-health-probe)"
  done
  # The runtime image runs as the non-root user "sidecar".
  [[ "$("$DOCKER" exec "${CID[$d-availability]}" id -un)" == sidecar ]] ||
    die "$d-availability does not run as user sidecar"
done

step "Prometheus scrapes the six services, and the library through the home server"
PROM_CID="$(container prometheus)"
wait_for 90 "prometheus is healthy" healthy_cid "$PROM_CID"
hostport="$("${DC[@]}" port prometheus 9090)"
[[ "$hostport" == 127.0.0.1:* ]] || die "Prometheus is published on $hostport, not on 127.0.0.1"
PROM="http://$hostport"
say "Prometheus at $PROM"
[[ "$("$DOCKER" exec "$PROM_CID" id -un)" == prometheus ]] ||
  die "prometheus does not run as user prometheus"
wait_for 60 "Prometheus has 7 targets, all up" targets_up 7
prom_get /api/v1/targets --data-urlencode state=active |
  jq -r '.data.activeTargets[] | "      \(.labels.job)\t\(.labels.instance)\tdevice=\(.labels.device)\t\(.health)\t\(.scrapeUrl)"' |
  sort
for d in "${DEVICES[@]}"; do
  for s in availability transfer; do
    prom_is "count(up{job=\"$s\",device=\"$d\",instance=\"$d-$s\"} == 1)" == 1 ||
      die "no target up with job=$s device=$d instance=$d-$s"
  done
done
rules="$(prom_get /api/v1/rules | jq -r '[.data.groups[].rules[] | select(.health == "ok") | .name] | sort | join(" ")')"
say "rules loaded: $rules"
for r in SidecarDeviceOffline SidecarVerificationFailures SidecarPrefetchStuck \
  device_source:sidecar_transfer_received_bytes:rate1m; do
  [[ " $rules " == *" $r "* ]] || die "Prometheus has no healthy rule $r"
done
prom_is 'count(up{job="library",instance="homeserver-library"} == 1)' == 1 ||
  die "the home server's relay of members' metrics (job library) is not up"
say "ok: the six targets and the relay are up, labelled by job, device and instance; rules loaded"

step "Mutual TLS: paired devices, one key per device, local APIs off the network"
for d in "${DEVICES[@]}"; do
  wait_for 60 "sidecarctl devices on the $d lists 3 devices" members_are "$d" 3
done
show homeserver devices
# The desktop and the home server were never paired with each other: they
# know each other by gossip (through the laptop).
ctl desktop devices | grep -w homeserver >/dev/null || die "the desktop does not list the home server"
ctl homeserver devices | grep -w desktop >/dev/null || die "the home server does not list the desktop"
for d in "${DEVICES[@]}"; do
  # Both containers of a device use the one key the availability service
  # made, private to the user.
  mode="$("$DOCKER" exec "${CID[$d-transfer]}" stat -c '%a %U' "$STATE/device.key")"
  [[ "$mode" == "600 sidecar" ]] || die "$d: $STATE/device.key is \"$mode\", not \"600 sidecar\""
  a="$("$DOCKER" exec "${CID[$d-availability]}" sha256sum "$STATE/device.crt" | cut -d' ' -f1)"
  b="$("$DOCKER" exec "${CID[$d-transfer]}" sha256sum "$STATE/device.crt" | cut -d' ' -f1)"
  [[ -n "$a" && "$a" == "$b" ]] || die "$d: its two containers see different device certificates"
  # The local APIs are unix sockets in the state directory...
  for s in availability transfer; do
    "$DOCKER" exec "${CID[$d-availability]}" test -S "$STATE/$s.sock" ||
      die "$d: no local socket $STATE/$s.sock"
  done
  # ...and the only TCP listeners are the peer listeners and the metrics
  # (9464, on the monitoring network only: see below): nothing of the local
  # API is on any network.
  for spec in availability:7100 transfer:7200; do
    s="${spec%%:*}"
    ports="$(tcp_listen_ports "${CID[$d-$s]}" | tr '\n' ' ')"
    [[ "$ports" == "${spec#*:} 9464 " ]] ||
      die "$d-$s listens on TCP ports [${ports% }], not only ${spec#*:} and 9464"
  done
done
say "ok: each device's two containers share one key (0600); local APIs are" \
  "unix sockets; TCP listeners are only 7100 (availability) and 7200" \
  "(transfer), and the metrics (9464)"
# The metrics port is not on mesh: from another device's container, the
# service's mesh address refuses 9464, and the metrics alias (on the
# device's own monitoring network) does not even resolve.
for target in desktop-availability desktop-transfer homeserver-transfer; do
  if "$DOCKER" exec "${CID[laptop-transfer]}" timeout 5 bash -c "exec 3<>/dev/tcp/$target/9464" 2>/dev/null; then
    die "the metrics port $target:9464 is reachable over mesh"
  fi
  if "$DOCKER" exec "${CID[laptop-transfer]}" getent hosts "$target-metrics" >/dev/null; then
    die "$target-metrics resolves in the laptop's container"
  fi
done
"$DOCKER" exec "${CID[desktop-transfer]}" timeout 5 bash -c "exec 3<>/dev/tcp/desktop-availability-metrics/9464" ||
  die "desktop-transfer cannot reach desktop-availability-metrics:9464 on its monitoring network"
say "ok: port 9464 is closed on mesh and reachable on the device's monitoring network"
# Plaintext calls at the peer listeners, from the laptop's containers over
# mesh: the ports are open (a TCP connection succeeds), but nothing gets
# through without mutual TLS.
for target in desktop-availability:7100 desktop-transfer:7200 homeserver-availability:7100; do
  host="${target%:*}"
  port="${target#*:}"
  "$DOCKER" exec "${CID[laptop-transfer]}" bash -c "exec 3<>/dev/tcp/$host/$port" ||
    die "cannot open a TCP connection to $target over mesh"
  if out="$("$DOCKER" exec "${CID[laptop-transfer]}" sidecar-health-probe --addr="$target" --timeout=3 2>&1)"; then
    die "a plaintext health check at the peer listener $target succeeded: $out"
  fi
  say "ok: plaintext health check at $target fails: $out"
done
if out="$("$DOCKER" exec "${CID[laptop-availability]}" sidecarctl --timeout=3s \
  --availability=desktop-availability:7100 devices 2>&1)"; then
  die "sidecarctl devices over plaintext at desktop-availability:7100 succeeded: $out"
fi
say "ok: plaintext sidecarctl at desktop-availability:7100 fails: ${out%%$'\n'*}"

wait_for 60 "the laptop sees the desktop online" peer_is laptop desktop online
wait_for 60 "the laptop sees the home server online" peer_is laptop homeserver online
wait_for 60 "the desktop learned the home server and sees it online" \
  peer_is desktop homeserver online
show desktop peers
show homeserver peers

step "Metrics under the pairing rules: the home server relays its members'"
# Both services of the desktop and the laptop give their metrics to members
# only (mutual TLS); the home server's availability service relays them.
wait_for 60 "Prometheus: 4 members' services answer the home server's relay" \
  prom_is 'count(sidecar_member_scrape_up{job="library"} == 1)' == 4
prom_is 'count(sidecar_member_scrape_up{job="library"})' == 4 ||
  die "the relay lists other endpoints than the 2 members' 2 services"
prom_is 'count(count by (member, service) (grpc_server_started_total{job="library"}))' == 4 ||
  die "the relay does not carry the members' gRPC series"
say "ok: the desktop's and the laptop's services are read through the home server"

# ---- 1. Scenario 1 -----------------------------------------------------------

step "Scenario 1: the desktop generates thumbnails, the laptop fetches them"
# Fetch jobs the laptop has ended DONE so far, as Prometheus sees them.
DONE_Q='sum(sidecar_fetch_jobs_ended_total{device="laptop",state="done"}) or vector(0)'
DONE0="$(prom_value "$DONE_Q")" || die "cannot query Prometheus: $DONE_Q"
say "Prometheus: the laptop has ended $DONE0 fetch jobs DONE so far"
THUMB_BYTES=0
PHOTOS=(
  "7d9f3c2e-1a4b-4c8d-9e6f-0a1b2c3d4e5f 200 40 90"
  "b52e8a10-3c7d-4e9f-8a1b-2c3d4e5f6a7b 30 160 220"
  "e0c4a9d8-5b6a-4f3e-9d2c-1b0a9f8e7d6c 120 120 10"
)
THUMBS=()
for photo in "${PHOTOS[@]}"; do
  read -r uuid r g b <<<"$photo"
  for spec in "icon@1x 64 48" "grid@2x 320 240"; do
    read -r variant w h <<<"$spec"
    uri="sidecar://$uuid/thumbs/$variant.webp"
    make_thumb "$WORK/thumb.webp" "$w" "$h" "$r" "$g" "$b"
    put desktop "$(layout "$uri")" <"$WORK/thumb.webp"
    cp "$WORK/thumb.webp" "$WORK/$uuid-$variant.webp"
    THUMB_BYTES=$((THUMB_BYTES + $(stat -c %s "$WORK/thumb.webp")))
    ctl desktop register "$uri" --file="$STORE/$(layout "$uri")" \
      --generator=cluster-test-thumbnailer/1 >/dev/null
    THUMBS+=("$uri")
  done
done
say "the desktop wrote and registered ${#THUMBS[@]} WebP thumbnails" \
  "($(command -v cwebp >/dev/null && echo "encoded by cwebp" || echo "minimal WebP"))"
show desktop ls
for uri in "${THUMBS[@]}"; do
  wait_for 30 "the laptop knows the desktop has ${uri##*/} of ${uri:10:8}" \
    holds laptop "$uri" desktop
done
out="$(ctl laptop resolve "${THUMBS[1]}")"
echo "$out" | sed 's/^/      /'
grep -q "outcome  *REMOTE" <<<"$out" || die "the laptop does not resolve it REMOTE"
grep -q "desktop" <<<"$out" || die "the desktop is not among the sources"
show laptop fetch "${THUMBS[@]}" --priority=interactive ||
  die "the laptop's fetch of the thumbnails failed"
for i in "${!THUMBS[@]}"; do
  uri="${THUMBS[$i]}"
  rel="$(layout "$uri")"
  a="$(sha_of desktop "$rel")"
  b="$(sha_of laptop "$rel")"
  uuid="${uri#sidecar://}"
  uuid="${uuid%%/*}"
  variant="${uri##*/}"
  c="$(sha256sum "$WORK/$uuid-${variant%.webp}.webp" | cut -d' ' -f1)"
  [[ "$a" == "$b" && "$b" == "$c" ]] ||
    die "$uri differs: desktop $a, laptop $b, generated $c"
done
say "ok: all ${#THUMBS[@]} thumbnails are byte-identical on the laptop"
out="$(ctl laptop resolve "${THUMBS[1]}")"
grep -q "outcome  *LOCAL" <<<"$out" || die "the laptop does not resolve it LOCAL after the fetch"
say "ok: the laptop now resolves it LOCAL"

# ---- 2. Scenario 2 -----------------------------------------------------------

step "Scenario 2: two holders (desktop, home server); the best is chosen"
S2="sidecar://3c1d2e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5/thumbstrips/scrub@1x.webp"
head -c $((3 << 20)) /dev/urandom >"$WORK/strip.bin"
for d in desktop homeserver; do
  put "$d" "$(layout "$S2")" <"$WORK/strip.bin"
  ctl "$d" register "$S2" --file="$STORE/$(layout "$S2")" \
    --generator=cluster-test-strip/1 >/dev/null
done
wait_for 30 "the laptop knows the desktop holds it" holds laptop "$S2" desktop
wait_for 30 "the laptop knows the home server holds it" holds laptop "$S2" homeserver
show laptop who-has "$S2"
out="$(ctl laptop resolve "$S2")"
echo "$out" | sed 's/^/      /'
grep -q "outcome  *REMOTE" <<<"$out" || die "not REMOTE"
best="$(awk '/sources, best first/ { s = 1; next } s && $1 == "1" { print $2; exit }' <<<"$out")"
second="$(awk '/sources, best first/ { s = 1; next } s && $1 == "2" { print $2; exit }' <<<"$out")"
[[ -n "$best" && -n "$second" && "$best" != "$second" ]] ||
  die "resolve does not list both holders as sources"
say "sources, best first: $best, then $second"
out="$(ctl laptop fetch "$S2" --priority=interactive 2>/dev/null)" ||
  die "the fetch of $S2 failed: $out"
echo "$out" | sed 's/^/      /'
done_line="$(grep '^DONE' <<<"$out")" || die "no DONE line"
grep -q "$best" <<<"$done_line" || die "fetched not from the best source ($best): $done_line"
say "ok: fetched from the best source, $best"
[[ "$(sha_of laptop "$(layout "$S2")")" == "$(sha256sum "$WORK/strip.bin" | cut -d' ' -f1)" ]] ||
  die "the laptop's copy of $S2 differs"
say "ok: identical bytes"

step "Prometheus: what the laptop fetched in scenarios 1 and 2"
DESKTOP_ID="$(device_id desktop)"
HOMESERVER_ID="$(device_id homeserver)"
LAPTOP_ID="$(device_id laptop)"
[[ -n "$DESKTOP_ID" && -n "$HOMESERVER_ID" && -n "$LAPTOP_ID" ]] ||
  die "cannot tell the device ids (sidecarctl devices --json)"
say "device ids: desktop $DESKTOP_ID, laptop $LAPTOP_ID, homeserver $HOMESERVER_ID"
S2_BYTES=$((3 << 20))
from_desktop=$THUMB_BYTES
from_home=0
case "$best" in
  desktop*) from_desktop=$((from_desktop + S2_BYTES)) ;;
  homeserver*) from_home=$S2_BYTES ;;
  *) die "unexpected best source $best" ;;
esac
want_done=$((DONE0 + ${#THUMBS[@]} + 1))
wait_for 30 "Prometheus: the laptop ended $want_done fetch jobs DONE (${#THUMBS[@]} + 1 more)" \
  prom_is "$DONE_Q" ">=" "$want_done"
prom_is "$DONE_Q" == "$want_done" ||
  die "Prometheus: the laptop ended $(prom_value "$DONE_Q") jobs DONE, not $want_done"
RELAYED_DONE_Q="sum(sidecar_fetch_jobs_ended_total{job=\"library\",member=\"$LAPTOP_ID\",service=\"transfer\",state=\"done\"})"
wait_for 30 "Prometheus: the same $want_done jobs, read through the home server's relay" \
  prom_is "$RELAYED_DONE_Q" == "$want_done"
RECV_Q='sidecar_transfer_received_bytes_total{device="laptop",source="%s"}'
# shellcheck disable=SC2059
q_desktop="$(printf "$RECV_Q" "$DESKTOP_ID")"
# shellcheck disable=SC2059
q_home="$(printf "$RECV_Q" "$HOMESERVER_ID")"
wait_for 30 "Prometheus: the laptop received >= $from_desktop bytes from the desktop" \
  prom_is "$q_desktop" ">=" "$from_desktop"
if ((from_home > 0)); then
  wait_for 30 "Prometheus: the laptop received >= $from_home bytes from the home server" \
    prom_is "$q_home" ">=" "$from_home"
fi
wait_for 30 "Prometheus: the laptop received >= $((THUMB_BYTES + S2_BYTES)) bytes in all" \
  prom_is 'sum(sidecar_transfer_received_bytes_total{device="laptop"})' ">=" $((THUMB_BYTES + S2_BYTES))
say "Prometheus: received by the laptop per source:"
prom_get /api/v1/query --data-urlencode 'query=sidecar_transfer_received_bytes_total{device="laptop"}' |
  jq -r '.data.result[] | "      source=\(.metric.source)\t\(.value[1]) bytes"'
say "(the scenarios sent $from_desktop bytes from the desktop, $from_home from the home server)"

# ---- 3. killed in the middle of a transfer -----------------------------------

# big_fetch_with_kill HOLDER VICTIM URI: the HOLDER holds a 16 MiB sidecar;
# the laptop fetches it, and once 4 MiB have arrived the container VICTIM is
# killed (SIGKILL) and started again; the fetch must still end DONE with
# identical bytes.
big_fetch_with_kill() {
  local holder="$1" victim="$2" uri="$3" rel
  rel="$(layout "$uri")"
  head -c $((16 << 20)) /dev/urandom >"$WORK/big.bin"
  put "$holder" "$rel" <"$WORK/big.bin"
  ctl "$holder" register "$uri" --file="$STORE/$rel" --generator=cluster-test-proxy/1 >/dev/null
  wait_for 30 "the laptop knows the $holder holds it" holds laptop "$uri" "$holder"
  show laptop fetch "$uri" --no-wait || die "could not queue the fetch"
  part_grown() {
    in_store laptop "find .incoming -name '*.part' -size +4096k 2>/dev/null | grep -q ."
  }
  wait_for 60 "the laptop has received 4 MiB (a part file in .incoming)" part_grown
  show laptop jobs --active
  say "killing $victim in the middle of the transfer"
  "$DOCKER" kill -s KILL "${CID[$victim]}" >/dev/null
  sleep 1
  "$DOCKER" start "${CID[$victim]}" >/dev/null
  wait_for 90 "$victim is healthy again" healthy "$victim"
  local resumed_at
  resumed_at="$(in_store laptop "find .incoming -name '*.part' -exec stat -c %s {} + 2>/dev/null | sort -n | tail -1")"
  say "part file now ${resumed_at:-?} bytes: the job goes on from there"
  show laptop fetch "$uri" || die "the fetch of $uri did not end DONE"
  [[ "$(sha_of laptop "$rel")" == "$(sha256sum "$WORK/big.bin" | cut -d' ' -f1)" ]] ||
    die "the laptop's copy of $uri differs"
  say "ok: $uri arrived complete and identical after $victim was killed"
}

step "The fetching side (laptop-transfer) is killed mid-transfer"
big_fetch_with_kill desktop laptop-transfer \
  "sidecar://9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d/proxies/720p.mp4"
# (grep reads all of it: "grep -q" under pipefail could fail on SIGPIPE.)
"$DOCKER" logs "${CID[laptop-transfer]}" 2>&1 | grep "interrupted job(s) will resume" >/dev/null ||
  die "laptop-transfer did not resume the interrupted job after its restart"
say "ok: laptop-transfer's log says the interrupted job resumed"

step "The serving side (homeserver-transfer) is killed mid-transfer"
big_fetch_with_kill homeserver homeserver-transfer \
  "sidecar://1f2e3d4c-5b6a-4798-8a7b-6c5d4e3f2a1b/proxies/480p.mp4"
show laptop jobs --limit=5

# ---- 4. network partition ----------------------------------------------------

step "The laptop leaves the network (docker network disconnect) and returns"
MESH="${PROJECT//[^-_a-z0-9]/}_mesh"
"$DOCKER" network inspect "$MESH" >/dev/null || die "no network $MESH"
for s in availability transfer; do
  "$DOCKER" network disconnect "$MESH" "${CID[laptop-$s]}"
  say "disconnected laptop-$s from $MESH"
done
wait_for 60 "the desktop marks the laptop offline" peer_is desktop laptop offline
wait_for 60 "the home server marks the laptop offline" peer_is homeserver laptop offline
show desktop peers
for d in desktop homeserver; do
  wait_for 30 "Prometheus: the $d's sidecar_peer_up for the laptop is 0" \
    prom_is "sidecar_peer_up{device=\"$d\",device_id=\"$LAPTOP_ID\"}" == 0
done
for d in desktop homeserver; do
  wait_for 30 "Prometheus: SidecarDeviceOffline fires on the $d for the laptop" \
    alert_is firing SidecarDeviceOffline device="$d" device_id="$LAPTOP_ID"
done
prom_get /api/v1/alerts | jq -r '.data.alerts[] |
  "      \(.labels.alertname) \(.state) device=\(.labels.device) device_id=\(.labels.device_id // "")"'
peer_is desktop homeserver online || die "the desktop lost the home server too"
for s in availability transfer; do
  # With its service name as an alias again, so that peers find it by name.
  "$DOCKER" network connect --alias "laptop-$s" "$MESH" "${CID[laptop-$s]}"
  say "reconnected laptop-$s"
done
wait_for 60 "the desktop marks the laptop online again" peer_is desktop laptop online
wait_for 60 "the home server marks the laptop online again" peer_is homeserver laptop online
wait_for 60 "the laptop sees the desktop online again" peer_is laptop desktop online
for d in desktop homeserver; do
  wait_for 30 "Prometheus: the $d's sidecar_peer_up for the laptop is 1 again" \
    prom_is "sidecar_peer_up{device=\"$d\",device_id=\"$LAPTOP_ID\"}" == 1
done
wait_for 30 "Prometheus: no SidecarDeviceOffline alert is left" no_alert SidecarDeviceOffline
show homeserver peers

# ---- 5. a second "up": pairing is idempotent --------------------------------

step "A second \"docker-compose up\": the pairing step skips the paired devices"
since="$(date +%s)"
sleep 1
"${DC[@]}" up -d
refresh_ids
PAIRING="$(container pairing)"
wait_for 120 "the pairing step has finished again" exited "$PAIRING"
rc="$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$PAIRING")"
# Only this run's log (an exited container started again keeps its log).
log2="$("$DOCKER" logs --since "$since" "$PAIRING" 2>&1)"
echo "$log2" | sed 's/^/      /'
[[ "$rc" == 0 ]] || die "the second pairing step exited $rc"
n="$(grep -c "already paired" <<<"$log2" || true)"
[[ "$n" == 2 ]] || die "the second pairing step did not skip both joiners"
grep "pair join" <<<"$log2" >/dev/null && die "the second pairing step paired again"
for d in "${DEVICES[@]}"; do
  members_are "$d" 3 || die "the $d's library has $(members "$d") devices after the second up"
done
say "ok: the second pairing step exited 0 and paired nothing again"

step "All scenarios passed in $((SECONDS - T0))s"
