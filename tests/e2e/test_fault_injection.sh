#!/bin/sh
# Fault injection over a pipeline with a train stage (and a stage of every kind
# that writes): build/fault_inject.so, preloaded, fails the Nth write, pwrite,
# writev, fsync, fdatasync, rename or copy_file_range (EIO when N is odd, else
# ENOSPC), or the Nth allocation, of each ftpipe process. After each injected run
# the pipeline is run again without faults and must end as an uninterrupted run
# does (every target's hash, every cache object intact) with PRAGMA
# integrity_check ok on state.db. N runs over 1..FAULT_FIRST, then FAULT_POINTS
# points spread evenly over the calls a whole run makes, for each kind.
# Every point: FAULT_FIRST=100000 sh tests/e2e/test_fault_injection.sh
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN=${FTPIPE_RELEASE:-$ROOT/build/ftpipe}
SHIM="$ROOT/build/fault_inject.so"
FIRST=${FAULT_FIRST:-4}
POINTS=${FAULT_POINTS:-6}
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

tried=0
for kind in io alloc; do
  # How many such calls the busiest process of a whole run makes.
  W="$T_ROOT/count-$kind"
  make_workspace "$W"
  FT_FAULT_KIND=$kind FT_FAULT_COUNT_FILE="$W.count" LD_PRELOAD="$SHIM" "$RUN" -C "$W" > /dev/null 2>&1
  most=$(sort -n "$W.count" | tail -1)
  rm -rf "$W" "$W.count"
  points=$(awk -v first="$FIRST" -v n="$POINTS" -v most="$most" 'BEGIN {
    for (i = 1; i <= first && i <= most; i++) print i
    for (i = 1; i <= n; i++) { p = int(most * i / (n + 1)); if (p > first) print p } }' | sort -nu)
  echo "  $kind: the busiest process makes $most such calls; failing calls number $(echo $points)"
  for at in $points; do
    t_case "the $kind call number $at fails, and a rerun ends as an uninterrupted run"
    W="$T_ROOT/$kind-$at"
    make_workspace "$W"
    FT_FAULT_KIND=$kind FT_FAULT_AT=$at LD_PRELOAD="$SHIM" timeout 120 "$RUN" -C "$W" > "$W.log" 2>&1
    status=$?
    [ "$status" != 124 ] || t_fail "the injected run hung"
    t_run timeout 120 "$RUN" -C "$W"
    t_expect_status 0
    target_hashes "$W" > "$W.hashes"
    sed "s|$W|$CLEAN|" "$W.hashes" | cmp -s - "$T_ROOT/clean.hashes" ||
      t_fail "targets differ from the uninterrupted run: $(diff "$W.hashes" "$T_ROOT/clean.hashes" | head -5)"
    bad=$(bad_objects "$W")
    [ -z "$bad" ] || t_fail "cache objects whose bytes do not match their hash: $bad"
    check=$(integrity "$W")
    [ "$check" = ok ] || t_fail "PRAGMA integrity_check: $check"
    [ "$T_FAILED" = 0 ] || t_fail "the injected run (exit $status) said: $(tail -5 "$W.log")"
    t_end
    rm -rf "$W" "$W".*
    tried=$((tried + 1))
  done
done
echo "  $tried injection points tried"
