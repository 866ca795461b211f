#!/bin/sh
# Runs every unit test binary (build/asan/tests/SUBSYSTEM/test_*) and every end-to-end script
# (tests/e2e/*.sh), counts "ok"/"not ok" case lines ("ok ... # SKIP" apart, each
# shown), prints failures' output, and ends with the summary line "N passed, N failed".
cd "$(dirname "$0")/.."
FTPIPE="$(pwd)/build/asan/ftpipe"
export FTPIPE
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
passed=0
failed=0
skipped=0
log=$(mktemp)
for t in $(find build/asan/tests -name "test_*" -type f ! -name "*.d" | sort) tests/e2e/test_*.sh; do
  [ -e "$t" ] || continue
  case "$t" in *.d) continue ;; esac
  case "$t" in *.sh) sh "$t" >"$log" 2>&1 ;; *) "$t" >"$log" 2>&1 ;; esac
  status=$?
  ok=$(grep -a '^ok ' "$log" | grep -c -v '# SKIP')
  bad=$(grep -a -c '^not ok ' "$log")
  # A case that could not run here says "ok NAME # SKIP why": counted apart, and shown.
  grep -a '^ok .*# SKIP' "$log" | sed "s|^ok |skip $t: |"
  skipped=$((skipped + $(grep -a -c '^ok .*# SKIP' "$log")))
  if [ "$status" -ne 0 ] && [ "$bad" -eq 0 ]; then
    bad=1
    echo "not ok $t (exit $status)"
  fi
  passed=$((passed + ok))
  failed=$((failed + bad))
  if [ "$bad" -ne 0 ]; then
    echo "--- $t"
    cat "$log"
  else
    echo "ok $t ($ok cases)"
  fi
done
rm -f "$log"
[ "$skipped" -eq 0 ] || echo "$skipped skipped (see the skip lines above)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
