#!/bin/sh
# Two builds of ftpipe side by side on one GPU: the host memory of full
# fine-tuning on cuda that saves a checkpoint and writes its result, where the
# plan lives on the GPU and the host holds what those writes buffer. A is this
# checkout's build/ftpipe; B another build of it (e.g. from the commit before
# checkpoints were written a tensor at a time), given as the folder holding
# its ftpipe and ftpipe-full. Each run trains STEPS steps of a model of LAYERS
# layers of Qwen2.5-1.5B's width (hidden 1536, MLP 8960) from scratch, saves
# checkpoint-STEPS and writes the model in bf16; the runs go in turn, RUNS
# times each, and the script prints each side's median peak resident memory
# (the stage's "peak host memory (resident)"), the ratio, and A's estimate.
# (No peer: DeepSpeed is not installed where the GPU is.) Each run has its own
# seed in the key, so that no run is a cached result.
#   B=build/bench-old RUNS=3 STEPS=2 LAYERS=28 sh tests/bench/save_host_ab.sh
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
STEPS=${STEPS:-2}
LAYERS=${LAYERS:-28}
. tests/bench/two_builds.inc
two_builds_setup save_host_ab
{
  printf 'RUN = 0\n\n'
  two_builds_model 1536 8960 12 128 "$LAYERS" "dtype = bf16"
  cat <<P
model: train models/base data/train_set
	backend = cuda
	finetuning_type = full
	learning_rate = 1e-5
	per_device_train_batch_size = 2
	max_steps = $STEPS
	logging_steps = 1
	save_strategy = steps
	save_steps = $STEPS
	seed = \$(RUN)
P
} > "$W/Ftpipe"
peak() { "$1/ftpipe" -C "$W" log model | sed -n 's/.*peak host memory (resident): .* (\([0-9]*\) bytes).*/\1/p' | tail -n1; }
two_builds_prepare
echo "full fine-tuning on cuda, $LAYERS layers of width 1536, $STEPS steps, checkpoint-$STEPS and the bf16 result; median of $RUNS runs each, in turn"
: > "$W/a.txt"; : > "$W/b.txt"
run=0 i=0
while [ $i -lt "$RUNS" ]; do
  for side in a b; do
    dir=$A; [ $side = b ] && dir=$B
    run=$((run + 1))
    "$dir/ftpipe" -C "$W" model RUN=$run > "$W/run.out" 2>&1 || { tail -20 "$W/run.out"; exit 1; }
    "$dir/ftpipe" -C "$W" log model | grep -q "saved checkpoint-$STEPS" ||
      { echo "save_host_ab: $side's run saved no checkpoint-$STEPS"; exit 1; }
    peak "$dir" >> "$W/$side.txt"
    rm -rf "$W/model" "$W"/.ftpipe/work/* # each run's checkpoint and result: 14 bytes a weight
  done
  i=$((i + 1))
done
a=$(median < "$W/a.txt"); b=$(median < "$W/b.txt")
estimate=$("$A/ftpipe" -C "$W" estimate --json model | python3 -c '
import json, sys
for s in json.load(sys.stdin)["stages"]:
    if s["target"] == "model": print(int(s["host_bytes"]["value"]))')
printf '%-28s %12s %12s %7s %14s\n' "peak host memory" "A MiB" "B MiB" "A/B" "A estimate MiB"
printf '%-28s %12.1f %12.1f %7.2f %14.1f\n' "full fine-tuning, saving" "$(echo "$a" | awk '{ print $1 / 1048576 }')" \
  "$(echo "$b" | awk '{ print $1 / 1048576 }')" "$(echo "$a $b" | awk '{ print $1 / $2 }')" \
  "$(echo "$estimate" | awk '{ print $1 / 1048576 }')"
rm -rf "$W"
