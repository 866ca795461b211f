#!/bin/sh
# Hashing one 2 GiB file with the page cache warm: xxh128sum against
# `ftpipe hash --threads 1` and `ftpipe hash` (one thread per core), in the same
# run, alternating. Prints the medians, GiB/s, and each ftpipe speed as a
# multiple of xxh128sum's (above 1: ftpipe is faster).
#   RUNS=5 BENCH_DIR=/tmp/ftpipe-bench sh tests/bench/hash.sh
# The 2 GiB file is kept in BENCH_DIR and reused by later runs.
set -e
cd "$(dirname "$0")/../.."
FTPIPE=${FTPIPE:-$(pwd)/build/ftpipe}
RUNS=${RUNS:-5}
DIR=${BENCH_DIR:-/tmp/ftpipe-bench}
FILE="$DIR/hash-2GiB.bin"
SIZE=2147483648
mkdir -p "$DIR"
if [ "$(stat -c %s "$FILE" 2>/dev/null || echo 0)" != "$SIZE" ]; then
  echo "making $FILE (2 GiB of random bytes)..."
  head -c "$SIZE" /dev/urandom > "$FILE.part"
  mv "$FILE.part" "$FILE"
fi
cat "$FILE" > /dev/null

# The two ftpipe runs must agree (the hash never depends on the thread count).
one=$("$FTPIPE" hash --threads 1 "$FILE" | cut -d' ' -f1)
all=$("$FTPIPE" hash "$FILE" | cut -d' ' -f1)
[ -n "$one" ] && [ "$one" = "$all" ] || { echo "ftpipe hash differs by thread count: $one vs $all"; exit 1; }

now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
TIMES=$(mktemp -d "${TMPDIR:-/tmp}/ftpipe-hash-bench.XXXXXX")
trap 'rm -rf "$TIMES"' EXIT
for r in $(seq "$RUNS"); do
  s=$(now_ns); xxh128sum "$FILE" > /dev/null 2>&1; e=$(now_ns); echo $(( (e - s) / 1000 )) >> "$TIMES/xxh"
  s=$(now_ns); "$FTPIPE" hash --threads 1 "$FILE" > /dev/null; e=$(now_ns); echo $(( (e - s) / 1000 )) >> "$TIMES/one"
  s=$(now_ns); "$FTPIPE" hash "$FILE" > /dev/null; e=$(now_ns); echo $(( (e - s) / 1000 )) >> "$TIMES/all"
done
xxh=$(median < "$TIMES/xxh"); one=$(median < "$TIMES/one"); all=$(median < "$TIMES/all")
echo "hashing a 2 GiB file, page cache warm, median of $RUNS runs ($(nproc) cores):"
awk -v x="$xxh" -v o="$one" -v a="$all" -v cores="$(nproc)" 'BEGIN {
  gib = 2;
  printf "  xxh128sum                   %7.3f s  %6.2f GiB/s\n", x / 1e6, gib / (x / 1e6);
  printf "  ftpipe hash --threads 1     %7.3f s  %6.2f GiB/s  %.2fx xxh128sum (target: >= 1.00)\n",
         o / 1e6, gib / (o / 1e6), x / o;
  printf "  ftpipe hash (%d threads)     %7.3f s  %6.2f GiB/s  %.2fx xxh128sum (target: > 1.00)\n",
         cores, a / 1e6, gib / (a / 1e6), x / a;
}'
