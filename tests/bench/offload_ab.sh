#!/bin/sh
# Two builds of ftpipe side by side on one GPU: full fine-tuning with
# offload_optimizer = cpu (AdamW's state on the host, the update on the host's
# cores), where the optimizer step dominates a small batch, and the same run
# with AdamW on the GPU as the yardstick. A is this checkout's build/ftpipe; B
# another build of it (e.g. from the commit before a change to the offloaded
# step), given as the folder holding its ftpipe and ftpipe-full. Each run trains
# STEPS steps of a model of LAYERS layers of Qwen2.5-0.5B's width (hidden 896,
# MLP 4864) from scratch; the runs go in turn, RUNS times each, and the script
# prints each side's median train_runtime (train_results.json) and the ratio.
# (No peer: DeepSpeed's ZeRO-Offload is not installed where the GPU is.) Each
# run has its own save_steps, which changes nothing with save_strategy = no but
# the stage's key, so that no run is a cached result.
#   B=build/bench-old RUNS=3 STEPS=8 LAYERS=24 sh tests/bench/offload_ab.sh
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
STEPS=${STEPS:-8}
LAYERS=${LAYERS:-24}
. tests/bench/two_builds.inc
two_builds_setup offload_ab
{
  printf 'OFFLOAD = none\nRUN = 0\n\n'
  two_builds_model 896 4864 14 64 "$LAYERS"
  cat <<P
model: train models/base data/train_set
	backend = cuda
	finetuning_type = full
	learning_rate = 1e-5
	per_device_train_batch_size = 2
	max_steps = $STEPS
	logging_steps = 1
	save_strategy = no
	save_steps = \$(RUN)
	zero_stage = 1
	offload_optimizer = \$(OFFLOAD)
P
} > "$W/Ftpipe"
runtime() { sed -n 's/.*"train_runtime": *\([0-9.e+-]*\).*/\1/p' "$W/model/train_results.json"; }
two_builds_prepare
echo "full fine-tuning, $LAYERS layers of width 896, $STEPS steps of 2 x 32 tokens, median of $RUNS runs each, in turn"
printf '%-22s %10s %10s %7s\n' offload_optimizer "A s" "B s" "A/B"
run=0
for offload in ${MODES:-cpu none}; do
  : > "$W/a.txt"; : > "$W/b.txt"
  i=0
  while [ $i -lt "$RUNS" ]; do
    for side in a b; do
      dir=$A; [ $side = b ] && dir=$B
      run=$((run + 1))
      "$dir/ftpipe" -C "$W" model OFFLOAD=$offload RUN=$run > "$W/run.out" 2>&1 || { tail -20 "$W/run.out"; exit 1; }
      runtime >> "$W/$side.txt"
    done
    i=$((i + 1))
  done
  a=$(median < "$W/a.txt"); b=$(median < "$W/b.txt")
  printf '%-22s %10.3f %10.3f %7.2f\n' "$offload" "$a" "$b" "$(echo "$a $b" | awk '{ print $1 / $2 }')"
done
rm -rf "$W"
