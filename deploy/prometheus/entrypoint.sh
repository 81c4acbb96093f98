#!/bin/sh
# Fills in the templates of /etc/prometheus/sidecar from the environment,
# checks them (promtool) and runs Prometheus with the result; extra
# arguments go to Prometheus. "--check-only": fill in and check, then exit.
set -eu
SRC="${PROMETHEUS_TEMPLATES:-/etc/prometheus/sidecar}"
OUT="${PROMETHEUS_CONFIG_DIR:-/run/prometheus}"
mkdir -p "$OUT"
# A Prometheus duration: digits and a unit (ms, s, m, h, d, w, y), possibly
# several (1m30s).
for v in PROMETHEUS_SCRAPE_INTERVAL SIDECAR_OFFLINE_FOR SIDECAR_PREFETCH_STUCK_FOR; do
  eval "val=\${$v}"
  if ! printf '%s\n' "$val" | grep -Eqx '([0-9]+(ms|s|m|h|d|w|y))+'; then
    echo "entrypoint: $v=\"$val\" is not a duration such as 2s or 1m" >&2
    exit 2
  fi
done
fill() {
  sed -e "s/@SCRAPE_INTERVAL@/$PROMETHEUS_SCRAPE_INTERVAL/g" \
      -e "s/@OFFLINE_FOR@/$SIDECAR_OFFLINE_FOR/g" \
      -e "s/@PREFETCH_STUCK_FOR@/$SIDECAR_PREFETCH_STUCK_FOR/g" \
      -e "s#@RULES_FILE@#$OUT/rules.yml#g" "$1" >"$2"
}
fill "$SRC/prometheus.yml.in" "$OUT/prometheus.yml"
fill "$SRC/rules.yml.in" "$OUT/rules.yml"
# "check config" also checks the rule files it names.
promtool check config "$OUT/prometheus.yml" >&2
if [ "${1:-}" = "--check-only" ]; then
  promtool check rules "$OUT/rules.yml" >&2
  # The rules' tests, on the rules filled in with the durations they assume.
  mkdir -p "$OUT/test"
  (
    PROMETHEUS_SCRAPE_INTERVAL=15s
    SIDECAR_OFFLINE_FOR=1m
    SIDECAR_PREFETCH_STUCK_FOR=10m
    fill "$SRC/rules.yml.in" "$OUT/test/rules.yml"
  )
  cp "$SRC/rules_test.yml" "$OUT/test/rules_test.yml"
  promtool test rules "$OUT/test/rules_test.yml" >&2
  exit 0
fi
exec prometheus \
  --config.file="$OUT/prometheus.yml" \
  --storage.tsdb.path=/var/lib/prometheus/metrics \
  --storage.tsdb.retention.time=7d \
  --web.listen-address=0.0.0.0:9090 \
  "$@"
