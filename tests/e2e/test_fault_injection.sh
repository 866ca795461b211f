#!/bin/sh
# Fault injection over a pipeline with a train stage (and a stage of every kind
# that writes): build/fault_inject.so, preloaded, fails the Nth write, pwrite,
# writev, fsync, fdatasync, rename or copy_file_range (EIO when N is odd, else
# ENOSPC), or the Nth allocation, of each ftpipe-full process (the program
# `ftpipe` hands the run to; stage processes too).
# An injected failure must not be ignored: a run that fails says why (a FAILED or
# an "ftpipe: ..." line), and a run that succeeds anyway must already equal an
# uninterrupted run, with nothing left for a rerun to do. Then the pipeline runs
# again without faults and must end as an uninterrupted run does: every target's
# hash, every cache object intact, PRAGMA integrity_check ok on state.db. ("Equal"
# for a run that succeeded also means each target's run recorded with its log and
# the same metrics, and each stage's summary printed.)
# N runs over 1..FAULT_FIRST, the last call of each process of a whole run, and
# FAULT_POINTS points spread evenly over the calls of the busiest process, for
# each kind in FAULT_KINDS (io alloc).
# Every point (about 900 for io; allocations fail by aborting, as designed):
#   FAULT_FIRST=100000 FAULT_KINDS=io sh tests/e2e/test_fault_injection.sh
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN=${FTPIPE_RELEASE:-$ROOT/build/ftpipe}
SHIM="$ROOT/build/fault_inject.so"
FIRST=${FAULT_FIRST:-4}
POINTS=${FAULT_POINTS:-6}
KINDS=${FAULT_KINDS:-io alloc}
. "$(dirname "$0")/all_kinds_pipeline.sh"
ulimit -c 0 # an allocation failure aborts by design: no core files

if [ ! -f "$SHIM" ]; then
  echo "ok fault injection # SKIP build/fault_inject.so is not built (make test builds it)"
  exit 0
fi

CLEAN="$T_ROOT/clean"
make_workspace "$CLEAN"
"$RUN" -C "$CLEAN" > "$T_ROOT/clean.log" 2>&1 || { echo "not ok the clean run"; cat "$T_ROOT/clean.log"; exit 1; }
target_hashes "$CLEAN" > "$T_ROOT/clean.hashes"

integrity() {
  python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("PRAGMA integrity_check").fetchone()[0])' \
    "$1/.ftpipe/state.db" 2>&1
}
# Per target, its last finished run: whether its log was kept and the names and steps of its metrics.
run_records() {
  python3 - "$1/.ftpipe/state.db" <<'PY' 2>&1
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for target, run_id, log in db.execute("SELECT target, id, log_path FROM runs WHERE id IN "
                                      "(SELECT max(id) FROM runs WHERE status = 'done' GROUP BY target) ORDER BY target"):
    metrics = [name + "@" + str(step) for step, name in
               db.execute("SELECT step, name FROM metrics WHERE run_id = ? ORDER BY step, name", (run_id,))]
    print(target, "log" if log and os.path.isfile(log) else "no-log", " ".join(metrics))
PY
}
run_records "$CLEAN" > "$T_ROOT/clean.records"
# Per target run: whether its "done" line carried the stage's summary.
summaries() { sed -n 's/^done     \([^ ]*\) in [0-9.]* s\(:\)\{0,1\}.*/\1 \2/p' "$1" | sort; }
summaries "$T_ROOT/clean.log" > "$T_ROOT/clean.summaries"
targets_as_clean() { # WORKSPACE: prints how its targets differ from the uninterrupted run's
  target_hashes "$1" | sed "s|$1|$CLEAN|" | cmp -s - "$T_ROOT/clean.hashes" ||
    echo "targets differ: $(target_hashes "$1" | sed "s|$1|$CLEAN|" | diff - "$T_ROOT/clean.hashes" | head -4)"
}
records_as_clean() { # WORKSPACE: prints how its runs' records differ from the uninterrupted run's
  run_records "$1" | cmp -s - "$T_ROOT/clean.records" ||
    echo "runs recorded differently: $(run_records "$1" | diff - "$T_ROOT/clean.records" | head -4)"
}

tried=0
for kind in $KINDS; do
  # How many such calls each process of a whole run makes.
  W="$T_ROOT/count-$kind"
  make_workspace "$W"
  FT_FAULT_KIND=$kind FT_FAULT_COUNT_FILE="$W.count" LD_PRELOAD="$SHIM" "$RUN" -C "$W" > /dev/null 2>&1
  most=$(sort -n "$W.count" | tail -1)
  ends=$(sort -nu "$W.count")
  rm -rf "$W" "$W.count"
  points=$( (awk -v first="$FIRST" -v n="$POINTS" -v most="$most" 'BEGIN {
    for (i = 1; i <= first && i <= most; i++) print i
    for (i = 1; i <= n; i++) { p = int(most * i / (n + 1)); if (p > first) print p } }'
    echo "$ends") | sort -nu)
  echo "  $kind: the processes make $(echo $ends) such calls; failing calls number $(echo $points)"
  for at in $points; do
    t_case "the $kind call number $at fails: said or harmless, and a rerun ends as an uninterrupted run"
    W="$T_ROOT/$kind-$at"
    make_workspace "$W"
    FT_FAULT_KIND=$kind FT_FAULT_AT=$at FT_FAULT_LOG="$W.fault" LD_PRELOAD="$SHIM" timeout 120 "$RUN" -C "$W" \
      > "$W.log" 2>&1
    status=$?
    failed_call=$( { tr '\n' ';' < "$W.fault"; } 2>/dev/null | sed "s|$W|W|g")  # no file: nothing failed
    [ "$status" != 124 ] || t_fail "the injected run hung"
    if [ "$status" = 0 ]; then
      differs=$(targets_as_clean "$W"; records_as_clean "$W"
        summaries "$W.log" | cmp -s - "$T_ROOT/clean.summaries" ||
          echo "a stage's summary went missing: $(summaries "$W.log" | diff - "$T_ROOT/clean.summaries" | head -4)")
      [ -z "$differs" ] || t_fail "the run succeeded although $failed_call failed, and $differs"
    elif [ "$kind" = io ]; then
      grep -q '^FAILED \|^ftpipe: [^0-9]' "$W.log" || t_fail "the run failed (exit $status) without saying why"
    fi
    t_run timeout 120 "$RUN" -C "$W"
    t_expect_status 0
    [ "$status" != 0 ] || t_expect_contains "nothing to do"
    differs=$(targets_as_clean "$W")
    [ -z "$differs" ] || t_fail "after the rerun, $differs"
    bad=$(bad_objects "$W")
    [ -z "$bad" ] || t_fail "cache objects whose bytes do not match their hash: $bad"
    check=$(integrity "$W")
    [ "$check" = ok ] || t_fail "PRAGMA integrity_check: $check"
    [ "$T_FAILED" = 0 ] || t_fail "the failed call: ${failed_call:-none}; the injected run (exit $status) said: $(tail -5 "$W.log")"
    t_end
    rm -rf "$W" "$W".*
    tried=$((tried + 1))
  done
done
echo "  $tried injection points tried"
