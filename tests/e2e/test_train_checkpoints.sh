#!/bin/sh
# Checkpoints a user keeps (save_strategy, save_steps, save_total_limit): the
# train stage's output holds the HF Trainer's checkpoint-N folders (the adapter
# or the model, and trainer_state.json), the newest save_total_limit of them;
# checkpoint-N is the run's state at step N (a run stopped there with the same
# schedule ends with its bytes; it holds the resume checkpoint's tensors); a run
# killed and resumed keeps the same folders as one that never stopped; the keys
# and refusals. (tests/oracle/check_trainer_state.py holds the files to
# transformers, PEFT and LLaMA-Factory.)
. "$(dirname "$0")/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"

# A workspace: a tiny f32 model, 64 addition samples (8 for validation), and a
# train stage with the given parameters (NAME=VALUE words).
LORA="learning_rate=1e-2 per_device_train_batch_size=4"
workspace() {
  W=$(t_workspace)
  cp "$ROOT/examples/quickstart/make_addition_data.sh" "$W/"
  cat > "$W/Ftpipe" <<'P'
models/tiny: init
	dtype = f32
	threads = 1

data/train.json: shell make_addition_data.sh
	run = sh $< train 64 > $@

data/train_set: tokenize models/tiny data/train.json
	template = plain
	cutoff_len = 40
	val_size = 8
	threads = 1

P
  { echo "${TRAIN_LINE:-adapter: train models/tiny data/train_set}"
    for line in threads=1 "$@"; do
      printf '\t%s\n' "$line"; done; } >> "$W/Ftpipe"
}
kept() { # FOLDER: its checkpoint-N steps, ascending, blank-separated
  ls "$1" | sed -n 's/^checkpoint-\([0-9]*\)$/\1/p' | sort -n | tr '\n' ' ' | sed 's/ $//'
}

t_case "save_strategy = steps keeps checkpoint-N folders, the newest save_total_limit"
workspace $LORA logging_steps=2 max_steps=14 warmup_steps=2 save_strategy=steps save_steps=4 save_total_limit=2 \
  eval_strategy=steps eval_steps=5
t_run "$FTPIPE" -C "$W"
t_expect_status 0
[ "$(kept "$W/adapter")" = "12 14" ] || t_fail "kept checkpoints: $(kept "$W/adapter"), expected 12 14 (of 4 8 12 14)"
t_run "$FTPIPE" -C "$W" log adapter
for step in 4 8 12 14; do t_expect_contains "kept checkpoint-$step for the output"; done
for step in 12 14; do
  for f in adapter_config.json adapter_model.safetensors trainer_state.json; do
    [ -f "$W/adapter/checkpoint-$step/$f" ] || t_fail "checkpoint-$step/$f is missing"
  done
done
cmp -s "$W/adapter/checkpoint-14/adapter_model.safetensors" "$W/adapter/adapter_model.safetensors" ||
  t_fail "checkpoint-14, after the last step, is not the output's adapter"
cmp -s "$W/adapter/checkpoint-12/adapter_model.safetensors" "$W/adapter/adapter_model.safetensors" &&
  t_fail "checkpoint-12 is the final adapter: it was not written at step 12"
cmp -s "$W/adapter/checkpoint-12/adapter_config.json" "$W/adapter/adapter_config.json" ||
  t_fail "checkpoint-12's adapter_config.json differs from the output's"
python3 - "$W/adapter" <<'PY' || t_fail "the checkpoints' adapters or trainer_state.json do not read back"
import json, struct, sys
d = sys.argv[1]
def header(path):
    with open(path, "rb") as f:
        return json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
final = header(d + "/adapter_model.safetensors")
for step in (12, 14):
    h = header("%s/checkpoint-%d/adapter_model.safetensors" % (d, step))
    assert {k: (v["dtype"], v["shape"]) for k, v in h.items() if k != "__metadata__"} == \
        {k: (v["dtype"], v["shape"]) for k, v in final.items() if k != "__metadata__"}, step
    state = json.load(open("%s/checkpoint-%d/trainer_state.json" % (d, step)))
    assert state["global_step"] == step and state["max_steps"] == 14 and state["save_steps"] == 4, state
    assert state["eval_steps"] == 5 and state["logging_steps"] == 2 and state["train_batch_size"] == 4, state
    steps = [(e["step"], "eval_loss" in e) for e in state["log_history"]]
    expected = [(s, False) for s in range(2, step + 1, 2)] + [(s, True) for s in (5, 10) if s <= step]
    expected += [(14, True)] if step == 14 else []  # transformers 5 evaluates after the last step too
    assert steps == sorted(expected, key=lambda e: (e[0], e[1])), steps
    assert set(state["log_history"][0]) == {"epoch", "grad_norm", "learning_rate", "loss", "step"}, state
    assert set(state["log_history"][2]) == {"epoch", "eval_loss", "step"}, state
out = json.load(open(d + "/trainer_state.json"))
assert out["log_history"][:-1] == state["log_history"], "the output's log differs from checkpoint-14's"
assert set(out["log_history"][-1]) == {"epoch", "step", "train_loss"}, out["log_history"][-1]
results = json.load(open(d + "/train_results.json"))
assert abs(out["log_history"][-1]["train_loss"] - results["train_loss"]) < 1e-9, (out, results)
PY
t_end

t_case "changing save_total_limit reruns train only; save_strategy = no keeps none"
sed -i 's/^\tsave_total_limit=2$/\tsave_total_limit=0/' "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "run      adapter (train): parameter save_total_limit changed: 2 -> 0"
t_expect_contains "ftpipe: 1 run"
[ "$(kept "$W/adapter")" = "4 8 12 14" ] || t_fail "kept checkpoints: $(kept "$W/adapter"), expected 4 8 12 14"
sed -i 's/^\tsave_strategy=steps$/\tsave_strategy=no/' "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
[ -z "$(kept "$W/adapter")" ] || t_fail "save_strategy = no kept $(kept "$W/adapter")"
[ -f "$W/adapter/trainer_state.json" ] || t_fail "the output has no trainer_state.json"
t_end

t_case "checkpoint-N is the run's state at step N: a run stopped there ends with its bytes"
# a constant schedule does not depend on max_steps, so 8 steps of a 12-step run are an 8-step run
workspace $LORA logging_steps=2 max_steps=12 lr_scheduler_type=constant save_strategy=steps save_steps=4
printf 'short: train models/tiny data/train_set\n\tthreads = 1\n\tlearning_rate = 1e-2\n\tper_device_train_batch_size = 4\n\tlogging_steps = 2\n\tmax_steps = 8\n\tlr_scheduler_type = constant\n' >> "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
[ "$(kept "$W/adapter")" = "4 8 12" ] || t_fail "kept checkpoints: $(kept "$W/adapter"), expected 4 8 12"
cmp -s "$W/adapter/checkpoint-8/adapter_model.safetensors" "$W/short/adapter_model.safetensors" ||
  t_fail "checkpoint-8 of a 12-step run differs from an 8-step run's adapter"
python3 -c "
import json, sys
kept, short = (json.load(open(p))['log_history'] for p in sys.argv[1:])
assert kept == short[:-1], (kept, short)" "$W/adapter/checkpoint-8/trainer_state.json" "$W/short/trainer_state.json" ||
  t_fail "checkpoint-8's log_history is not the 8-step run's"
t_end

t_case "kill -9 mid-run: the rerun keeps what an uninterrupted run keeps, checkpoint-N holding the resume checkpoint's tensors"
RUN="$LORA max_steps=100 warmup_steps=3 lora_dropout=0.1 logging_steps=1 save_strategy=steps save_steps=7 eval_strategy=epoch"
workspace $RUN
STRAIGHT=$W
t_run "$FTPIPE" -C "$STRAIGHT"
t_expect_status 0
workspace $RUN
"$FTPIPE" -C "$W" > "$W/first.out" 2>&1 &
pid=$!
waited=0
until ls -d "$W"/.ftpipe/work/*/checkpoints/checkpoint-14 >/dev/null 2>&1 || [ $waited -ge 600 ]; do
  sleep 0.05; waited=$((waited + 1))
done
sleep "0.0$(awk 'BEGIN { srand(); printf "%d", rand() * 10 }')"
stage_pids=$(ps -o pid= --ppid "$pid" 2>/dev/null)
kill -9 "$pid" $stage_pids 2>/dev/null
wait "$pid" 2>/dev/null
[ -f "$W/adapter/adapter_model.safetensors" ] && t_fail "the run finished before it was killed; $(cat "$W/first.out")"
resume=$(ls -d "$W"/.ftpipe/work/*/checkpoints/checkpoint-* | sort -t- -k2 -n | tail -n 1)
cp -r "$resume" "$W/resume_checkpoint"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "resumed from checkpoint-"
[ "$(kept "$W/adapter")" = "$(seq -s ' ' 7 7 98) 100" ] || t_fail "kept checkpoints: $(kept "$W/adapter")"
diff -r -x train_results.json -x trainer_log.jsonl "$STRAIGHT/adapter" "$W/adapter" > "$W/diff" ||
  t_fail "the resumed run's output differs from the uninterrupted one's: $(head -c 600 "$W/diff")"
step=${resume##*-}
python3 - "$W/resume_checkpoint/model.safetensors" "$W/adapter/checkpoint-$step/adapter_model.safetensors" <<'PY' ||
import json, struct, sys
def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header, data = json.loads(f.read(n)), f.read()
    return {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items() if k != "__metadata__"}
resume, kept = tensors(sys.argv[1]), tensors(sys.argv[2])
assert resume and resume == kept, sorted(set(resume) ^ set(kept))[:4]
PY
  t_fail "checkpoint-$step's adapter is not the resume checkpoint-$step's tensors"
t_end

t_case "full fine-tuning with save_strategy = epoch keeps model folders at each epoch's end"
TRAIN_LINE="models/full: train models/tiny data/train_set" workspace finetuning_type=full learning_rate=1e-3 \
  per_device_train_batch_size=8 num_train_epochs=2 save_strategy=epoch
t_run "$FTPIPE" -C "$W" data/train_set
t_run "$FTPIPE" -C "$W" estimate models/full
t_expect_contains "and 2 checkpoint-N folders of its size"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
[ "$(kept "$W/models/full")" = "7 14" ] || t_fail "kept checkpoints: $(kept "$W/models/full"), expected 7 14"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json trainer_state.json; do
  [ -f "$W/models/full/checkpoint-7/$f" ] || t_fail "checkpoint-7/$f is missing"
done
cmp -s "$W/models/full/checkpoint-14/model.safetensors" "$W/models/full/model.safetensors" ||
  t_fail "checkpoint-14 is not the output's model"
cmp -s "$W/models/full/checkpoint-7/model.safetensors" "$W/models/full/model.safetensors" &&
  t_fail "checkpoint-7 is the final model"
grep -q '"num_train_epochs": 2' "$W/models/full/checkpoint-7/trainer_state.json" ||
  t_fail "checkpoint-7's trainer_state.json: $(cat "$W/models/full/checkpoint-7/trainer_state.json")"
t_end

t_case "save_strategy without the steps it needs, or one ftpipe lacks, is refused"
workspace $LORA max_steps=4 save_strategy=steps save_steps=0
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "save_strategy = steps needs save_steps above 0"
workspace $LORA max_steps=4 save_strategy=best
t_run "$FTPIPE" -C "$W" -n
t_expect_fail
t_expect_contains "save_strategy"
t_expect_contains "no, steps, epoch"
t_end
