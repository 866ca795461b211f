#!/bin/sh
# `ftpipe import` on LLaMA-Factory's example configs (examples/train_lora and
# examples/train_full of its repository, the text models', as they are below):
# each becomes a pipeline that parses; with the model swapped for a tiny local
# one and max_steps: 2 added, each trains a few steps on LLaMA-Factory's demo
# data (tests/fixtures/datasets/llamafactory_data); stages other than sft and pt
# are refused; every key the import knows is in README's table.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
Y="$T_ROOT/examples"
mkdir -p "$Y"

cat > "$Y/qwen3_lora_sft.yaml" <<'EOF_YAML'
### model
model_name_or_path: Qwen/Qwen3-4B-Instruct-2507
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all

### dataset
dataset: identity,alpaca_en_demo
template: qwen3_nothink
cutoff_len: 2048
max_samples: 1000
preprocessing_num_workers: 16
dataloader_num_workers: 4

### output
output_dir: saves/qwen3-4b/lora/sft
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null

### eval
# eval_dataset: alpaca_en_demo
# val_size: 0.1
# per_device_eval_batch_size: 1
# eval_strategy: steps
# eval_steps: 500
EOF_YAML

cat > "$Y/qwen3_lora_sft_ds3.yaml" <<'EOF_YAML'
### model
model_name_or_path: Qwen/Qwen3-4B-Instruct-2507
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
deepspeed: examples/deepspeed/ds_z3_config.json  # choices: [ds_z0_config.json, ds_z2_config.json, ds_z3_config.json]

### dataset
dataset: identity,alpaca_en_demo
template: qwen3_nothink
cutoff_len: 2048
max_samples: 1000
preprocessing_num_workers: 16
dataloader_num_workers: 4

### output
output_dir: saves/qwen3-4b/lora/sft
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 2
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null

### eval
# eval_dataset: alpaca_en_demo
# val_size: 0.1
# per_device_eval_batch_size: 1
# eval_strategy: steps
# eval_steps: 500
EOF_YAML

cat > "$Y/qwen3_lora_sft_ray.yaml" <<'EOF_YAML'
### model
model_name_or_path: Qwen/Qwen3-4B-Instruct-2507  # or use local absolute path
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all

### dataset
dataset: identity,alpaca_en_demo
dataset_dir: REMOTE:llamafactory/demo_data  # or use local absolute path
template: qwen3_nothink
cutoff_len: 2048
max_samples: 1000
preprocessing_num_workers: 16
dataloader_num_workers: 4

### output
output_dir: tmp_dir
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]

### ray
ray_num_workers: 4  # Number of GPUs to use.
# ray_init_kwargs:
#   runtime_env:
#     env_vars:
#       <YOUR-ENV-VAR-HERE>: "<YOUR-ENV-VAR-HERE>"
#     pip:
#       - emoji

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null

### eval
# eval_dataset: alpaca_en_demo
# val_size: 0.1
# per_device_eval_batch_size: 1
# eval_strategy: steps
# eval_steps: 500
EOF_YAML

cat > "$Y/qwen3_lora_pretrain.yaml" <<'EOF_YAML'
### model
model_name_or_path: Qwen/Qwen3-4B-Instruct-2507
trust_remote_code: true

### method
stage: pt
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all

### dataset
dataset: c4_demo
cutoff_len: 2048
max_samples: 1000
preprocessing_num_workers: 16
dataloader_num_workers: 4

### output
output_dir: saves/qwen3-4b/lora/pretrain
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null

### eval
# eval_dataset: c4_demo
# val_size: 0.1
# per_device_eval_batch_size: 1
# eval_strategy: steps
# eval_steps: 500
EOF_YAML

cat > "$Y/qwen3_preprocess.yaml" <<'EOF_YAML'
### model
model_name_or_path: Qwen/Qwen3-4B-Instruct-2507
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all

### dataset
dataset: identity,alpaca_en_demo
template: qwen3_nothink
cutoff_len: 2048
max_samples: 1000
preprocessing_num_workers: 16
tokenized_path: saves/qwen3-4b/dataset/sft

### output (not used)
output_dir: saves/qwen3-4b/lora/sft
overwrite_output_dir: true
EOF_YAML

cat > "$Y/qwen3_full_sft.yaml" <<'EOF_YAML'
### model
model_name_or_path: Qwen/Qwen3-4B-Instruct-2507
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: full
deepspeed: examples/deepspeed/ds_z3_config.json  # choices: [ds_z0_config.json, ds_z2_config.json, ds_z3_config.json]

### dataset
dataset: identity,alpaca_en_demo
template: qwen3_nothink
cutoff_len: 2048
max_samples: 1000
preprocessing_num_workers: 16
dataloader_num_workers: 4

### output
output_dir: saves/qwen3-4b/full/sft
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 2
learning_rate: 1.0e-5
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null

### eval
# eval_dataset: alpaca_en_demo
# val_size: 0.1
# per_device_eval_batch_size: 1
# eval_strategy: steps
# eval_steps: 500
EOF_YAML

cat > "$Y/qwen3_lora_dpo.yaml" <<'EOF_YAML'
### model
model_name_or_path: Qwen/Qwen3-4B-Instruct-2507
trust_remote_code: true

### method
stage: dpo
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
pref_beta: 0.1
pref_loss: sigmoid  # choices: [sigmoid (dpo), orpo, simpo]

### dataset
dataset: dpo_en_demo
template: qwen3_nothink
cutoff_len: 2048
max_samples: 1000
preprocessing_num_workers: 16
dataloader_num_workers: 4

### output
output_dir: saves/qwen3-4b/lora/dpo
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 5.0e-6
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null

### eval
# eval_dataset: dpo_en_demo
# val_size: 0.1
# per_device_eval_batch_size: 1
# eval_strategy: steps
# eval_steps: 500
EOF_YAML

cat > "$Y/qwen3_lora_kto.yaml" <<'EOF_YAML'
### model
model_name_or_path: Qwen/Qwen3-4B-Instruct-2507
trust_remote_code: true

### method
stage: kto
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
pref_beta: 0.1

### dataset
dataset: kto_en_demo
template: qwen3_nothink
cutoff_len: 2048
max_samples: 1000
preprocessing_num_workers: 16
dataloader_num_workers: 4

### output
output_dir: saves/qwen3-4b/lora/kto
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 5.0e-6
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000

### eval
# val_size: 0.1
# per_device_eval_batch_size: 1
# eval_strategy: steps
# eval_steps: 500
EOF_YAML

cat > "$Y/qwen3_lora_reward.yaml" <<'EOF_YAML'
### model
model_name_or_path: Qwen/Qwen3-4B-Instruct-2507
trust_remote_code: true

### method
stage: rm
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all

### dataset
dataset: dpo_en_demo
template: qwen3_nothink
cutoff_len: 2048
max_samples: 1000
preprocessing_num_workers: 16
dataloader_num_workers: 4

### output
output_dir: saves/qwen3-4b/lora/reward
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null

### eval
# eval_dataset: dpo_en_demo
# val_size: 0.1
# per_device_eval_batch_size: 1
# eval_strategy: steps
# eval_steps: 500
EOF_YAML

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
