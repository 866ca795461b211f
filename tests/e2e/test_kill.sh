#!/bin/sh
# kill -9 at random moments, as a repeatable test. A pipeline that downloads,
# stages to a tmpfs folder, makes a model, tokenizes, trains, exports and
# publishes is run once cleanly; then, KILL_TRIALS times, a fresh copy is started
# and killed with SIGKILL after a delay drawn from KILL_SEED (the whole process
# tree, the main process only, or twice in a row), run again to the end, and
# every target's hash and every cache object's content checked against the clean
# run. The release build runs the trials (many runs; ASan adds nothing to a kill).
# Longer: KILL_TRIALS=200 KILL_SEED=7 sh tests/e2e/test_kill.sh
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN=${FTPIPE_RELEASE:-$ROOT/build/ftpipe}
. "$(dirname "$0")/all_kinds_pipeline.sh"
TRIALS=${KILL_TRIALS:-20}
SEED=${KILL_SEED:-2026}
CLEAN="$T_ROOT/clean"
make_workspace "$CLEAN"
started=$(date +%s%3N)
"$RUN" -C "$CLEAN" > "$T_ROOT/clean.log" 2>&1 || { echo "not ok the clean run"; cat "$T_ROOT/clean.log"; exit 1; }
CLEAN_MS=$(( $(date +%s%3N) - started ))
target_hashes "$CLEAN" > "$T_ROOT/clean.hashes"
echo "  the clean run took $CLEAN_MS ms"

trial=1
while [ "$trial" -le "$TRIALS" ]; do
  # a Park-Miller step of (seed, trial), in shell arithmetic: awk's rand() need not repeat for one seed
  delay_ms=$(( (SEED * 1000 + trial) * 16807 % 2147483647 % (CLEAN_MS > 0 ? CLEAN_MS : 1) ))
  case $((trial % 3)) in 0) mode=tree ;; 1) mode=main ;; 2) mode=twice ;; esac
  t_case "kill -9 trial $trial ($mode after $delay_ms ms) resumes to the clean run's bytes"
  W="$T_ROOT/trial$trial"
  make_workspace "$W"
  kills=1; [ "$mode" = twice ] && kills=2
  k=0
  while [ "$k" -lt "$kills" ]; do
    setsid "$RUN" -C "$W" > "$W.log.$k" 2>&1 &
    pid=$!
    sleep "$(awk -v ms="$delay_ms" 'BEGIN { printf "%.3f", ms / 1000 / (1 + '"$k"') }')"
    if [ "$mode" = main ]; then
      kill -9 "$pid" 2>/dev/null
    else
      pkill -9 -s "$pid" 2>/dev/null # the session: the engine and every stage process
    fi
    wait "$pid" 2>/dev/null
    # Stage processes left by a main-only kill finish or are stopped before the rerun checks.
    pkill -9 -s "$pid" 2>/dev/null
    k=$((k + 1))
  done
  t_run "$RUN" -C "$W"
  t_expect_status 0
  target_hashes "$W" > "$W.hashes"
  sed "s|$W|$CLEAN|" "$W.hashes" | cmp -s - "$T_ROOT/clean.hashes" ||
    t_fail "targets differ from the clean run: $(diff "$W.hashes" "$T_ROOT/clean.hashes" | head -5)"
  bad=$(bad_objects "$W")
  [ -z "$bad" ] || t_fail "cache objects whose bytes do not match their hash: $bad"
  t_end
  rm -rf "$W" "$W".*
  trial=$((trial + 1))
done
echo "  $TRIALS kill -9 trials, seed $SEED"
