#!/bin/sh
# Training on the cuda backend is deterministic: the same LoRA run twice gives
# the same adapter bytes, and a run killed (-9) after a checkpoint and run again
# resumes and ends with those bytes too. The rows are packed to 256 tokens, so
# attention's backward spans several key tiles, with dropout and recomputation
# on. Run on a GPU machine by tests/gpu/run.sh, with build/ftpipe.
. "$(dirname "$0")/../e2e/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
FTPIPE="$ROOT/build/ftpipe"

if ! nvidia-smi >/dev/null 2>&1; then
  echo "ok training on the GPU is deterministic # SKIP no GPU here"
  exit 0
fi

workspace() {
  W=$(t_workspace)
  cp "$ROOT/examples/quickstart/make_addition_data.sh" "$W/"
  cat > "$W/Ftpipe" <<'P'
models/tiny: init
	architecture = qwen2
	hidden_size = 256
	intermediate_size = 512
	num_hidden_layers = 2
	num_attention_heads = 4
	num_key_value_heads = 2
	head_dim = 64

data/train.json: shell make_addition_data.sh
	run = sh $< train 2000 > $@

data/train_set: tokenize models/tiny data/train.json
	template = plain
	cutoff_len = 256
	packing = true

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
