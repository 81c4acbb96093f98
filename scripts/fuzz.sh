#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang (build-fuzz/,
# SIDECAR_FUZZ=ON: AddressSanitizer, UndefinedBehaviorSanitizer) and runs
# each for FUZZ_SECONDS (default 60) on a scratch copy of its seed corpus.
# Prints one line per target with libFuzzer's count of executions; exits
# non-zero if any target crashed, leaked or tripped a sanitizer (its output
# and the crashing input are kept under build-fuzz/fuzz-runs/<target>/).
#
#   scripts/fuzz.sh                        # every target, 60 s each
#   FUZZ_SECONDS=10 scripts/fuzz.sh        # a quick look
#   FUZZ_TARGETS="config pairing_code" scripts/fuzz.sh
#   FUZZ_RUNS=1000000 scripts/fuzz.sh      # a number of executions instead
#
# JOBS (default 2) bounds the build's parallelism.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
RUNS="${FUZZ_RUNS:-}"
JOBS="${JOBS:-2}"
ALL_TARGETS=(sidecar_key entry_batch exchange_receive has_keys read_request
  batch_read config batch_file pairing_code)
read -r -a TARGETS <<<"${FUZZ_TARGETS:-${ALL_TARGETS[*]}}"

# clang-14, its libFuzzer and sanitizer runtimes, and llvm-symbolizer for
# readable stacks.
"$ROOT/scripts/install-deps.sh" clang-14 libclang-rt-14-dev llvm-14

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_CXX_COMPILER=clang++-14 \
  -DSIDECAR_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
nice -n 10 cmake --build "$BUILD" --target fuzz_targets -j "$JOBS"
echo "fuzz: built in ${SECONDS}s"

RUNS_DIR="$BUILD/fuzz-runs"
failed=()
for t in "${TARGETS[@]}"; do
  bin="$BUILD/tests/fuzz/fuzz_$t"
  seeds="$ROOT/tests/fuzz/corpus/$t"
  if [[ ! -x "$bin" || ! -d "$seeds" ]]; then
    echo "fuzz: unknown target $t" >&2
    exit 1
  fi
  work="$RUNS_DIR/$t"
  rm -rf "$work"
  mkdir -p "$work/corpus"
  # libFuzzer adds what it finds to its first corpus directory: a copy,
  # never the seeds in the repository.
  cp "$seeds"/* "$work/corpus/"
  limit=(-max_total_time="$SECONDS_EACH")
  [[ -n "$RUNS" ]] && limit=(-runs="$RUNS")
  rc=0
  (cd "$work" && "$bin" "${limit[@]}" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$work/" corpus \
    >"$work/log" 2>&1) || rc=$?
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" |
    tail -1 | grep -o '[0-9]*$' || true)"
  rate="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$work/log" |
    tail -1 | grep -o '[0-9]*$' || true)"
  if [[ $rc -eq 0 ]]; then
    printf 'fuzz: %-13s %10s executions (%s/s), ok\n' "$t" "${execs:-?}" \
      "${rate:-?}"
  else
    printf 'fuzz: %-13s %10s executions, FAILED (exit %d; see %s)\n' "$t" \
      "${execs:-?}" "$rc" "$work/log"
    grep -m1 -E 'ERROR: |SUMMARY: |property violated' "$work/log" >&2 || true
    failed+=("$t")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
