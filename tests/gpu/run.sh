#!/bin/sh
# Runs the GPU tests (build/gpu/test_*, made here by `make gpu-tests` and carried
# to a GPU machine with build/gpu/lib, and the scripts tests/gpu/test_*.sh, which
# run build/ftpipe), counts "ok"/"not ok" case lines and the "ok NAME # SKIP why"
# ones apart, prints each program's "#" lines and its failures' output, and ends
# with the summary line "N passed, N failed, N skipped". Builds nothing. Not part
# of `make test`: without a GPU each program checks that asking for the cuda
# backend fails clearly and skips every GPU case.
#   SANITIZER="compute-sanitizer --tool memcheck" sh tests/gpu/run.sh
cd "$(dirname "$0")/../.."
[ -d build/gpu/lib ] && export LD_LIBRARY_PATH="$(pwd)/build/gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
passed=0
failed=0
skipped=0
log=$(mktemp)
for t in build/gpu/test_* tests/gpu/test_*.sh; do
  [ -f "$t" ] || continue
  case "$t" in *.d) continue ;; esac # make's dependency lists, not programs
  case "$t" in
    *.sh) sh "$t" >"$log" 2>&1 ;;
    *) $SANITIZER "$t" >"$log" 2>&1 ;;
  esac
  status=$?
  skips=$(grep -c '^ok .* # SKIP' "$log")
  ok=$(( $(grep -c '^ok ' "$log") - skips ))
  bad=$(grep -c '^not ok ' "$log")
  if [ "$status" -ne 0 ] && [ "$bad" -eq 0 ]; then
    bad=1
    echo "not ok $t (exit $status)"
  fi
  passed=$((passed + ok))
  failed=$((failed + bad))
  skipped=$((skipped + skips))
  echo "--- $t ($ok passed, $bad failed, $skips skipped)"
  if [ "$bad" -ne 0 ]; then cat "$log"; else grep -E '^#|# SKIP' "$log"; fi
done
rm -f "$log"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
