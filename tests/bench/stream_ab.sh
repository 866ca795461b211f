#!/bin/sh
# Two builds of ftpipe side by side on one GPU: LoRA on one rank with ZeRO-3
# and offload_param = cpu, where every weight stays in host memory and each
# pass uploads it a unit at a time, and the same run at stage 0 (every weight
# on the GPU) as the yardstick; with FINETUNING=full, full fine-tuning, the
# streamed run with offload_optimizer = cpu too (AdamW, the master copy and
# the gradients' shard in host memory). A is this checkout's build/ftpipe; B another
# build of it (e.g. from the commit before the uploads moved to their own
# stream), given as the folder holding its ftpipe. Each run trains STEPS steps
# of BATCH x 32 tokens on a model of LAYERS layers of Qwen2.5-1.5B's width
# (HIDDEN 1536, INNER 8960, HEADS 12 of 128; Qwen2.5-7B's: 3584, 18944, 28) in
# bf16, from scratch; the runs go in turn, RUNS
# times each, and the script prints each side's median train_runtime and peak
# device memory (train_results.json) and the ratios. (No peer: DeepSpeed,
# whose ZeRO-3 offloads parameters, is not installed where the GPU is.) Each
# run has its own save_steps, which changes nothing with save_strategy = no
# but the stage's key, so that no run is a cached result. MODES (default
# "stream plain") may also name `offload`: the weights on the GPU and
# offload_optimizer = cpu (one rank's ZeRO-1 with offload, AdamW on the host).
#   B=build/bench-stream RUNS=3 STEPS=6 LAYERS=28 BATCH=64 sh tests/bench/stream_ab.sh
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
STEPS=${STEPS:-6}
LAYERS=${LAYERS:-28}
BATCH=${BATCH:-64}
HIDDEN=${HIDDEN:-1536}
INNER=${INNER:-8960}
HEADS=${HEADS:-12}
FINETUNING=${FINETUNING:-lora}
RATE=1e-4; [ "$FINETUNING" = full ] && RATE=1e-5
. tests/bench/two_builds.inc
two_builds_setup stream_ab
{
  printf 'ZERO = 0\nOFFLOAD = none\nOPTIMIZER = none\nRUN = 0\n\n'
  two_builds_model "$HIDDEN" "$INNER" "$HEADS" 128 "$LAYERS" "dtype = bf16"
  cat <<P
model: train models/base data/train_set
	backend = cuda
	finetuning_type = $FINETUNING
	lora_target = all
	learning_rate = $RATE
	per_device_train_batch_size = $BATCH
	max_steps = $STEPS
	logging_steps = 1
	save_strategy = no
	save_steps = \$(RUN)
	zero_stage = \$(ZERO)
	offload_param = \$(OFFLOAD)
	offload_optimizer = \$(OPTIMIZER)
P
} > "$W/Ftpipe"
result() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p" "$W/model/train_results.json"; }
two_builds_prepare
echo "$FINETUNING on one GPU, $LAYERS layers of width $HIDDEN in bf16, $STEPS steps of $BATCH x 32 tokens, median of $RUNS runs each, in turn"
printf '%-34s %9s %9s %6s %11s %11s %6s\n' weights "A s" "B s" "A/B" "A GiB" "B GiB" "A/B"
run=0
for mode in ${MODES:-stream plain}; do
  zero=0; offload=none; optimizer=none
  [ "$mode" = stream ] && { zero=3; offload=cpu; }
  [ "$mode" = stream ] && [ "$FINETUNING" = full ] && optimizer=cpu
  [ "$mode" = offload ] && { zero=1; optimizer=cpu; }
  for f in a.s b.s a.m b.m; do : > "$W/$f"; done
  i=0
  while [ $i -lt "$RUNS" ]; do
    for side in a b; do
      dir=$A; [ $side = b ] && dir=$B
      run=$((run + 1))
      "$dir/ftpipe" -C "$W" model ZERO=$zero OFFLOAD=$offload OPTIMIZER=$optimizer RUN=$run > "$W/run.out" 2>&1 ||
        { tail -20 "$W/run.out"; exit 1; }
      result train_runtime >> "$W/$side.s"
      result peak_device_bytes >> "$W/$side.m"
    done
    i=$((i + 1))
  done
  as=$(median < "$W/a.s"); bs=$(median < "$W/b.s"); am=$(median < "$W/a.m"); bm=$(median < "$W/b.m")
  label="in host memory (ZeRO-3, offload_param)"; [ "$mode" = plain ] && label="on the GPU (stage 0)"
  [ "$optimizer" = cpu ] && label="in host memory, AdamW there too"
  [ "$mode" = offload ] && label="on the GPU, AdamW in host memory"
  printf '%-34s %9.3f %9.3f %6.2f %11.2f %11.2f %6.2f\n' "$label" "$as" "$bs" "$(echo "$as $bs" | awk '{ print $1 / $2 }')" \
    "$(echo "$am" | awk '{ print $1 / 1073741824 }')" "$(echo "$bm" | awk '{ print $1 / 1073741824 }')" \
    "$(echo "$am $bm" | awk '{ print $1 / $2 }')"
done
rm -rf "$W"
