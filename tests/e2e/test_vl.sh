#!/bin/sh
# Vision-language fine-tuning end to end: examples/vl-lora's tiny cpu variant
# (tiny-qwen2.5-vl, staged in a tmpfs folder, LLaMA-Factory-style records with
# images made by its make_vl_data.py) runs init -> shm -> tokenize -> LoRA train
# -> evaluate -> export, the export holds PEFT's names for the language model,
# a rerun is a no-op, and the evaluation streaming its weights from host
# memory (offload_param) gives the same answers and losses; so does its Qwen2-VL variant, and full fine-tuning of
# its language model; the tower's training is refused with a message; ZeRO-3 on
# 2 ranks (tiny-qwen2.5-vl, tiny-llava) logs the losses of stage 0 within 1e-6
# relative, also with the merger trained whole beside the language model
# (ZeRO-2 and 3, their tensors within 1e-5 of stage 0's), whose ZeRO-3
# checkpoint resumes to the uninterrupted run's bytes.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

vl_example() {
  W=$(t_workspace)
  cp "$ROOT/examples/vl-lora/Ftpipe" "$ROOT/examples/vl-lora/make_vl_data.py" "$W/"
  mkdir "$W/shm"
  VARS="SHAPE=${1:-tiny-qwen2.5-vl} DTYPE=f32 RECORDS=9 EPOCHS=1 SHM_DIR=$W/shm"
}

t_case "examples/vl-lora (tiny): init, shm, tokenize, LoRA train, evaluate, export; a rerun is a no-op"
vl_example
t_run "$FTPIPE" -C "$W" $VARS
t_expect_status 0
t_expect_contains "Qwen2_5_VLForConditionalGeneration: 2 layers, hidden 64, vocab 263"
t_expect_contains "9 samples"
t_expect_contains "done     adapter"
t_expect_contains "eval_loss"
t_expect_contains "done     export/peft"
grep -q '"vision_processor": "qwen2_vl"' "$W/tokens/train_set/meta.json" || t_fail "meta.json: $(cat "$W/tokens/train_set/meta.json")"
[ -f "$W/tokens/train_set/train/images.bin" ] || t_fail "no images.bin beside the shards"
head -c 4096 "$W/export/peft/adapter_model.safetensors" | grep -q 'base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight' ||
  t_fail "the adapter lacks PEFT's names for a VL model's language model"
[ -f "$W/report/metrics.json" ] || t_fail "no report/metrics.json"
t_run "$FTPIPE" -C "$W" $VARS
t_expect_status 0
t_expect_contains "nothing to do"
# The same evaluation streaming the weights from host memory (offload_param; another seed, another key):
# the same answers and losses, the tower whole beside the streamed language model.
cp -r "$W/report" "$W/report_whole"
sed -i 's/^	compare_base = true$/	compare_base = true\n	offload_param = cpu\n	seed = 43/' "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" $VARS report
t_expect_status 0
t_expect_contains "parameter seed changed: 42 -> 43"
cmp -s "$W/report/results.jsonl" "$W/report_whole/results.jsonl" || t_fail "the streamed evaluation answers otherwise"
python3 - "$W" <<'PY' || t_fail "the streamed evaluation's losses differ"
import json, sys
a, b = (json.load(open(sys.argv[1] + f + "/metrics.json")) for f in ("/report", "/report_whole"))
sys.exit(any(a[k] != b[k] for k in ("eval_loss", "base_eval_loss")))
PY
t_end

t_case "examples/vl-lora's Qwen2-VL variant (tiny) from init to export"
vl_example tiny-qwen2-vl
t_run "$FTPIPE" -C "$W" $VARS
t_expect_status 0
t_expect_contains "Qwen2VLForConditionalGeneration: 2 layers, hidden 64, vocab 263"
t_expect_contains "done     export/peft"
t_end

t_case "full fine-tuning of the language model: the train output is a whole model folder with the tower, it evaluates with images and exports"
vl_example
sed -e "s/	finetuning_type = lora/	finetuning_type = full/" -e '/lora_/d' -e 's/	format = peft/	format = merged/' \
  "$ROOT/examples/vl-lora/Ftpipe" > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" $VARS
t_expect_status 0
t_expect_contains "done     adapter"
t_expect_contains "eval_loss"
t_expect_contains "fully fine-tuned model"
for f in "$W/adapter" "$W/export/peft"; do
  head -c 65536 "$f/model.safetensors" | grep -q '"visual.patch_embed.proj.weight"' || t_fail "$f: no vision tower in model.safetensors"
  head -c 65536 "$f/model.safetensors" | grep -q '"model.layers.0.self_attn.q_proj.weight"' || t_fail "$f: no language model"
  [ -f "$f/preprocessor_config.json" ] || t_fail "$f: no preprocessor_config.json"
done
# at ZeRO-3 on 2 ranks, the shards gathered for the result, the tower beside them
vl_example
sed -e "s/	finetuning_type = lora/	finetuning_type = full\n	nproc_per_node = 2\n	zero_stage = 3/" -e '/lora_/d' \
  "$ROOT/examples/vl-lora/Ftpipe" > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" $VARS adapter
t_expect_status 0
head -c 65536 "$W/adapter/model.safetensors" | grep -q '"visual.patch_embed.proj.weight"' ||
  t_fail "ZeRO-3: no vision tower in the train output"
head -c 65536 "$W/adapter/model.safetensors" | grep -q '"model.layers.1.mlp.down_proj.weight"' ||
  t_fail "ZeRO-3: the language model's shards are not gathered into the train output"
t_end

t_case "the vision tower stays frozen (training the merger: test_vl_projector.sh)"
vl_example
sed -e '/freeze_/d' -e "s/	finetuning_type = lora/	finetuning_type = lora\n	freeze_vision_tower = false/" \
  "$ROOT/examples/vl-lora/Ftpipe" > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" $VARS adapter
t_expect_fail
t_expect_contains "freeze_vision_tower = false is not supported yet"
t_end

# zero_workspaces FTPIPE_FILE: $W0 and $W3 (separate, as ZeRO stays out of the
# key) hold FTPIPE_FILE's pipeline with its adapter trained on 2 ranks for 3
# steps at stage 0 and at stage 3; then vl_zero_losses compares their losses.
zero_workspaces() {
  for stage in 0 3; do
    ws=$(t_workspace)
    cp "$ROOT/examples/vl-lora/make_vl_data.py" "$ws/"
    mkdir "$ws/shm"
    sed -e "s/	finetuning_type = lora/	finetuning_type = lora\n	nproc_per_node = 2\n	zero_stage = $stage\n	max_steps = 3/" \
        -e "s/	logging_steps = 5/	logging_steps = 1/" "$1" > "$ws/Ftpipe"
    eval "W$stage=\$ws"
  done
}
vl_zero_losses() {
  python3 - "$W0/adapter/trainer_log.jsonl" "$W3/adapter/trainer_log.jsonl" <<'PY' || t_fail "the sharded run's losses are not stage 0's"
import json, sys
a, b = ([l["loss"] for l in map(json.loads, open(p)) if "loss" in l] for p in sys.argv[1:3])
assert len(a) == 3 and len(b) == 3, (a, b)
for x, y in zip(a, b):
    assert abs(x - y) <= 1e-6 * abs(x), (a, b)
PY
}

t_case "ZeRO-3 on 2 ranks with tiny-qwen2.5-vl: the tower whole on each rank, the language model sharded, stage 0's losses"
zero_workspaces "$ROOT/examples/vl-lora/Ftpipe"
VARS="SHAPE=tiny-qwen2.5-vl DTYPE=f32 RECORDS=9 EPOCHS=1"
for stage in 0 3; do
  eval "ws=\$W$stage"
  t_run "$FTPIPE" -C "$ws" $VARS SHM_DIR="$ws/shm" adapter
  t_expect_status 0
done
vl_zero_losses
t_run "$FTPIPE" -C "$W3" log adapter
t_expect_contains "ZeRO-3 shards AdamW's state and every weight over the ranks"
t_expect_contains "weights on rank 0: "
t_end

t_case "full fine-tuning with the merger trained whole at ZeRO-2 and 3 on 2 ranks: the weights' gradients (and at 3 the weights) sharded, the merger whole, stage 0's losses and tensors; a ZeRO-3 checkpoint resumes"
VARS="SHAPE=tiny-qwen2.5-vl DTYPE=f32 RECORDS=9 EPOCHS=1"
for stage in 0 2 3; do
  ws=$(t_workspace)
  cp "$ROOT/examples/vl-lora/make_vl_data.py" "$ws/"
  mkdir "$ws/shm"
  sed -e "s/	finetuning_type = lora/	finetuning_type = full\n	nproc_per_node = 2\n	zero_stage = $stage\n	max_steps = 3/" \
      -e '/lora_/d' -e 's/	freeze_multi_modal_projector = true/	freeze_multi_modal_projector = false/' \
      -e "s/	logging_steps = 5/	logging_steps = 1/" "$ROOT/examples/vl-lora/Ftpipe" > "$ws/Ftpipe"
  t_run "$FTPIPE" -C "$ws" $VARS SHM_DIR="$ws/shm" adapter
  t_expect_status 0
  eval "W$stage=\$ws"
done
vl_zero_losses
ZERO3=$W3
W3=$W2 vl_zero_losses
t_run "$FTPIPE" -C "$W2" log adapter
t_expect_contains "ZeRO-2 shards AdamW's state over the ranks"
t_expect_contains "float gradients on rank 0: "
t_run "$FTPIPE" -C "$ZERO3" log adapter
t_expect_contains "ZeRO-3 shards AdamW's state and every weight over the ranks"
t_expect_contains "weights on rank 0: "
for stage in 2 3; do
  eval "ws=\$W$stage"
  head -c 65536 "$ws/adapter/model.safetensors" | grep -q '"visual.merger.mlp.0.weight"' ||
    t_fail "ZeRO-$stage: no merger in the train output"
  # the weights and the merger within reordering's reach of stage 0's (the sums over ranks added otherwise)
  python3 "$ROOT/tests/e2e/tensors_close.py" "$W0/adapter/model.safetensors" "$ws/adapter/model.safetensors" 1e-5 ||
    t_fail "ZeRO-$stage's tensors are not stage 0's"
done
# the ZeRO-3 run's checkpoint (weights through their shards, the merger whole) resumes to the same end
ws=$(t_workspace)
cp "$ROOT/examples/vl-lora/make_vl_data.py" "$ws/"
mkdir "$ws/shm"
# a guard no machine passes checkpoints after the first step and stops; the guards are not in the key
sed "s/\tmax_steps = 3/\tmax_steps = 3\n\tguard_interval = 0\n\tguard_min_free_memory = 1000T/" "$ZERO3/Ftpipe" > "$ws/Ftpipe"
t_run "$FTPIPE" -C "$ws" $VARS SHM_DIR="$ws/shm" adapter
t_expect_fail
cp "$ZERO3/Ftpipe" "$ws/Ftpipe"
t_run "$FTPIPE" -C "$ws" $VARS SHM_DIR="$ws/shm" adapter
t_expect_status 0
t_run "$FTPIPE" -C "$ws" log adapter
t_expect_contains "resumed from checkpoint-1"
cmp -s "$ZERO3/adapter/model.safetensors" "$ws/adapter/model.safetensors" ||
  t_fail "ZeRO-3 resumed from checkpoint-1 does not end with the uninterrupted run's bytes"
t_end

t_case "ZeRO-3 on 2 ranks with tiny-llava: the CLIP tower and projector whole on each rank, stage 0's losses"
cat > "$T_ROOT/llava.Ftpipe" <<'P'
models/base: init
	shape = tiny-llava
	dtype = f32

vl_data: shell make_vl_data.py
	run = python3 $< $@ 6

tokens/train_set: tokenize models/base vl_data
	template = llava
	dataset = vl_demo
	cutoff_len = 2048

adapter: train models/base tokens/train_set
	finetuning_type = lora
	lora_target = all
	learning_rate = 1e-3
	per_device_train_batch_size = 1
	logging_steps = 5
	backend = cpu
P
zero_workspaces "$T_ROOT/llava.Ftpipe"
for stage in 0 3; do
  eval "ws=\$W$stage"
  t_run "$FTPIPE" -C "$ws" adapter
  t_expect_status 0
done
vl_zero_losses
t_run "$FTPIPE" -C "$W3" log adapter
t_expect_contains "ZeRO-3 shards AdamW's state and every weight over the ranks"
t_end

t_case "a text-only model refuses records with images in evaluate"
vl_example
cat >> "$W/Ftpipe" <<'P'

models/text: init
	dtype = f32

text_report: evaluate models/text vl_data
	template = qwen2_vl
	dataset = vl_demo
P
t_run "$FTPIPE" -C "$W" $VARS text_report
t_expect_fail
t_expect_contains "has records with images, but"
t_expect_contains "is a text-only model (Qwen2ForCausalLM)"
t_end
