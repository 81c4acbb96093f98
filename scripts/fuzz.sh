#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz in the clang checking build
# (build-asan/, scripts/build-asan.sh: AddressSanitizer, UndefinedBehavior-
# Sanitizer, libFuzzer's coverage hooks) and runs each for FUZZ_SECONDS
# (default 60) on a scratch copy of its seed corpus, FUZZ_JOBS (default 2) at
# a time, and then on for what is missing of FUZZ_MIN_RUNS executions
# (default 1,000,000) if the time was not enough, on the corpus it grew.
# Prints one line per target with libFuzzer's count of executions;
# exits non-zero if any target crashed, leaked or tripped a sanitizer (its
# output and the crashing input are kept under build-asan/fuzz-runs/<target>/).
#
#   scripts/fuzz.sh                        # every target, 60 s each
#   FUZZ_SECONDS=10 scripts/fuzz.sh        # a quick look
#   FUZZ_TARGETS="config pairing_code" scripts/fuzz.sh
#   FUZZ_RUNS=1000000 scripts/fuzz.sh      # a number of executions instead
#
# JOBS (default: nproc) bounds the build's parallelism.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="$ROOT/build-asan"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
RUNS="${FUZZ_RUNS:-}"
MIN_RUNS="${FUZZ_MIN_RUNS:-1000000}"
PARALLEL="${FUZZ_JOBS:-2}"
ALL_TARGETS=(sidecar_key entry_batch exchange_receive has_keys read_request
  batch_read config batch_file pairing_code leaf_messages self_snapshot
  metrics_wire)
read -r -a TARGETS <<<"${FUZZ_TARGETS:-${ALL_TARGETS[*]}}"

nice -n 10 "$ROOT/scripts/build-asan.sh" fuzz_targets >/dev/null
echo "fuzz: built in ${SECONDS}s"
export ASAN_SYMBOLIZER_PATH="${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || true)}"

RUNS_DIR="$BUILD/fuzz-runs"

# Runs target $1 and writes its one-line verdict to $RUNS_DIR/$1/verdict;
# the verdict starts with "ok" or "FAILED".
run_one() {
  local t="$1" bin="$BUILD/tests/fuzz/fuzz_$1" seeds="$ROOT/tests/fuzz/corpus/$1"
  local work="$RUNS_DIR/$t"
  rm -rf "$work"
  mkdir -p "$work/corpus"
  # libFuzzer adds what it finds to its first corpus directory: a copy,
  # never the seeds in the repository.
  cp "$seeds"/* "$work/corpus/"
  local limit=(-max_total_time="$SECONDS_EACH")
  [[ -n "$RUNS" ]] && limit=(-runs="$RUNS")
  local rc=0 pass=0 total=0 log execs rate
  while true; do
    pass=$((pass + 1))
    log="$work/log.$pass"
    (cd "$work" && "$bin" "${limit[@]}" -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 -artifact_prefix="$work/" corpus \
      >"$log" 2>&1) || rc=$?
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" |
      tail -1 | grep -o '[0-9]*$' || true)"
    rate="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" |
      tail -1 | grep -o '[0-9]*$' || true)"
    total=$((total + ${execs:-0}))
    # At most three passes: the second asks for exactly what is missing.
    if [[ $rc -ne 0 || -n "$RUNS" || $total -ge $MIN_RUNS || $pass -ge 3 ]]; then
      break
    fi
    limit=(-runs=$((MIN_RUNS - total)))
  done
  execs="$total"
  if [[ $rc -eq 0 ]]; then
    printf 'ok     %-16s %10s executions (%s/s; %d pass(es))\n' "$t" \
      "${execs:-?}" "${rate:-?}" "$pass" >"$work/verdict"
  else
    {
      printf 'FAILED %-16s %10s executions (exit %d; see %s)\n' "$t" \
        "${execs:-?}" "$rc" "$log"
      grep -m1 -E 'ERROR: |SUMMARY: |property violated' "$log" || true
    } >"$work/verdict"
  fi
}

for t in "${TARGETS[@]}"; do
  if [[ ! -x "$BUILD/tests/fuzz/fuzz_$t" || ! -d "$ROOT/tests/fuzz/corpus/$t" ]]; then
    echo "fuzz: unknown target $t" >&2
    exit 1
  fi
done
running=0
for t in "${TARGETS[@]}"; do
  if ((running >= PARALLEL)); then
    wait -n || true
    running=$((running - 1))
  fi
  run_one "$t" &
  running=$((running + 1))
done
wait

failed=()
for t in "${TARGETS[@]}"; do
  echo "fuzz: $(cat "$RUNS_DIR/$t/verdict" 2>/dev/null || echo "FAILED $t (no verdict)")"
  grep -q '^ok' "$RUNS_DIR/$t/verdict" 2>/dev/null || failed+=("$t")
done
echo "fuzz: done in ${SECONDS}s"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
