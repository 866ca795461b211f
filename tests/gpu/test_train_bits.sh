#!/bin/sh
# Training on the cuda backend is deterministic: the same LoRA run twice gives
# the same adapter bytes, and a run killed (-9) after a checkpoint and run again
# resumes and ends with those bytes too. The rows are packed to 256 tokens, so
# attention's backward spans several key tiles, with dropout and recomputation
# on. Run on a GPU machine by tests/gpu/run.sh, with build/ftpipe.
. "$(dirname "$0")/gpu_lib.sh"

if ! nvidia-smi >/dev/null 2>&1; then
  echo "ok training on the GPU is deterministic # SKIP no GPU here"
  exit 0
fi

workspace() {
  W=$(tiny_addition_workspace 2000 256 "packing = true")
  cat >> "$W/Ftpipe" <<'P'
adapter: train models/tiny data/train_set
	backend = cuda
	learning_rate = 1e-3
	per_device_train_batch_size = 4
	lora_dropout = 0.1
	gradient_checkpointing = true
	max_steps = 300
	save_steps = 40
	logging_steps = 10
P
}

t_case "the same LoRA run twice on the GPU gives the same adapter bytes"
workspace
FIRST=$W
t_run "$FTPIPE" -C "$FIRST"
t_expect_status 0
workspace
SECOND=$W
t_run "$FTPIPE" -C "$SECOND"
t_expect_status 0
cmp -s "$FIRST/adapter/adapter_model.safetensors" "$SECOND/adapter/adapter_model.safetensors" ||
  t_fail "two runs gave different adapters"
t_end

t_case "kill -9 after a checkpoint on the GPU, then a rerun resumes and ends with the same bytes"
workspace
"$FTPIPE" -C "$W" > "$W/first.out" 2>&1 &
pid=$!
waited=0
until ls -d "$W"/.ftpipe/work/*/checkpoints/checkpoint-40 >/dev/null 2>&1 || [ $waited -ge 1200 ]; do
  sleep 0.05; waited=$((waited + 1))
done
stage_pids=$(ps -o pid= --ppid "$pid" 2>/dev/null)
kill -9 "$pid" $stage_pids 2>/dev/null
wait "$pid" 2>/dev/null
[ -f "$W/adapter/adapter_model.safetensors" ] && t_fail "the run finished before it was killed; $(cat "$W/first.out")"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "resumed from checkpoint-"
cmp -s "$FIRST/adapter/adapter_model.safetensors" "$W/adapter/adapter_model.safetensors" ||
  t_fail "the resumed adapter differs from the uninterrupted one"
t_end
