#!/bin/sh
# Runs every unit test binary (build/asan/tests/SUBSYSTEM/test_*) and every end-to-end script
# (tests/e2e/*.sh), counts "ok"/"not ok" case lines ("ok NAME # SKIP why" apart,
# each shown), prints failures' output, and ends with the summary line
# "N passed, N failed" (", N skipped" when a case skipped).
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
  # a binary left from a test source since moved or deleted is not a test of this tree
  case "$t" in build/asan/tests/*) [ -f "tests/unit/${t#build/asan/tests/}.c" ] || continue ;; esac
  case "$t" in *.sh) sh "$t" >"$log" 2>&1 ;; *) "$t" >"$log" 2>&1 ;; esac
  status=$?
  # A case that could not run here says "ok NAME # SKIP why": counted apart, and shown.
  skips=$(grep -a -c '^ok .*# SKIP' "$log")
  grep -a '^ok .*# SKIP' "$log" | sed "s|^ok |skip $t: |"
  ok=$(( $(grep -a -c '^ok ' "$log") - skips ))
  bad=$(grep -a -c '^not ok ' "$log")
  if [ "$status" -ne 0 ] && [ "$bad" -eq 0 ]; then
    bad=1
    echo "not ok $t (exit $status)"
  fi
  passed=$((passed + ok))
  failed=$((failed + bad))
  skipped=$((skipped + skips))
  if [ "$bad" -ne 0 ]; then
    echo "--- $t"
    cat "$log"
  else
    echo "ok $t ($ok cases)"
  fi
done
rm -f "$log"
# A skip is neither a pass nor a failure: counted apart, and named when there is one.
if [ "$skipped" -gt 0 ]; then echo "$passed passed, $failed failed, $skipped skipped"; else echo "$passed passed, $failed failed"; fi
[ "$failed" -eq 0 ]
