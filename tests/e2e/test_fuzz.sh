#!/bin/sh
# Runs every fuzz target (build/fuzz/fuzz_*, from `make fuzz`) for FUZZ_SECONDS
# (default 4) from its committed seed corpus, tests/fuzz/corpus/NAME; prints one
# case per target with the inputs it tried, then the total. A crash, leak or
# abort fails the case and leaves the input that caused it under build/fuzz/crashes/
# (add it to the corpus once fixed: it becomes a regression input).
# Longer, with a fresh seed: FUZZ_SECONDS=600 FUZZ_SEED=0 sh tests/e2e/test_fuzz.sh
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECONDS_EACH=${FUZZ_SECONDS:-4}
# One seed, so a make test run mutates the same way each time (FUZZ_SEED=0: a fresh one).
SEED=${FUZZ_SEED:-2026}
total=0
targets=$(ls "$ROOT"/tests/fuzz/fuzz_*.c 2>/dev/null)
for source in $targets; do
  name=$(basename "$source" .c)
  corpus_name=${name#fuzz_}
  binary="$ROOT/build/fuzz/$name"
  if [ ! -x "$binary" ]; then
    echo "ok $name # SKIP not built (make fuzz needs clang)"
    continue
  fi
  t_case "$name survives ${SECONDS_EACH} s of fuzzing from its seed corpus"
  work="$T_ROOT/$name"
  mkdir -p "$work/corpus" "$ROOT/build/fuzz/crashes"
  # New inputs go to a scratch copy; the committed corpus is only read.
  t_run "$binary" -seed="$SEED" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$ROOT/build/fuzz/crashes/$name-" "$work/corpus" "$ROOT/tests/fuzz/corpus/$corpus_name"
  t_expect_status 0
  runs=$(printf '%s\n' "$T_OUT" | sed -n 's/^stat::number_of_executed_units: *//p' | tail -1)
  [ -n "$runs" ] || t_fail "no run count in the output"
  total=$((total + ${runs:-0}))
  echo "  $name: ${runs:-0} inputs"
  t_end
done
echo "  fuzzing tried $total inputs in all"
