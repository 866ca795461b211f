#!/bin/sh
# Staging a 4 GiB folder from disk into a tmpfs: `ftpipe` (an shm stage, copy
# verified by hash, as a user runs it) against `cp -r` and `rclone copy
# --transfers 8`, in the same run, alternating. Twice: with the source evicted
# from the page cache before every copy (a model on disk, not read lately), and
# with it cached. Prints medians, GiB/s, and ftpipe's speed as a multiple of each
# peer's (above 1: ftpipe is faster).
#   RUNS=3 BENCH_DIR=/tmp/ftpipe-bench DEST_DIR=/dev/shm sh tests/bench/shm.sh
# The source (one 3 GiB file, 8 files of 64 MiB, 4096 of 128 KiB) is made once in
# BENCH_DIR and reused. Copies go to a fresh folder in DEST_DIR, removed at exit;
# nothing else there is touched. Evicting reads each source file's pages out of
# the cache with `dd iflag=nocache count=0`, which affects those files only.
set -e
cd "$(dirname "$0")/../.."
FTPIPE=${FTPIPE:-$(pwd)/build/ftpipe}
RUNS=${RUNS:-3}
DIR=${BENCH_DIR:-/tmp/ftpipe-bench}
DEST=${DEST_DIR:-/dev/shm}
SOURCE="$DIR/shm-source-4GiB"
GIB=1073741824

mkdir -p "$DIR"
if [ ! -e "$SOURCE.complete" ]; then
  echo "making $SOURCE (4 GiB of random bytes)..."
  rm -rf "$SOURCE"
  mkdir -p "$SOURCE/shards" "$SOURCE/small"
  head -c $((3 * GIB)) /dev/urandom > "$SOURCE/model.bin"
  head -c $((GIB / 2)) /dev/urandom | split -b 64M -a 1 - "$SOURCE/shards/shard-"
  head -c $((GIB / 2)) /dev/urandom | split -b 128K -a 4 - "$SOURCE/small/part-"
  touch "$SOURCE.complete"
fi
need=$((5 * GIB))
free_bytes=$(df -B1 --output=avail "$DEST" | tail -1)
[ "$free_bytes" -ge "$need" ] || { echo "$DEST has $free_bytes bytes free; the benchmark needs $need"; exit 1; }

RUN_DIR=$(mktemp -d "$DEST/ftpipe-shm-bench.XXXXXX")
TIMES=$(mktemp -d "${TMPDIR:-/tmp}/ftpipe-shm-bench-times.XXXXXX")
WORKSPACE=$(mktemp -d "$DIR/shm-workspace.XXXXXX")
trap 'chmod -R u+w "$RUN_DIR" "$WORKSPACE" 2>/dev/null; rm -rf "$RUN_DIR" "$TIMES" "$WORKSPACE"' EXIT
cat > "$WORKSPACE/Ftpipe" <<EOF
staged: shm $SOURCE
	dir = $RUN_DIR/ftpipe
EOF
mkdir "$RUN_DIR/ftpipe"

evict() { find "$SOURCE" -type f -exec dd if={} iflag=nocache count=0 status=none \; ; }
warm() { find "$SOURCE" -type f -exec cat {} + > /dev/null; }
now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# time_into FILE COMMAND...: appends the command's wall time in microseconds.
time_into() {
  f=$1; shift
  s=$(now_ns); "$@"; e=$(now_ns)
  echo $(( (e - s) / 1000 )) >> "$f"
}
ftpipe_stage() { "$FTPIPE" -C "$WORKSPACE" > "$TIMES/ftpipe.log" 2>&1 || { cat "$TIMES/ftpipe.log"; exit 1; }; }

# The first run hashes the source for the stage key; the state's stat cache
# keeps those hashes, as it does for a user's later runs.
ftpipe_stage
grep -q "staged 4105 files, 4.0 GiB" "$TIMES/ftpipe.log" || { cat "$TIMES/ftpipe.log"; exit 1; }

for mode in cold warm; do
  for r in $(seq "$RUNS"); do
    [ $mode = cold ] && evict || warm
    time_into "$TIMES/$mode-cp" cp -r "$SOURCE" "$RUN_DIR/cp"
    rm -rf "$RUN_DIR/cp"
    [ $mode = cold ] && evict || warm
    time_into "$TIMES/$mode-rclone" rclone copy -q --transfers 8 "$SOURCE" "$RUN_DIR/rclone"
    rm -rf "$RUN_DIR/rclone"
    [ $mode = cold ] && evict || warm
    chmod -R u+w "$RUN_DIR/ftpipe"; rm -rf "$RUN_DIR/ftpipe/"*  # the copy is gone: the stage runs again
    time_into "$TIMES/$mode-ftpipe" ftpipe_stage
    grep -q "staged 4105 files, 4.0 GiB" "$TIMES/ftpipe.log" || { cat "$TIMES/ftpipe.log"; exit 1; }
  done
done

echo "staging a 4 GiB folder (one 3 GiB file, 8 of 64 MiB, 4096 of 128 KiB) from $DIR into $DEST,"
echo "median of $RUNS runs ($(nproc) cores):"
for mode in cold warm; do
  cp_us=$(median < "$TIMES/$mode-cp"); rc_us=$(median < "$TIMES/$mode-rclone"); ft_us=$(median < "$TIMES/$mode-ftpipe")
  [ $mode = cold ] && echo "  source evicted from the page cache before each copy:" \
                   || echo "  source in the page cache:"
  awk -v c="$cp_us" -v r="$rc_us" -v f="$ft_us" 'BEGIN {
    printf "    cp -r                       %7.2f s  %5.2f GiB/s\n", c / 1e6, 4 / (c / 1e6);
    printf "    rclone copy --transfers 8   %7.2f s  %5.2f GiB/s\n", r / 1e6, 4 / (r / 1e6);
    printf "    ftpipe (shm stage, verified) %6.2f s  %5.2f GiB/s  %.2fx cp, %.2fx rclone (target: > 1)\n",
           f / 1e6, 4 / (f / 1e6), c / f, r / f;
  }'
done
