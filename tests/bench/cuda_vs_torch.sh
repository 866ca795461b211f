#!/bin/sh
# LoRA training on one GPU, side by side: ftpipe's cuda backend
# (build/gpu/cuda_vs_torch, from `make gpu-tests`) and PyTorch + transformers +
# PEFT (cuda_vs_torch.py: sdpa attention, LoRA r=8 alpha=16 on all seven
# projections, AdamW), on random-init models, with and without recomputation
# (gradient checkpointing). Prints tokens/s and peak device memory of both and
# their ratios (speed: ftpipe / peer, above 1 is faster; memory: ftpipe / peer,
# the target is at most 0.8).
#   SIZES="qwen2.5-0.5b:8 qwen2.5-1.5b:8 qwen2.5-7b:4" SEQ=1024 STEPS=5 RECOMPUTE="no yes" \
#     sh tests/bench/cuda_vs_torch.sh
# SIZES lists shape:batch pairs; models are written once into BENCH_DIR
# (default /dev/shm/ftpipe-bench). Without a GPU, or without the programs, it
# says so and exits 0, so that `make bench` passes on machines without one.
cd "$(dirname "$0")/../.."
SIZES=${SIZES:-"qwen2.5-0.5b:8 qwen2.5-1.5b:8 qwen2.5-7b:4"}
SEQ=${SEQ:-1024}
STEPS=${STEPS:-5}
RECOMPUTE=${RECOMPUTE:-"no yes"}
DIR=${BENCH_DIR:-/dev/shm/ftpipe-bench}
DRIVER=build/gpu/cuda_vs_torch
PEER=tests/bench/cuda_vs_torch.py
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "cuda_vs_torch: skipped (no GPU here)"; exit 0
fi
if [ ! -x "$DRIVER" ]; then
  echo "cuda_vs_torch: skipped ($DRIVER is missing: make gpu-tests)"; exit 0
fi
if ! python3 -c 'import torch, transformers, peft' 2>/dev/null; then
  echo "cuda_vs_torch: skipped (python3 lacks torch, transformers or peft)"; exit 0
fi
# the libraries carried with the driver, for the driver only (not for python)
driver() { LD_LIBRARY_PATH="$(pwd)/build/gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$DRIVER" "$@"; }
mkdir -p "$DIR"

# field NAME of a JSON line
field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p"; }
gib() { awk -v b="$1" 'BEGIN { if (b == "") print "-"; else printf "%.2f GiB", b / 1073741824 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }

echo "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1); sequence $SEQ, $STEPS timed steps after 2 warm-up"
printf '%-13s %-7s %-9s %12s %12s %6s %11s %11s %6s\n' model batch recompute "ftpipe tok/s" "peer tok/s" speed \
  "ftpipe peak" "peer peak" memory
for size in $SIZES; do
  shape=${size%%:*}; batch=${size#*:}; model="$DIR/$shape"
  if [ ! -f "$model/config.json" ]; then
    driver init "$shape" "$model" || { echo "cuda_vs_torch: cannot write $model"; exit 1; }
  fi
  for recompute in $RECOMPUTE; do
    ours=""
    if [ "$recompute" = no ]; then
      ours=$(driver train "$model" "$batch" "$SEQ" "$STEPS" 2>"$DIR/ftpipe.err") || { echo "ftpipe failed:"; cat "$DIR/ftpipe.err"; }
    fi
    flag=""; [ "$recompute" = yes ] && flag=--recompute
    theirs=$(python3 "$PEER" "$model" "$batch" "$SEQ" "$STEPS" $flag 2>"$DIR/peer.err") || { echo "peer failed:"; tail -n 5 "$DIR/peer.err"; }
    [ -n "$ours" ] && echo "# ftpipe $shape $recompute: $ours"
    [ -n "$theirs" ] && echo "# peer $shape $recompute: $theirs"
    our_speed=$(echo "$ours" | field tokens_per_second); their_speed=$(echo "$theirs" | field tokens_per_second)
    our_peak=$(echo "$ours" | field peak_bytes); their_peak=$(echo "$theirs" | field peak_bytes)
    printf '%-13s %-7s %-9s %12s %12s %6s %11s %11s %6s\n' "$shape" "${batch}x$SEQ" "$recompute" "${our_speed:--}" \
      "${their_speed:--}" "$(ratio "$our_speed" "$their_speed")" "$(gib "$our_peak")" "$(gib "$their_peak")" \
      "$(ratio "$our_peak" "$their_peak")"
  done
done
echo "(ftpipe has no recomputation yet: its 'yes' rows are empty)"
