#!/bin/sh
# ftpipe's cuda backend side by side with PyTorch + transformers (+ PEFT) on one
# GPU (build/gpu/cuda_vs_torch from `make gpu-tests`; the peer is
# cuda_vs_torch.py), on random-init models, in three parts:
#   training: LoRA r=8 alpha=16 on all seven projections, AdamW, sdpa attention,
#     with and without recomputation (gradient checkpointing): tokens/s and peak
#     device memory of both, and their ratios (speed: ftpipe / peer, above 1 is
#     faster; memory: ftpipe / peer, the target is at most 0.8), one row per
#     peer of PEERS (cuda_vs_torch.py says what each is: PEFT as it comes, the
#     adapter in bf16 with fused AdamW, and that under torch.compile);
#   loading: ft_model_load against from_pretrained(bf16, device_map="cuda") of
#     the same safetensors folder, from /dev/shm and from disk (the page cache
#     dropped first where this user may): seconds, and peer / ftpipe (above 1:
#     ftpipe loads faster);
#   generation: greedy, batch GEN_BATCH, GEN_PROMPT prompt tokens and exactly
#     GEN_NEW new ones: tokens/s, and ftpipe / peer, for each peer of GEN_PEERS
#     (transformers' dynamic cache; its static cache with torch.compile).
#   SIZES="qwen2.5-0.5b:8 qwen2.5-1.5b:8 qwen2.5-7b:4" SEQ=1024 STEPS=5 RECOMPUTE="no yes" \
#   LOAD_SIZES="qwen2.5-1.5b qwen2.5-7b" GEN_SIZES="qwen2.5-0.5b qwen2.5-1.5b" \
#   GEN_BATCH=32 GEN_PROMPT=128 GEN_NEW=128 PEERS="peft peft-bf16 compiled" \
#   GEN_PEERS="dynamic static" sh tests/bench/cuda_vs_torch.sh
# An empty list skips its part. Models are written once into BENCH_DIR (default
# /dev/shm/ftpipe-bench) and copied to DISK_DIR (default /var/tmp/ftpipe-bench)
# for the disk rows. Without a GPU, or without the programs, it says why and
# exits 77, which `make bench` counts as skipped (not as a pass).
cd "$(dirname "$0")/../.."
SIZES=${SIZES-"qwen2.5-0.5b:8 qwen2.5-1.5b:8 qwen2.5-7b:4"}
SEQ=${SEQ:-1024}
STEPS=${STEPS:-5}
RECOMPUTE=${RECOMPUTE:-"no yes"}
LOAD_SIZES=${LOAD_SIZES-"qwen2.5-1.5b qwen2.5-7b"}
GEN_SIZES=${GEN_SIZES-"qwen2.5-0.5b qwen2.5-1.5b"}
GEN_BATCH=${GEN_BATCH:-32}
GEN_PROMPT=${GEN_PROMPT:-128}
GEN_NEW=${GEN_NEW:-128}
PEERS=${PEERS:-"peft peft-bf16 compiled"}
GEN_PEERS=${GEN_PEERS:-"dynamic static"}
DIR=${BENCH_DIR:-/dev/shm/ftpipe-bench}
DISK_DIR=${DISK_DIR:-/var/tmp/ftpipe-bench}
DRIVER=build/gpu/cuda_vs_torch
PEER=tests/bench/cuda_vs_torch.py
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "cuda_vs_torch: skipped (no GPU here)"; exit 77
fi
if [ ! -x "$DRIVER" ]; then
  echo "cuda_vs_torch: skipped ($DRIVER is missing: make gpu-tests)"; exit 77
fi
if ! python3 -c 'import torch, transformers, peft' 2>/dev/null; then
  echo "cuda_vs_torch: skipped (python3 lacks torch, transformers or peft)"; exit 77
fi
# the libraries carried with the driver, for the driver only (not for python)
driver() { LD_LIBRARY_PATH="$(pwd)/build/gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$DRIVER" "$@"; }
mkdir -p "$DIR"

# field NAME of a JSON line
field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p"; }
gib() { awk -v b="$1" 'BEGIN { if (b == "") print "-"; else printf "%.2f GiB", b / 1073741824 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }
# runs one side, printing its JSON line, or saying why it failed (stderr kept in $DIR)
side() {
  name=$1; shift
  "$@" 2>"$DIR/$name.err" || { echo "$name failed: $(tail -n 3 "$DIR/$name.err" | tr '\n' ' ')" >&2; return 0; }
}
model_of() {
  if [ ! -f "$DIR/$1/config.json" ]; then
    driver init "$1" "$DIR/$1" || { echo "cuda_vs_torch: cannot write $DIR/$1" >&2; exit 1; }
  fi
  echo "$DIR/$1"
}

echo "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1), $(date -u +%Y-%m-%d)"
if [ -n "$SIZES" ]; then
  echo "training: sequence $SEQ, $STEPS timed steps after 2 warm-up"
  printf '%-13s %-7s %-9s %-10s %12s %12s %6s %11s %11s %6s\n' model batch recompute peer "ftpipe tok/s" \
    "peer tok/s" speed "ftpipe peak" "peer peak" memory
fi
for size in $SIZES; do
  shape=${size%%:*}; batch=${size#*:}; model=$(model_of "$shape") || exit 1
  for recompute in $RECOMPUTE; do
    flag=""; [ "$recompute" = yes ] && flag=--recompute
    ours=$(side ftpipe driver train "$model" "$batch" "$SEQ" "$STEPS" $flag)
    echo "# ftpipe $shape $recompute: $ours"
    our_speed=$(echo "$ours" | field tokens_per_second); our_peak=$(echo "$ours" | field peak_bytes)
    for peer in $PEERS; do
      theirs=$(side "peer-$peer" python3 "$PEER" train "$model" "$batch" "$SEQ" "$STEPS" $flag --peer "$peer")
      echo "# peer $peer $shape $recompute: $theirs"
      their_speed=$(echo "$theirs" | field tokens_per_second); their_peak=$(echo "$theirs" | field peak_bytes)
      printf '%-13s %-7s %-9s %-10s %12s %12s %6s %11s %11s %6s\n' "$shape" "${batch}x$SEQ" "$recompute" "$peer" \
        "${our_speed:--}" "${their_speed:--}" "$(ratio "$our_speed" "$their_speed")" "$(gib "$our_peak")" \
        "$(gib "$their_peak")" "$(ratio "$our_peak" "$their_peak")"
    done
  done
done

# Drops the page cache where this user may, so that a disk load reads the disk.
drop_cache() { sync; { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null && echo cold || echo "page cache"; }
if [ -n "$LOAD_SIZES" ]; then
  echo "loading bf16 safetensors onto the GPU"
  printf '%-13s %-22s %10s %10s %14s %6s\n' model from "ftpipe s" "peer s" "ftpipe GB/s" "speed"
fi
for shape in $LOAD_SIZES; do
  model=$(model_of "$shape") || exit 1
  disk="$DISK_DIR/$shape"
  if [ ! -f "$disk/config.json" ]; then
    mkdir -p "$DISK_DIR" && cp -r "$model" "$DISK_DIR/" || { echo "cuda_vs_torch: cannot copy to $disk" >&2; disk=""; }
  fi
  for from in "$model" $disk; do
    where="/dev/shm"; [ "$from" = "$disk" ] && where="disk ($(drop_cache))"
    ours=$(side ftpipe driver load "$from")
    [ "$from" = "$disk" ] && drop_cache >/dev/null
    theirs=$(side peer python3 "$PEER" load "$from")
    echo "# ftpipe $shape $where: $ours"
    echo "# peer $shape $where: $theirs"
    our_time=$(echo "$ours" | field load_seconds); their_time=$(echo "$theirs" | field load_seconds)
    printf '%-13s %-22s %10s %10s %14s %6s\n' "$shape" "$where" "${our_time:--}" "${their_time:--}" \
      "$(echo "$ours" | field gb_per_second)" "$(ratio "$their_time" "$our_time")"
  done
done

if [ -n "$GEN_SIZES" ]; then
  echo "greedy generation: batch $GEN_BATCH, $GEN_PROMPT prompt tokens + $GEN_NEW new"
  printf '%-13s %-8s %12s %12s %6s %11s %11s\n' model peer "ftpipe tok/s" "peer tok/s" speed "ftpipe peak" \
    "peer peak"
fi
for shape in $GEN_SIZES; do
  model=$(model_of "$shape") || exit 1
  ours=$(side ftpipe driver generate "$model" "$GEN_BATCH" "$GEN_PROMPT" "$GEN_NEW")
  echo "# ftpipe $shape: $ours"
  our_speed=$(echo "$ours" | field tokens_per_second)
  for peer in $GEN_PEERS; do
    theirs=$(side "peer-$peer" python3 "$PEER" generate "$model" "$GEN_BATCH" "$GEN_PROMPT" "$GEN_NEW" --peer "$peer")
    echo "# peer $peer $shape: $theirs"
    their_speed=$(echo "$theirs" | field tokens_per_second)
    printf '%-13s %-8s %12s %12s %6s %11s %11s\n' "$shape" "$peer" "${our_speed:--}" "${their_speed:--}" \
      "$(ratio "$our_speed" "$their_speed")" "$(gib "$(echo "$ours" | field peak_bytes)")" \
      "$(gib "$(echo "$theirs" | field peak_bytes)")"
  done
done
if [ -n "$GEN_SIZES" ] && ! python3 -c 'import vllm' 2>/dev/null; then
  echo "# vLLM is not installed here: no vLLM row"
fi
