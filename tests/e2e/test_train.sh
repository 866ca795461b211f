#!/bin/sh
# The train kind through pipelines: a tiny f32 model (init), the addition data
# (examples/quickstart's script), tokenize, then train: the output folder, the
# metrics, the cache, a kill -9 mid-run resumed to the same bytes, a tokenizer
# mismatch, a diverging run, full fine-tuning and wrong inputs.
. "$(dirname "$0")/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"

# A workspace whose pipeline ends in a train stage with the given parameter lines
# (lib.sh), and a tokenizer the model does not have.
train_workspace() {
  t_train_workspace 64 "$@"
  cp "$ROOT/tests/fixtures/datasets/byte_model/tokenizer.json" "$W/other_tokenizer.json"
}
write_pipeline() { t_train_pipeline 64 "$@"; }
json_has() { grep -q -- "$2" "$1" || t_fail "$1 lacks $2: $(cat "$1")"; }
metric_count() { # NAME
  python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM metrics WHERE name = ?', (sys.argv[2],)).fetchone()[0])" "$W/.ftpipe/state.db" "$1"
}

t_case "trains a LoRA adapter: the output folder and the metrics"
train_workspace "threads = 1" "learning_rate = 1e-2" "per_device_train_batch_size = 4" "logging_steps = 2" \
  "max_steps = 12" "save_steps = 5" "warmup_steps = 2"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "done     adapter in "
t_expect_contains ": mean loss "
t_expect_contains "after 12 steps (0.75 epochs)"
for f in adapter_config.json adapter_model.safetensors ftpipe_train.json train_results.json trainer_log.jsonl; do
  [ -f "$W/adapter/$f" ] || t_fail "adapter/$f is missing"
done
json_has "$W/adapter/ftpipe_train.json" '"finetuning_type": "lora"'
json_has "$W/adapter/ftpipe_train.json" '"template": "plain"'
json_has "$W/adapter/ftpipe_train.json" '"cutoff_len": 40'
json_has "$W/adapter/ftpipe_train.json" '"base_model": "tiny"'
json_has "$W/adapter/ftpipe_train.json" '"global_step": 12'
hash=$(sed -n 's/.*"tokenizer_hash": "\([0-9a-f]*\)".*/\1/p' "$W/data/train_set/meta.json")
json_has "$W/adapter/ftpipe_train.json" "\"tokenizer_hash\": \"$hash\""
for key in epoch global_step train_runtime train_samples_per_second train_steps_per_second train_loss; do
  json_has "$W/adapter/train_results.json" "\"$key\": "
done
lines=$(wc -l < "$W/adapter/trainer_log.jsonl")
[ "$lines" = 6 ] || t_fail "trainer_log.jsonl has $lines lines, expected 6"
python3 - "$W/adapter" <<'PY' || t_fail "the adapter folder does not read back"
import json, struct, sys
d = sys.argv[1]
with open(d + "/adapter_model.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
names = [k for k in header if k != "__metadata__"]
assert len(names) == 2 * 7 * 2, len(names)  # A and B, 7 targets, 2 layers
a = header["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
assert a["dtype"] == "F32" and a["shape"] == [8, 64], a
log = [json.loads(l) for l in open(d + "/trainer_log.jsonl")]
assert [e["step"] for e in log] == [2, 4, 6, 8, 10, 12], log
assert set(log[0]) == {"step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_s",  # and LLaMA-Factory's:
                       "current_steps", "total_steps", "lr", "percentage", "elapsed_time", "remaining_time"}, log[0]
assert (log[2]["current_steps"], log[2]["total_steps"], log[2]["percentage"]) == (6, 12, 50.0), log[2]
assert log[0]["lr"] == log[0]["learning_rate"] and log[0]["elapsed_time"].count(":") == 2, log[0]
assert abs(log[0]["learning_rate"] - 1e-2) < 1e-12, log[0]   # after warmup step 2 of 2: the peak
assert log[-1]["learning_rate"] == 0.0 and log[-1]["loss"] < log[0]["loss"], log
PY
[ "$(metric_count loss)" = 6 ] || t_fail "$(metric_count loss) loss metrics, expected 6"
[ "$(metric_count tokens_per_s)" = 6 ] || t_fail "$(metric_count tokens_per_s) tokens_per_s metrics"
[ "$(metric_count memory_bytes)" = 6 ] || t_fail "$(metric_count memory_bytes) memory_bytes metrics"
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "saved checkpoint-5"
t_expect_contains "saved checkpoint-12"
t_expect_contains "step 12/12 epoch 0.75: loss "
t_end

t_case "changing learning_rate reruns train only"
write_pipeline "threads = 1" "learning_rate = 2e-2" "per_device_train_batch_size = 4" "logging_steps = 2" \
  "max_steps = 12" "save_steps = 5" "warmup_steps = 2"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "run      adapter (train)"
t_expect_lacks "run      data/train_set"
t_expect_lacks "run      models/tiny"
t_expect_contains "ftpipe: 1 run"
t_end

# The same run twice: once straight, once killed (-9, with the stage process)
# at a random step after its first checkpoint and run again.
KILL_RUN="threads = 1|learning_rate = 1e-2|per_device_train_batch_size = 2|gradient_accumulation_steps = 2|lora_dropout = 0.1|logging_steps = 1|max_steps = 150|save_steps = 7|save_total_limit = 2"
kill_run_workspace() { IFS='|'; set -- $KILL_RUN; unset IFS; train_workspace "$@"; }

t_case "kill -9 mid-run, then a rerun resumes and ends with the same bytes"
kill_run_workspace
STRAIGHT=$W
t_run "$FTPIPE" -C "$STRAIGHT"
t_expect_status 0
kill_run_workspace
"$FTPIPE" -C "$W" > "$W/first.out" 2>&1 &
pid=$!
waited=0
until ls -d "$W"/.ftpipe/work/*/checkpoints/checkpoint-7 >/dev/null 2>&1 || [ $waited -ge 600 ]; do
  sleep 0.05; waited=$((waited + 1))
done
sleep "0.$(awk 'BEGIN { srand(); printf "%d", rand() * 4 }')"
stage_pids=$(ps -o pid= --ppid "$pid" 2>/dev/null)
kill -9 "$pid" $stage_pids 2>/dev/null
wait "$pid" 2>/dev/null
[ -f "$W/adapter/adapter_model.safetensors" ] && t_fail "the run finished before it was killed; $(cat "$W/first.out")"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "resumed from checkpoint-"
cmp -s "$STRAIGHT/adapter/adapter_model.safetensors" "$W/adapter/adapter_model.safetensors" ||
  t_fail "the resumed adapter differs from the uninterrupted one"
python3 -c "
import json, sys
steps = [json.loads(l)['step'] for l in open(sys.argv[1])]
assert steps == list(range(1, 151)), steps" "$W/adapter/trainer_log.jsonl" || t_fail "trainer_log.jsonl after a resume"
t_end

t_case "a model with another tokenizer is refused, naming both hashes"
TRAIN_LINE="adapter: train models/other data/train_set" train_workspace "threads = 1" "max_steps = 2"
printf 'models/other: init other_tokenizer.json\n\tdtype = f32\n\tvocab_size = 300\n' >> "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" adapter
t_expect_fail
t_expect_contains "the model's tokenizer ($W/models/other, hash "
t_expect_contains "is not the one the data was tokenized with ($W/data/train_set, hash "
t_expect_contains "tokenize the data with this model"
t_end

t_case "a diverging run stops with a clear error"
train_workspace "threads = 1" "learning_rate = 1e30" "max_steps = 20" "lr_scheduler_type = constant"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "training diverged; try a lower learning_rate (now 1e+30)"
t_end

t_case "full fine-tuning writes a model folder that loads"
TRAIN_LINE="models/full: train models/tiny data/train_set" train_workspace "threads = 1" "finetuning_type = full" \
  "learning_rate = 1e-3" "max_steps = 4" "per_device_train_batch_size = 4"
printf 'adapter2: train models/full data/train_set\n\tthreads = 1\n\tmax_steps = 2\n' >> "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
for f in config.json model.safetensors tokenizer.json tokenizer_config.json ftpipe_train.json train_results.json; do
  [ -f "$W/models/full/$f" ] || t_fail "models/full/$f is missing"
done
json_has "$W/models/full/ftpipe_train.json" '"finetuning_type": "full"'
cmp -s "$W/models/tiny/model.safetensors" "$W/models/full/model.safetensors" && t_fail "the weights did not change"
[ -f "$W/adapter2/adapter_model.safetensors" ] || t_fail "a LoRA run on the full output did not finish"
t_end

t_case "wrong inputs are refused"
TRAIN_LINE="adapter: train models/tiny" train_workspace "threads = 1"
t_run "$FTPIPE" -C "$W" adapter
t_expect_fail
t_expect_contains "train takes a model folder and a tokenize output, and optionally a tokenize output to evaluate on (\`adapter: train MODEL DATA [EVAL_DATA]\`); 1 given"
TRAIN_LINE="adapter: train data/train_set models/tiny" write_pipeline "threads = 1"
t_run "$FTPIPE" -C "$W" adapter
t_expect_fail
t_expect_contains "is not a model folder (it has no config.json)"
t_end

t_case "a model of an unsupported architecture is refused by name"
TRAIN_LINE="adapter: train models/mistral data/train_set" train_workspace "threads = 1" "max_steps = 2"
printf 'models/mistral: shell models/tiny\n\trun = cp -r $< $@ && chmod -R u+w $@ && sed -i "s/Qwen2ForCausalLM/MistralForCausalLM/; s/\\"qwen2\\"/\\"mistral\\"/" $@/config.json\n' >> "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" adapter
t_expect_fail
t_expect_contains "architecture 'MistralForCausalLM' is not supported; supported: Qwen2ForCausalLM, Qwen3ForCausalLM, LlamaForCausalLM, Qwen2VLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration"
t_end
