#!/bin/sh
# ZeRO through the train stage, ranks as processes on this host (cpu backend):
# LLaMA-Factory's own examples/deepspeed configs (written below as the files
# are; LLaMA-Factory, Apache-2.0) are read for their stage and offload, with
# DeepSpeed's tuning keys named as ignored; a 2-rank ZeRO-2 run ends with the
# bytes of the 2-rank stage-0 run and each rank holds half the optimizer state;
# ZeRO stays out of the key; ds_z3_offload on 2 ranks ends within 1e-6 of
# stage 0's adapter with rank 0 keeping half the weights in host memory, and
# exports a PEFT adapter; on one rank it keeps every weight in host memory and
# ends with stage 0's bytes; full fine-tuning at stage 3 (on 2 ranks, and on
# one streaming its weights) ends as near stage 0 as reordering its sums and
# exports a model folder; evaluation and checkpoints during a ZeRO-3 run with
# offload_optimizer log stage 0's eval_loss and end at its adapter; malformed configs,
# unknown keys, numbers that disagree with the stage, and deepspeed beside
# zero_stage are refused; a stage that would not fit names zero_stage = 1 (or 3)
# with its figure, on a GPU (its free memory given by FTPIPE_GPU_MEMORY) the
# offloads with the GPU's and the host's figures; kill -9 of a 2-rank ZeRO-2 run resumes on 1 rank at stage 0,
# and of a 4-rank ZeRO-3 run on 2 ranks at ZeRO-1, within 1e-5 of the
# uninterrupted run (its weights; its losses within 1e-5 relative), as 2 ranks
# at ZeRO-1 throughout are.
. "$(dirname "$0")/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"

# metric WORKSPACE NAME: the train stage's latest value of a metric (state.db).
metric() {
  python3 -c 'import sqlite3, sys
db = sqlite3.connect(sys.argv[1] + "/.ftpipe/state.db")
print(db.execute("select value from metrics where name = ? order by run_id desc, step desc limit 1", (sys.argv[2],)).fetchone()[0])' "$1" "$2"
}

zero_workspace() {
  W=$(t_workspace)
  cp "$ROOT/examples/quickstart/make_addition_data.sh" "$W/"
  write_llamafactory_configs "$W"
  cat > "$W/Ftpipe" <<'P'
models/tiny: init
	dtype = f32
	threads = 1

data/train.json: shell make_addition_data.sh
	run = sh $< train 44 > $@

data/train_set: tokenize models/tiny data/train.json
	template = plain
	cutoff_len = 40
	threads = 1

adapter: train models/tiny data/train_set
	backend = cpu
	threads = 1
	learning_rate = 1e-2
	logging_steps = 1
	max_grad_norm = 0.5
	per_device_train_batch_size = 2
	global_batch_size = 8
P
  for line in "$@"; do printf '\t%s\n' "$line"; done >> "$W/Ftpipe"
}

HEAD='{
  "train_batch_size": "auto",
  "train_micro_batch_size_per_gpu": "auto",
  "gradient_accumulation_steps": "auto",
  "gradient_clipping": "auto",
  "zero_allow_untested_optimizer": true,
  "fp16": {
    "enabled": "auto",
    "loss_scale": 0,
    "loss_scale_window": 1000,
    "initial_scale_power": 16,
    "hysteresis": 2,
    "min_loss_scale": 1
  },
  "bf16": {
    "enabled": "auto"
  },'
TAIL='  "comms_config": {
    "verbose": false
  },
  "monitor_config": {
    "enabled": true,
    "tag": "DeepSpeedMonitor",
    "csv_monitor": {
      "enabled": false
    }
  }
}'
write_llamafactory_configs() {
  for stage in 0 2 2_offload; do
    offload=
    [ "$stage" = 2_offload ] && offload='
    "offload_optimizer": {
      "device": "cpu",
      "pin_memory": true
    },'
    cat > "$1/ds_z${stage}_config.json" <<J
$HEAD
  "zero_optimization": {
    "stage": ${stage%_offload},$offload
    "allgather_partitions": true,
    "allgather_bucket_size": 5e8,
    "overlap_comm": false,
    "reduce_scatter": true,
    "reduce_bucket_size": 5e8,
    "contiguous_gradients": true,
    "round_robin_gradients": true
  },
$TAIL
J
  done
  cat > "$1/ds_z3_offload_config.json" <<J
$HEAD
  "zero_optimization": {
    "stage": 3,
    "offload_optimizer": {
      "device": "cpu",
      "pin_memory": true
    },
    "offload_param": {
      "device": "cpu",
      "pin_memory": true
    },
    "overlap_comm": false,
    "contiguous_gradients": true,
    "sub_group_size": 1e9,
    "reduce_bucket_size": "auto",
    "stage3_prefetch_bucket_size": "auto",
    "stage3_param_persistence_threshold": "auto",
    "stage3_max_live_parameters": 1e9,
    "stage3_max_reuse_distance": 1e9,
    "stage3_gather_16bit_weights_on_model_save": true
  },
$TAIL
J
}

t_case "deepspeed = ds_z2_config.json on 2 ranks: stage 0's bytes, half the optimizer state, the same key"
zero_workspace "max_steps = 6" "nproc_per_node = 2"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
PLAIN=$W
zero_workspace "max_steps = 6" "nproc_per_node = 2" "deepspeed = ds_z2_config.json"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
cmp -s "$PLAIN/adapter/adapter_model.safetensors" "$W/adapter/adapter_model.safetensors" ||
  t_fail "ZeRO-2's adapter differs from stage 0's"
cmp -s "$PLAIN/adapter/trainer_log.jsonl" "$W/adapter/trainer_log.jsonl" ||
  python3 - "$PLAIN/adapter/trainer_log.jsonl" "$W/adapter/trainer_log.jsonl" <<'PY' || t_fail "the losses differ"
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:3])
assert len(a) == len(b) and all(x == y for x, y in zip(a, b)), (a, b)
PY
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "deepspeed ds_z2_config.json: ZeRO stage 2, offload_optimizer none, offload_param none; zero_allow_untested_optimizer, fp16, bf16, zero_optimization.allgather_partitions"
t_expect_contains "comms_config, monitor_config have no meaning in ftpipe and are ignored"
t_expect_contains "ZeRO-2 shards AdamW's state over the ranks"
t_expect_contains "optimizer state on rank 0: "
t_expect_contains "(ZeRO stage 2 over 2 ranks)"
python3 -c 'import sys; whole, share = map(float, sys.argv[1:]); assert share == whole / 2, (whole, share)' \
  "$(metric "$PLAIN" optimizer_state_bytes)" "$(metric "$W" optimizer_state_bytes)" ||
  t_fail "rank 0's optimizer state is not half of stage 0's"
sed -i "s/deepspeed = ds_z2_config.json/zero_stage = 1/" "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_lacks "run      adapter"
t_end

t_case "ds_z2_offload_config.json on 2 ranks: AdamW on the host's threads, stage 0's bytes"
zero_workspace "max_steps = 6" "nproc_per_node = 2" "deepspeed = ds_z2_offload_config.json"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
cmp -s "$PLAIN/adapter/adapter_model.safetensors" "$W/adapter/adapter_model.safetensors" ||
  t_fail "ZeRO-2 with offload's adapter differs from stage 0's"
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "deepspeed ds_z2_offload_config.json: ZeRO stage 2, offload_optimizer cpu, offload_param none"
t_expect_contains "offload_optimizer = cpu: AdamW's state and an f32 master copy"
t_end

# close.py A B [TOLERANCE]: the safetensors of A and B hold the same f32 tensors
# within TOLERANCE (default 1e-6); their trainer logs the same losses within
# 1e-5 relative, where both logged a step. Prints the largest difference.
cat > "$T_ROOT/close.py" <<'PY'
import json, struct, sys
def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, v in header.items():
        if name != "__metadata__":
            assert v["dtype"] == "F32", (name, v["dtype"])
            a, b = v["data_offsets"]
            out[name] = struct.unpack("<%df" % ((b - a) // 4), data[a:b])
    return out
def losses(folder):
    return {l["current_steps"]: l["loss"] for l in map(json.loads, open(folder + "/trainer_log.jsonl")) if "loss" in l}
a, b = sys.argv[1], sys.argv[2]
tolerance = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-6
import os
name = "adapter_model.safetensors" if os.path.exists(a + "/adapter_model.safetensors") else "model.safetensors"
ta, tb = tensors(a + "/" + name), tensors(b + "/" + name)
assert ta.keys() == tb.keys()
worst = max(abs(x - y) for k in ta for x, y in zip(ta[k], tb[k]))
assert worst <= tolerance, "the tensors differ by %g" % worst
la, lb = losses(a), losses(b)
common = sorted(set(la) & set(lb))
assert common, "no step logged by both"
for step in common:
    assert abs(la[step] - lb[step]) <= 1e-5 * abs(lb[step]), (step, la[step], lb[step])
print(worst)
PY

t_case "ds_z3_offload_config.json on 2 ranks: stage 3 with both offloads ends at stage 0's adapter, a rank keeps half the weights and its part of the adapter, the export is a normal PEFT adapter"
zero_workspace "max_steps = 6" "nproc_per_node = 2" "deepspeed = ds_z3_offload_config.json"
cat >> "$W/Ftpipe" <<'P'

export/peft: export adapter
	format = peft
P
t_run "$FTPIPE" -C "$W"
t_expect_status 0
python3 "$T_ROOT/close.py" "$W/adapter" "$PLAIN/adapter" >/dev/null || t_fail "ZeRO-3's adapter is not stage 0's"
cmp -s "$W/adapter/adapter_model.safetensors" "$W/export/peft/adapter_model.safetensors" ||
  t_fail "the exported adapter is not the trained one"
[ -f "$W/export/peft/adapter_config.json" ] || t_fail "the export has no adapter_config.json"
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "deepspeed ds_z3_offload_config.json: ZeRO stage 3, offload_optimizer cpu, offload_param cpu; "
t_expect_contains "ZeRO-3 shards AdamW's state and every weight over the ranks"
t_expect_contains "offload_param = cpu: each rank's shard of the weights in host memory, uploaded layer by layer"
t_expect_contains "weights on rank 0: "
python3 -c 'import sys; whole, shard = map(float, sys.argv[1:]); assert whole / 2 <= shard < whole / 2 + 64, (whole, shard)' \
  "$(metric "$PLAIN" parameter_bytes)" "$(metric "$W" parameter_host_bytes)" ||
  t_fail "rank 0 does not keep half the weights in host memory"
# the adapter: half of each of the 2 layers' values, and the two layers the passes gather
t_expect_contains "LoRA adapter values on rank 0: "
python3 -c 'import sys; whole, held = map(float, sys.argv[1:]); assert held == 2 * (whole / 2) / 2 + 2 * whole / 2, (whole, held)' \
  "$(metric "$PLAIN" adapter_bytes)" "$(metric "$W" adapter_bytes)" ||
  t_fail "rank 0 does not keep its part of the adapter"
t_end

t_case "ds_z3_offload_config.json on one rank keeps every weight in host memory and ends with stage 0's bytes"
zero_workspace "max_steps = 5" "nproc_per_node = 1"
t_run "$FTPIPE" -C "$W" adapter
t_expect_status 0
ONE_PLAIN=$W
zero_workspace "max_steps = 5" "nproc_per_node = 1" "deepspeed = ds_z3_offload_config.json"
t_run "$FTPIPE" -C "$W" adapter
t_expect_status 0
cmp -s "$ONE_PLAIN/adapter/adapter_model.safetensors" "$W/adapter/adapter_model.safetensors" ||
  t_fail "one rank streaming its weights trains another adapter than stage 0"
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "ZeRO-3 with one rank shards nothing, but offload_param = cpu keeps the weights in host memory, uploading a layer's weights as a pass uses them; offload_optimizer = cpu: AdamW's state and an f32 master copy"
t_expect_lacks "preflight"
[ "$(metric "$W" parameter_host_bytes)" = "$(metric "$ONE_PLAIN" parameter_bytes)" ] ||
  t_fail "one rank does not keep every weight in host memory"
sed -i "s/deepspeed = ds_z3_offload_config.json/deepspeed = ds_z2_offload_config.json/; s/max_steps = 5/max_steps = 4/" \
  "$W/Ftpipe" # ZeRO is not in the key: a new max_steps makes it run
t_run "$FTPIPE" -C "$W" adapter
t_expect_status 0
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "ZeRO-2 with one rank has nothing to shard: it trains as stage 0; offload_optimizer = cpu"
t_end

t_case "full fine-tuning at ZeRO-3 on 2 ranks ends at stage 0's weights, keeps outputs, exports a normal model folder and is measured"
zero_workspace "max_steps = 4" "nproc_per_node = 2" "finetuning_type = full"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
FULL=$W
zero_workspace "max_steps = 4" "nproc_per_node = 2" "finetuning_type = full" "zero_stage = 3" \
  "save_strategy = steps" "save_steps = 2"
cat >> "$W/Ftpipe" <<'P'

export/model: export adapter
	format = merged
	dtype = f32
P
t_run "$FTPIPE" -C "$W"
t_expect_status 0
SHARDED=$W
# ZeRO-3 sums each micro-batch's gradients over the ranks (grad_shards.h): the
# weights may move from stage 0's as far as stage 0's own move when only the
# order of its sums changes (one rank, or micro-batches of half the rows)
zero_workspace "max_steps = 4" "nproc_per_node = 1" "finetuning_type = full"
t_run "$FTPIPE" -C "$W" adapter
t_expect_status 0
ONE=$W
zero_workspace "max_steps = 4" "nproc_per_node = 2" "finetuning_type = full"
sed -i "s/per_device_train_batch_size = 2/per_device_train_batch_size = 1/" "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" adapter
t_expect_status 0
reordering=$({ echo 1e-6; for other in "$ONE" "$W"; do python3 "$T_ROOT/close.py" "$other/adapter" "$FULL/adapter" 1; done; } |
  sort -g | tail -1)
# one rank streaming its weights from host memory (ZeRO-3 with both offloads) sums each micro-batch into its
# gradients' shard: the same yardstick
zero_workspace "max_steps = 4" "nproc_per_node = 1" "finetuning_type = full" "zero_stage = 3" "offload_param = cpu" \
  "offload_optimizer = cpu"
t_run "$FTPIPE" -C "$W" adapter
t_expect_status 0
python3 "$T_ROOT/close.py" "$W/adapter" "$FULL/adapter" "$reordering" ||
  t_fail "one rank streaming its weights ends further from stage 0's than reordering its sums moves them ($reordering)"
W=$SHARDED
python3 "$T_ROOT/close.py" "$W/adapter" "$FULL/adapter" "$reordering" ||
  t_fail "ZeRO-3's weights are further from stage 0's than reordering its sums moves them ($reordering)"
python3 - "$W" <<'PY' || t_fail "the export is not a model folder of the trained weights"
import json, sys
w = sys.argv[1]
assert json.load(open(w + "/export/model/config.json"))["torch_dtype"] == "float32"
assert open(w + "/export/model/model.safetensors", "rb").read() == open(w + "/adapter/model.safetensors", "rb").read()
PY
# The kept outputs and the result are read through the shards a unit at a time: the last step's kept
# folder is the result, byte for byte, and the first another model.
cmp -s "$W/adapter/checkpoint-4/model.safetensors" "$W/adapter/model.safetensors" ||
  t_fail "checkpoint-4 is not the result"
cmp -s "$W/adapter/checkpoint-2/model.safetensors" "$W/adapter/model.safetensors" &&
  t_fail "checkpoint-2 is the result"
# --measure trains a warm-up step, then the timed ones on the same model, which stays sharded between them
sed -i 's/^	max_steps = 4$/	max_steps = 6/' "$W/Ftpipe" # a stage not built yet
t_run "$FTPIPE" -C "$W" estimate --measure adapter
t_expect_status 0
t_expect_contains "measured by estimate --measure of adapter"
t_expect_lacks "not measured"
t_end

t_case "in-training evaluation and checkpoints at ZeRO-3 with offload_optimizer on 2 ranks: stage 0's eval_loss and adapter"
for zero in 0 3; do # (zero_workspace sets `stage`)
  offload=none
  [ $zero = 3 ] && offload=cpu
  zero_workspace "max_steps = 4" "nproc_per_node = 2" "zero_stage = $zero" "offload_optimizer = $offload" \
    "eval_strategy = steps" "eval_steps = 2" "save_steps = 2"
  sed -i 's/	cutoff_len = 40/	cutoff_len = 40\n	val_size = 8/' "$W/Ftpipe"
  t_run "$FTPIPE" -C "$W" adapter
  t_expect_status 0
  [ $zero = 0 ] && EVAL_PLAIN=$W
done
[ "$(grep -c eval_loss "$W/adapter/trainer_log.jsonl")" = 2 ] || t_fail "not 2 evaluations in the log"
python3 - "$EVAL_PLAIN/adapter/trainer_log.jsonl" "$W/adapter/trainer_log.jsonl" <<'PY' || t_fail "ZeRO-3's eval_loss is not stage 0's"
import json, sys
a, b = ([l["eval_loss"] for l in map(json.loads, open(p)) if "eval_loss" in l] for p in sys.argv[1:3])
assert len(a) == 2 and all(abs(x - y) <= 1e-6 * abs(x) for x, y in zip(a, b)), (a, b)
PY
python3 "$T_ROOT/close.py" "$W/adapter" "$EVAL_PLAIN/adapter" >/dev/null || t_fail "ZeRO-3's adapter is not stage 0's"
t_end

t_case "hostile configs are refused naming the file and the key"
zero_workspace "max_steps = 2" "nproc_per_node = 2" "deepspeed = bad.json"
printf '{"zero_optimization": {"stage": 2,}}' > "$W/bad.json"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "deepspeed = bad.json: $W/bad.json:1:35: not a DeepSpeed JSON config"
printf '{"zero_optimization": {"stage": 2, "offload_optimiser": {"device": "cpu"}}}' > "$W/bad.json"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "bad.json: unknown key zero_optimization.offload_optimiser"
printf '{"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 1}}' > "$W/bad.json"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "deepspeed = bad.json: train_micro_batch_size_per_gpu is 4 but the stage's per_device_train_batch_size is 2: make them agree"
printf '{"gradient_clipping": 1.0}' > "$W/bad.json"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "gradient_clipping is 1 but the stage's max_grad_norm is 0.5"
rm "$W/bad.json"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "deepspeed = bad.json: $W/bad.json:"
sed -i "s/deepspeed = bad.json/deepspeed = ds_z2_config.json\n\tzero_stage = 1/" "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "deepspeed = ds_z2_config.json sets zero_stage, offload_optimizer and offload_param: remove them"
sed -i "/deepspeed = /d; s/zero_stage = 1/zero_stage = 4/" "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "zero_stage = 4: expected 0, 1, 2 or 3"
sed -i "s/zero_stage = 4/zero_stage = 2\n\toffload_param = cpu/" "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "offload_param = cpu needs zero_stage = 3"
t_end

t_case "a stage that does not fit names zero_stage = 1 with its figure, and fits with it"
zero_workspace "max_steps = 2" "nproc_per_node = 2" "finetuning_type = full"
sed -i "s/^	dtype = f32$/	dtype = f32\n	hidden_size = 256\n	intermediate_size = 512/" "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" data/train_set # the check needs the model and the data built
t_expect_status 0
t_run env FTPIPE_MEMORY=58M "$FTPIPE" -C "$W" adapter # between the peak and the peak with ZeRO
t_expect_fail
t_expect_contains "stage adapter would need 60.9 MiB of host memory"
t_expect_contains "2 ranks on a machine: 30.7 MiB for the first (it writes), 30.2 MiB for each other)"
t_expect_contains "but 58.0 MiB is available: set zero_stage = 1: each of the 2 ranks then holds 1 / 2 of AdamW's state (needs 55.9 MiB of the 58.0 MiB)"
t_expect_lacks "run      adapter"
printf '\tzero_stage = 1\n' >> "$W/Ftpipe"
t_run env FTPIPE_MEMORY=58M "$FTPIPE" -C "$W" adapter
t_expect_status 0
t_end

# eight_layers LINES...: zero_workspace's with a model of 8 layers of width 256, its data built
eight_layers() {
  zero_workspace "$@"
  sed -i "s/^	dtype = f32$/	dtype = f32\n	hidden_size = 256\n	intermediate_size = 512\n	num_hidden_layers = 8/" "$W/Ftpipe"
  t_run "$FTPIPE" -C "$W" data/train_set
  t_expect_status 0
}

t_case "full fine-tuning on 8 layers that fits with neither stage 0 nor 1 names zero_stage = 2 with its figure, and fits with it"
eight_layers "max_steps = 2" "nproc_per_node = 2" "finetuning_type = full"
t_run env FTPIPE_MEMORY=142M "$FTPIPE" -C "$W" adapter # below stage 1's peak, above stage 2's
t_expect_fail
t_expect_contains "stage adapter would need 181.3 MiB of host memory"
t_expect_contains "but 142.0 MiB is available: set zero_stage = 2: each of the 2 ranks then holds 1 / 2 of AdamW's state and of the gradients (needs 139.9 MiB of the 142.0 MiB)"
printf '\tzero_stage = 2\n' >> "$W/Ftpipe"
t_run env FTPIPE_MEMORY=142M "$FTPIPE" -C "$W" adapter
t_expect_status 0
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "float gradients on rank 0: "
t_expect_contains "preflight: reduce-scattering the "
t_expect_lacks "preflight: an all-reduce of the 0.0 KiB"
# f32: the whole weights, their gradients' shard and two windows (a layer's each, an eighth of the weights)
python3 -c 'import sys; weights, gradients = map(float, sys.argv[1:]); assert weights / 2 < gradients < weights * 0.8, (weights, gradients)' \
  "$(metric "$W" parameter_bytes)" "$(metric "$W" gradient_bytes)" || t_fail "rank 0 holds the float gradients whole at ZeRO-2"
t_end

# On a GPU the budget is the GPU's free memory (NVML; FTPIPE_GPU_MEMORY here,
# where CI has no GPU): the check names the offloads once no batch size fits,
# with the device's figure and the host memory they take; the stage set so is
# let through to its backend (which then finds no GPU here).
t_case "on a GPU, a stage that does not fit names the offloads with their figures once no batch size fits; estimate shows each setting's"
zero_workspace "max_steps = 2" "finetuning_type = full" "gradient_checkpointing = true"
sed -i "s/^	dtype = f32$/	dtype = f32\n	hidden_size = 256\n	intermediate_size = 512\n	num_hidden_layers = 4/; s/backend = cpu/backend = cuda/" "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" data/train_set
t_expect_status 0
t_run env FTPIPE_GPU_MEMORY=70M "$FTPIPE" -C "$W" adapter
t_expect_fail
t_expect_contains "stage adapter would need 75.2 MiB of GPU memory a GPU (memory plan in bf16 for 2 x 40 tokens, recomputed"
t_expect_contains "but 70.0 MiB is free on the GPU: set zero_stage = 1 and offload_optimizer = cpu: AdamW's state in host memory, updated on its cores (needs 56.7 MiB of the 70.0 MiB a GPU, and 45.6 MiB of host memory)"
t_run env FTPIPE_GPU_MEMORY=50M "$FTPIPE" -C "$W" adapter
t_expect_fail
t_expect_contains "but 50.0 MiB is free on the GPU: set zero_stage = 3, offload_param = cpu and offload_optimizer = cpu: the weights, AdamW's state, the float master copy and the gradients stay in host memory, a layer's weights uploaded as a pass uses them (needs 42.5 MiB of the 50.0 MiB a GPU, and 54.7 MiB of host memory)"
t_run env FTPIPE_GPU_MEMORY=35M "$FTPIPE" -C "$W" adapter
t_expect_fail
t_expect_contains "but 35.0 MiB is free on the GPU: no batch size fits; try finetuning_type = lora"
# ftpipe estimate shows what each setting would take, this stage's marked, those over the budget said so
t_run env FTPIPE_GPU_MEMORY=50M "$FTPIPE" -C "$W" estimate adapter
t_expect_status 0
t_expect_contains "*      zero_stage = 0                                                    75.2 MiB     9.2 MiB  does not fit"
t_expect_contains "       zero_stage = 1, offload_optimizer = cpu                           56.7 MiB    45.6 MiB  does not fit"
t_expect_contains "       zero_stage = 3, offload_param = cpu, offload_optimizer = cpu      42.5 MiB    54.7 MiB"
"$FTPIPE" -C "$W" estimate --json adapter > "$W/estimate.json" || t_fail "estimate --json failed"
python3 - "$W/estimate.json" <<'PY' || t_fail "the JSON estimate lacks the choices: $(cat "$W/estimate.json")"
import json, sys
choices = json.load(open(sys.argv[1]))["stages"][0]["choices"]
assert [c["name"] for c in choices] == ["zero_stage = 0", "zero_stage = 1, offload_optimizer = cpu",
                                        "zero_stage = 3, offload_param = cpu",
                                        "zero_stage = 3, offload_param = cpu, offload_optimizer = cpu"], choices
assert [c["current"] for c in choices] == [True, False, False, False] and all(c["fits"] for c in choices), choices
assert choices[3]["device_bytes"] < choices[0]["device_bytes"] < choices[0]["device_bytes"] + choices[3]["host_bytes"]
PY
printf '\tzero_stage = 3\n\toffload_param = cpu\n\toffload_optimizer = cpu\n' >> "$W/Ftpipe"
t_run env FTPIPE_GPU_MEMORY=50M "$FTPIPE" -C "$W" adapter
t_expect_lacks "would need"
t_run env FTPIPE_GPU_MEMORY=50M "$FTPIPE" -C "$W" estimate adapter
t_expect_contains "*      zero_stage = 3, offload_param = cpu, offload_optimizer = cpu      42.5 MiB    54.7 MiB"
t_end

t_case "LoRA on 8 layers that fits with neither stage 0 nor 1 names zero_stage = 3 with its figure, and fits with it"
eight_layers "max_steps = 2" "nproc_per_node = 2"
t_run env FTPIPE_MEMORY=72M "$FTPIPE" -C "$W" adapter # below stage 1's peak, above stage 3's
t_expect_fail
t_expect_contains "stage adapter would need 80.3 MiB of host memory"
t_expect_contains "but 72.0 MiB is available: set zero_stage = 3: each of the 2 ranks then holds 1 / 2 of AdamW's state and of the weights, gathering a layer's weights as it uses them (needs 70.6 MiB of the 72.0 MiB)"
t_run env FTPIPE_MEMORY=72M "$FTPIPE" -C "$W" estimate adapter # with ranks on cpu: the four stages, host memory only
t_expect_contains "*      zero_stage = 0                                                           -    80.3 MiB  does not fit"
t_expect_contains "       zero_stage = 3                                                           -    70.6 MiB"
t_expect_lacks "offload_optimizer = cpu"
printf '\tzero_stage = 3\n' >> "$W/Ftpipe"
t_run env FTPIPE_MEMORY=72M "$FTPIPE" -C "$W" adapter
t_expect_status 0
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "(weights 13.7 MiB as this rank's ZeRO-3 shard and two gathered layers"
t_expect_contains "weights on rank 0: 13.7 MiB in the backend's memory, 0 B offloaded to host memory"
t_end

# Runs the pipeline in $W in the background, kills rank $1 of $2 with SIGKILL once
# checkpoint-10 exists, and checks that the run failed before its end.
kill_rank_after_checkpoint() {
  "$FTPIPE" -C "$W" > "$W/first.out" 2>&1 &
  pid=$!
  waited=0
  until ls -d "$W"/.ftpipe/work/*/checkpoints/checkpoint-10 >/dev/null 2>&1 || [ $waited -ge 1200 ] || ! kill -0 "$pid" 2>/dev/null; do
    sleep 0.05; waited=$((waited + 1))
  done
  rank_pid=$(sed -n "s/^rank $1 of $2: pid \\([0-9]*\\) on .*/\\1/p" "$W"/.ftpipe/work/*/rank-$1.log)
  kill -9 "$rank_pid"
  wait "$pid"
  [ $? != 0 ] || t_fail "the run succeeded after its rank $1 was killed"
  [ -f "$W/adapter/adapter_model.safetensors" ] && t_fail "the run finished before it was killed"
}

t_case "kill -9 of a 2-rank ZeRO-2 run resumes on 1 rank at stage 0"
zero_workspace "max_steps = 300" "save_steps = 10" "nproc_per_node = 2" "zero_stage = 2"
kill_rank_after_checkpoint 1 2
sed -i "s/nproc_per_node = 2/nproc_per_node = 1/; s/zero_stage = 2/zero_stage = 0/" "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "resumed from checkpoint-"
t_expect_contains "steps of 2 x 4 rows x 1 rank"
t_end

t_case "kill -9 of a 4-rank ZeRO-3 run resumes on 2 ranks at ZeRO-1 within 1e-5 of the uninterrupted run, as 2 ranks throughout are"
zero_workspace "max_steps = 100" "save_steps = 10" "nproc_per_node = 4" "zero_stage = 3"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
STRAIGHT=$W
zero_workspace "max_steps = 100" "save_steps = 10" "nproc_per_node = 2" "zero_stage = 1"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
python3 "$T_ROOT/close.py" "$W/adapter" "$STRAIGHT/adapter" 1e-5 >/dev/null || t_fail "2 ranks at ZeRO-1 are not 4 at ZeRO-3"
zero_workspace "max_steps = 100" "save_steps = 10" "nproc_per_node = 4" "zero_stage = 3"
kill_rank_after_checkpoint 2 4
sed -i "s/nproc_per_node = 4/nproc_per_node = 2/; s/zero_stage = 3/zero_stage = 1/" "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "resumed from checkpoint-"
t_expect_contains "steps of 2 x 2 rows x 2 ranks"
python3 "$T_ROOT/close.py" "$W/adapter" "$STRAIGHT/adapter" 1e-5 >/dev/null ||
  t_fail "the resumed run is not within 1e-5 of the uninterrupted one"
t_end

t_case "examples/zero: ZeRO 0, 1, 2, 3 and 3 with offload on 2 ranks, each run and evaluated, in one table"
W=$(t_workspace)
mkdir -p "$W/zero" "$W/quickstart"
cp "$ROOT/examples/zero/Ftpipe" "$ROOT/examples/zero/compare.sh" "$ROOT"/examples/zero/ds_z*_config.json "$W/zero/"
cp "$ROOT/examples/quickstart/make_addition_data.sh" "$W/quickstart/"
t_run "$FTPIPE" -C "$W/zero" -j 2
t_expect_status 0
t_expect_contains "ftpipe: 15 run, 0 restored"
python3 - "$W/zero" <<'PY' || t_fail "the comparison table is wrong"
import sys
w = sys.argv[1]
rows = [l.split("|")[1:-1] for l in open(w + "/comparison.md").read().splitlines()[2:]]
assert [r[0].strip() for r in rows] == ["z0", "z1", "z2", "z3", "z3_offload"], rows
mib = {r[0].strip(): float(r[3].split()[0]) for r in rows}
for r in rows:
    assert float(r[1].split()[0]) > 0 and float(r[2]) > 0 and float(r[4].split()[0]) > 0, r
    assert 0.0 <= float(r[5]) <= 1.0, r
# rank 0's allocations: stage 3 shards the weights, offload_param moves the shard to host memory
assert mib["z3"] < mib["z0"] and mib["z3_offload"] < mib["z3"], mib
PY
t_run "$FTPIPE" -C "$W/zero" log runs/z3_offload
t_expect_contains "deepspeed ds_z3_offload_config.json: ZeRO stage 3, offload_optimizer cpu, offload_param cpu"
t_end
