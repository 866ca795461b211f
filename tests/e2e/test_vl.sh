#!/bin/sh
# Vision-language fine-tuning end to end: examples/vl-lora's tiny cpu variant
# (tiny-qwen2.5-vl, staged in a tmpfs folder, LLaMA-Factory-style records with
# images made by its make_vl_data.py) runs init -> shm -> tokenize -> LoRA train
# -> evaluate -> export, the export holds PEFT's names for the language model,
# and a rerun is a no-op; so does its Qwen2-VL variant, and full fine-tuning of
# its language model; what is not supported is
# refused with a message.
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
sed -e "s/	finetuning_type = lora/	finetuning_type = full/" -e '/lora_/d' -e 's/^report: evaluate models\/base_shm adapter vl_data/report: evaluate models\/base_shm adapter vl_data/' \
  -e 's/^export\/peft: export adapter/export\/peft: export adapter/' -e 's/	format = peft/	format = merged/' "$ROOT/examples/vl-lora/Ftpipe" > "$W/Ftpipe"
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
t_end

t_case "the vision tower and merger stay frozen; ZeRO-3 of a VL model is refused"
vl_example
for line in "freeze_vision_tower = false" "freeze_multi_modal_projector = false" "train_mm_proj_only = true"; do
  sed -e '/freeze_/d' -e "s/	finetuning_type = lora/	finetuning_type = lora\n	$line/" "$ROOT/examples/vl-lora/Ftpipe" > "$W/Ftpipe"
  t_run "$FTPIPE" -C "$W" $VARS adapter
  t_expect_fail
  t_expect_contains "$line is not supported yet"
done
sed "s/	finetuning_type = lora/	finetuning_type = lora\n	nproc_per_node = 2\n	zero_stage = 3/" "$ROOT/examples/vl-lora/Ftpipe" > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" $VARS adapter
t_expect_fail
t_expect_contains "zero_stage = 3 shards a language model's weights only, and Qwen2_5_VLForConditionalGeneration has a vision tower: use zero_stage = 1 or 2"
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
