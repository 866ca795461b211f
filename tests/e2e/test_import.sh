#!/bin/sh
# `ftpipe import` on LLaMA-Factory's example configs (examples/train_lora and
# examples/train_full of its repository, the text models', as they are in
# tests/fixtures/llamafactory_examples):
# each becomes a pipeline that parses; with the model swapped for a tiny local
# one and max_steps: 2 added, each trains a few steps on LLaMA-Factory's demo
# data (tests/fixtures/datasets/llamafactory_data); stages other than sft and pt
# are refused; every key the import knows is in README's table.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
Y="$T_ROOT/examples"
mkdir -p "$Y"
cp "$ROOT"/tests/fixtures/llamafactory_examples/*.yaml "$Y/"
# qwen3_lora_sft with its "### eval" block uncommented, as a user turns it on
sed -e 's/^# \(eval_dataset\|val_size\|per_device_eval_batch_size\|eval_strategy\|eval_steps\):/\1:/' \
  "$Y/qwen3_lora_sft.yaml" > "$Y/qwen3_lora_sft_eval.yaml"
TEXT_EXAMPLES="qwen3_lora_sft qwen3_lora_sft_ds3 qwen3_lora_sft_ray qwen3_lora_pretrain qwen3_preprocess qwen3_full_sft
  qwen3_lora_sft_eval"

t_case "each example becomes a pipeline that parses, every key used or listed with a reason"
for name in $TEXT_EXAMPLES; do
  W=$(t_workspace)
  ln -s "$ROOT/tests/fixtures/datasets/llamafactory_data" "$W/data"
  t_run "$FTPIPE" import "$Y/$name.yaml" -o "$W/Ftpipe"
  t_expect_status 0
  t_expect_lacks "is not a key ftpipe knows"
  t_run "$FTPIPE" -C "$W" -n DATA=data
  t_expect_status 0
  t_expect_contains "would run models/base: new: never built"
  # every key of the YAML appears in the pipeline: as a parameter, or in the closing list
  for key in $(grep -o '^[a-z_0-9]*:' "$Y/$name.yaml" | tr -d :); do
    case $key in
      model_name_or_path|dataset_dir|stage|do_train|output_dir|eval_dataset) ;; # inputs, tokenize's stage, targets
      preprocessing_num_workers) grep -q "threads" "$W/Ftpipe" || t_fail "$name: $key is not threads" ;;
      *) grep -q "^	$key \|^#   $key: " "$W/Ftpipe" || t_fail "$name: $key is neither used nor listed" ;;
    esac
  done
done
grep -q "^	deepspeed  *= examples/deepspeed/ds_z3_config.json$" "$W/../"*/Ftpipe 2>/dev/null ||
  t_fail "deepspeed is not a train parameter"
t_end

t_case "a vision-language config (in the form of LLaMA-Factory's qwen2_5vl examples): image and freeze keys reach tokenize and train, video keys are listed"
W=$(t_workspace)
ln -s "$ROOT/tests/fixtures/datasets/llamafactory_data" "$W/data"
cat > "$W/vl.yaml" <<'Y'
model_name_or_path: Qwen/Qwen2.5-VL-7B-Instruct
image_max_pixels: 262144
video_max_pixels: 16384
trust_remote_code: true
stage: sft
do_train: true
finetuning_type: full
freeze_vision_tower: true
freeze_multi_modal_projector: false
freeze_language_model: true
dataset: mllm_demo
template: qwen2_vl
cutoff_len: 2048
output_dir: saves/qwen2_5vl-7b/full/sft
Y
t_run "$FTPIPE" import "$W/vl.yaml" -o "$W/Ftpipe"
t_expect_status 0
t_expect_lacks "is not a key ftpipe knows"
for pair in image_max_pixels=262144 freeze_vision_tower=true freeze_multi_modal_projector=false \
  freeze_language_model=true; do
  grep -q "^	${pair%%=*}  *= ${pair#*=}$" "$W/Ftpipe" || t_fail "the pipeline lacks $pair: $(cat "$W/Ftpipe")"
done
grep -q "^#   video_max_pixels: 16384 -- videos are not read" "$W/Ftpipe" || t_fail "video_max_pixels is not listed"
t_run "$FTPIPE" -C "$W" -n DATA=data
t_expect_status 0
t_end

t_case "with a tiny local model, each example trains a few steps"
W=$(t_workspace)
printf 'tiny: init\n\tshape = tiny\n\tnum_hidden_layers = 1\n\thidden_size = 32\n\tintermediate_size = 64\n\tnum_attention_heads = 2\n\tnum_key_value_heads = 1\n\tdtype = f32\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
TINY="$W/tiny"
for name in $TEXT_EXAMPLES; do
  W=$(t_workspace)
  ln -s "$ROOT/tests/fixtures/datasets/llamafactory_data" "$W/data"
  sed -e "s|^model_name_or_path: .*|model_name_or_path: $TINY|" -e "s|^dataset_dir: .*|dataset_dir: data|" \
    -e 's|^cutoff_len: .*|cutoff_len: 256|' -e 's|^eval_steps: .*|eval_steps: 1|' "$Y/$name.yaml" > "$W/config.yaml"
  printf 'max_steps: 2\nmax_samples: 8\n' >> "$W/config.yaml"
  mkdir -p "$W/examples/deepspeed" # LLaMA-Factory's, as the file is (Apache-2.0): stage 3 on one rank shards nothing
  printf '%s\n' '{' '  "train_batch_size": "auto",' '  "train_micro_batch_size_per_gpu": "auto",' \
    '  "gradient_accumulation_steps": "auto",' '  "gradient_clipping": "auto",' \
    '  "zero_allow_untested_optimizer": true,' '  "fp16": {' '    "enabled": "auto",' '    "loss_scale": 0,' \
    '    "loss_scale_window": 1000,' '    "initial_scale_power": 16,' '    "hysteresis": 2,' \
    '    "min_loss_scale": 1' '  },' '  "bf16": {' '    "enabled": "auto"' '  },' '  "zero_optimization": {' \
    '    "stage": 3,' '    "overlap_comm": false,' '    "contiguous_gradients": true,' '    "sub_group_size": 1e9,' \
    '    "reduce_bucket_size": "auto",' '    "stage3_prefetch_bucket_size": "auto",' \
    '    "stage3_param_persistence_threshold": "auto",' '    "stage3_max_live_parameters": 1e9,' \
    '    "stage3_max_reuse_distance": 1e9,' '    "stage3_gather_16bit_weights_on_model_save": true' '  }' '}' \
    > "$W/examples/deepspeed/ds_z3_config.json"
  sed -i '/^max_samples: 1000/d' "$W/config.yaml"
  t_run "$FTPIPE" import "$W/config.yaml" -o "$W/Ftpipe"
  t_expect_status 0
  t_run "$FTPIPE" -C "$W"
  t_expect_status 0
  output=$(sed -n 's/^output_dir: *\([^ #]*\).*/\1/p' "$W/config.yaml")
  [ -f "$W/$output/train_results.json" ] || t_fail "$name: $output/train_results.json was not written"
  grep -q '"global_step": 2' "$W/$output/ftpipe_train.json" 2>/dev/null || t_fail "$name: $output did not train 2 steps"
  # no save_strategy in the YAML: the HF Trainer's steps, which keeps a checkpoint after the last step
  grep -q '"global_step": 2' "$W/$output/checkpoint-2/trainer_state.json" 2>/dev/null ||
    t_fail "$name: $output/checkpoint-2 was not kept"
  case $name in *_eval)
    grep -q '"eval_loss"' "$W/$output/trainer_log.jsonl" || t_fail "$name: no evaluation during training" ;;
  esac
done
t_end

t_case "stages other than sft and pt are refused, saying what is trained"
for name in qwen3_lora_dpo qwen3_lora_kto qwen3_lora_reward; do
  t_run "$FTPIPE" import "$Y/$name.yaml"
  t_expect_fail
  t_expect_contains "is not supported: ftpipe trains supervised fine-tuning (sft) and continued pretraining (pt)"
done
t_end

t_case "save_strategy is imported as the HF Trainer's, steps when absent; best is refused"
W=$(t_workspace)
printf 'model_name_or_path: Qwen/Qwen3-0.6B\nstage: sft\ndataset: alpaca_en_demo\ntemplate: qwen3_nothink\n' > "$W/a.yaml"
t_run "$FTPIPE" import "$W/a.yaml"
t_expect_status 0
t_expect_contains "	save_strategy                = steps"
printf 'save_strategy: epoch\nsave_total_limit: 3\n' >> "$W/a.yaml"
t_run "$FTPIPE" import "$W/a.yaml"
t_expect_status 0
t_expect_contains "	save_strategy                = epoch"
t_expect_contains "	save_total_limit             = 3"
sed -i 's/^save_strategy: epoch$/save_strategy: best/' "$W/a.yaml"
t_run "$FTPIPE" import "$W/a.yaml"
t_expect_fail
t_expect_contains "a.yaml: save_strategy: best is not supported: ftpipe keeps checkpoint-N folders every save_steps steps (steps) or at each epoch's end (epoch), or none (no)"
t_end

t_case "unknown keys are listed, malformed configs refused with file and line"
W=$(t_workspace)
printf 'model_name_or_path: Qwen/Qwen3-0.6B\nstage: sft\ndataset: alpaca_en_demo\ntemplate: qwen3_nothink\nneftune_noise_alpha: 5\n' > "$W/a.yaml"
t_run "$FTPIPE" import "$W/a.yaml"
t_expect_status 0
t_expect_contains "'neftune_noise_alpha' is not a key ftpipe knows"
t_expect_contains "#   neftune_noise_alpha: 5 -- not a key \`ftpipe import\` knows"
printf 'model_name_or_path: x\ndataset:\n  - a\n  - b\n' > "$W/b.yaml"
t_run "$FTPIPE" import "$W/b.yaml"
t_expect_fail
t_expect_contains "b.yaml:2: 'dataset' is a list; LLaMA-Factory's training configs hold one value per key"
printf 'model_name_or_path: x\n  bad: [\n' > "$W/c.yaml"
t_run "$FTPIPE" import "$W/c.yaml"
t_expect_fail
t_expect_contains "c.yaml:2:"
printf 'model_name_or_path: Qwen/Qwen3-0.6B\ndataset: a\n' > "$W/d.yaml"
t_run "$FTPIPE" import "$W/d.yaml"
t_expect_fail
t_expect_contains "template is missing"
t_run "$FTPIPE" import "$W/a.yaml" -o "$W/a.yaml"
t_expect_fail
t_expect_contains "a.yaml exists; give another -o FILE or remove it first"
t_end

t_case "README's import table lists every key the import knows"
"$FTPIPE" import --keys > "$T_ROOT/keys" || t_fail "import --keys failed"
[ "$(wc -l < "$T_ROOT/keys")" -ge 60 ] || t_fail "only $(wc -l < "$T_ROOT/keys") keys"
for key in $(cut -f1 "$T_ROOT/keys"); do
  grep -q "^| \`$key\` |" "$ROOT/README.md" || t_fail "README's import table lacks $key"
done
t_end
