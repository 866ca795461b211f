#!/bin/sh
# Branch coverage of the engine (make coverage): runs the engine's unit tests and the
# end-to-end tests that drive the engine with build/cov/ (built with --coverage), then
# prints gcov's branch figures for each file of ftpipe/engine and their total.
# Stage processes end with _exit, so only the engine's own process is measured.
cd "$(dirname "$0")/.."
find build/obj-cov -name '*.gcda' -delete 2>/dev/null
for t in build/cov/tests/engine/test_*; do
  case "$t" in *.d|*.gcda|*.gcno) continue ;; esac
  "$t" > /dev/null 2>&1
done
for e in test_engine test_hostile test_init test_extract; do
  FTPIPE="$(pwd)/build/cov/ftpipe" sh "tests/e2e/$e.sh" > /dev/null 2>&1
done
mkdir -p build/cov/gcov
cd build/cov/gcov || exit 1
gcov -b -o ../../obj-cov/ftpipe/engine ../../../ftpipe/engine/*.c 2>/dev/null |
  awk '/^File .*ftpipe\/engine\// { file = $2; gsub(/\x27/, "", file); sub(/.*\//, "", file) }
       file && /^Branches executed:/ { split($0, a, /[:% ]+/); }
       file && /^Taken at least once:/ {
         split($0, a, ":"); split(a[2], b, "% of "); taken = b[1]; n = b[2] + 0
         printf "%-20s %6.1f%% of %5d branches taken\n", file, taken, n
         total += n; hit += taken * n / 100; file = "" }
       END { if (total) printf "%-20s %6.1f%% of %5d branches taken\n", "engine (all)", 100 * hit / total, total }'
