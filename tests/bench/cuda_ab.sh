#!/bin/sh
# Two builds of the cuda backend's training step side by side: what a change to
# the kernels costs or gains. A is build/gpu/cuda_vs_torch (this checkout's,
# from `make gpu-tests`); B is another build of it, e.g. from the commit before
# the change. They run in turn, RUNS times each, and the script prints each
# side's median tokens/s and peak memory and the ratio A / B.
#   B=/path/to/old/cuda_vs_torch SIZES="qwen2.5-0.5b:8 qwen2.5-7b:4" SEQ=1024 STEPS=5 RUNS=3 \
#   RECOMPUTE="no" sh tests/bench/cuda_ab.sh
# Models are written once into BENCH_DIR (default /dev/shm/ftpipe-bench).
cd "$(dirname "$0")/../.."
SIZES=${SIZES-"qwen2.5-0.5b:8 qwen2.5-7b:4"}
SEQ=${SEQ:-1024}
STEPS=${STEPS:-5}
RUNS=${RUNS:-3}
RECOMPUTE=${RECOMPUTE:-no}
DIR=${BENCH_DIR:-/dev/shm/ftpipe-bench}
A=${A:-build/gpu/cuda_vs_torch}
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "cuda_ab: skipped (no GPU here)"; exit 77
fi
for driver in "$A" "$B"; do
  [ -n "$driver" ] && [ -x "$driver" ] || { echo "cuda_ab: skipped (set B to a second build; A is $A)"; exit 77; }
done
run() { LD_LIBRARY_PATH="$(pwd)/build/gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"; }
field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mkdir -p "$DIR"
echo "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1), $(date -u +%Y-%m-%d): A=$A B=$B"
echo "training: sequence $SEQ, $STEPS timed steps after 2 warm-up, median of $RUNS runs each, A and B in turn"
printf '%-13s %-7s %-9s %12s %12s %6s %11s %11s\n' model batch recompute "A tok/s" "B tok/s" "A/B" "A peak" "B peak"
for size in $SIZES; do
  shape=${size%%:*}; batch=${size#*:}
  [ -f "$DIR/$shape/config.json" ] || run "$A" init "$shape" "$DIR/$shape" || exit 1
  for recompute in $RECOMPUTE; do
    flag=""; [ "$recompute" = yes ] && flag=--recompute
    : > "$DIR/a.txt"; : > "$DIR/b.txt"
    i=0
    while [ $i -lt "$RUNS" ]; do
      run "$A" train "$DIR/$shape" "$batch" "$SEQ" "$STEPS" $flag >> "$DIR/a.txt" 2>/dev/null
      run "$B" train "$DIR/$shape" "$batch" "$SEQ" "$STEPS" $flag >> "$DIR/b.txt" 2>/dev/null
      i=$((i + 1))
    done
    a=$(field tokens_per_second < "$DIR/a.txt" | median); b=$(field tokens_per_second < "$DIR/b.txt" | median)
    ap=$(field peak_bytes < "$DIR/a.txt" | median); bp=$(field peak_bytes < "$DIR/b.txt" | median)
    printf '%-13s %-7s %-9s %12s %12s %6s %11s %11s\n' "$shape" "${batch}x$SEQ" "$recompute" "${a:--}" "${b:--}" \
      "$(awk -v a="$a" -v b="$b" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.3f", a / b }')" \
      "$(awk -v x="$ap" 'BEGIN { if (x == "") print "-"; else printf "%.2f GiB", x / 1073741824 }')" \
      "$(awk -v x="$bp" 'BEGIN { if (x == "") print "-"; else printf "%.2f GiB", x / 1073741824 }')"
  done
done
