#!/bin/sh
# ftpipe estimate: its figures against what runs measure. Peak host memory is
# compared on the release build (ASan's shadow memory and quarantine would be
# measured too) for shapes, batch sizes, recomputation, LoRA and full fine-tuning;
# then the time figure from a past run's throughput, the JSON form, and unknown
# figures saying why.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/estimate_models.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RELEASE="$ROOT/build/ftpipe"

W=$(t_workspace)
python3 - "$W/train.json" <<'PY'
import json, sys
# Every sample longer than cutoff_len, so each micro-batch fills the planned rows.
rows = [{"instruction": "count by %d" % i, "input": "", "output": " ".join(str(i * j) for j in range(80))}
        for i in range(48)]
json.dump(rows, open(sys.argv[1], "w"))
PY
# A case: NAME MODEL BATCH TYPE RECOMPUTE [RANK [LINES]]; seeds differ so that no two share a key.
case_lines() {
  printf '%s: train %s data/set_%s\n' "$1" "$2" "$2" | sed 's|data/set_models/|data/set_|'
  printf '\tfinetuning_type = %s\n\tper_device_train_batch_size = %s\n\tgradient_checkpointing = %s\n' "$4" "$3" "$5"
  printf '\tlora_rank = %s\n\tmax_steps = 1\n\tbackend = cpu\n\tseed = %s\n%b\n' "${6:-8}" "$SEED" "${7:-}"
  SEED=$((SEED + 1))
}
SEED=1
{
  estimate_models
  case_lines full_a_4 models/a 4 full false
  case_lines full_a_4_recomputed models/a 4 full true
  case_lines full_a_1 models/a 1 full false
  case_lines lora_a_8 models/a 8 lora false
  case_lines lora_a_8_recomputed models/a 8 lora true
  case_lines full_b_2 models/b 2 full false
  case_lines lora_b_6_rank64 models/b 6 lora false 64
  # one rank that streams its weights from host memory (ZeRO-3, offload_param) with AdamW there too
  case_lines full_a_4_streamed models/a 4 full false 8 '\tzero_stage = 3\n\toffload_param = cpu\n\toffload_optimizer = cpu\n'
} > "$W/Ftpipe"
CASES="full_a_4 full_a_4_recomputed full_a_1 lora_a_8 lora_a_8_recomputed full_b_2 lora_b_6_rank64 full_a_4_streamed"

t_case "estimate says which figures wait for inputs that are not built yet"
t_run "$FTPIPE" -C "$W" estimate full_a_4
t_expect_status 0
t_expect_contains "needs $W/models/a, which is not built yet"
t_expect_contains "7.15M parameters x 4 bytes"
t_end

if [ ! -x "$RELEASE" ]; then
  echo "ok estimate accuracy # SKIP $RELEASE is not built (make build/ftpipe)"
  exit 0
fi

t_case "peak host memory estimates are within 10% of the measured peak (8 cases)"
t_run "$RELEASE" -C "$W" models/a models/b data/set_a data/set_b
t_expect_status 0
"$RELEASE" -C "$W" estimate --json $CASES > "$W/estimate.json" || t_fail "estimate --json failed"
t_run "$RELEASE" -C "$W" $CASES
t_expect_status 0
for c in $CASES; do
  "$RELEASE" -C "$W" log "$c" > "$W/$c.log"
done
t_run python3 - "$W" $CASES <<'PY'
import json, re, sys
folder, cases = sys.argv[1], sys.argv[2:]
estimates = {s["target"]: s for s in json.load(open(folder + "/estimate.json"))["stages"]}
bad = 0
for case in cases:
    log = open("%s/%s.log" % (folder, case)).read()
    measured = int(re.search(r"peak host memory \(resident\): .* \((\d+) bytes\)", log).group(1))
    figure = estimates[case]["host_bytes"]
    estimated = figure["value"]
    error = (estimated - measured) / measured
    ok = figure["known"] and abs(error) <= 0.10
    bad += not ok
    print("%-22s estimated %7.1f MiB, measured %7.1f MiB, %+5.1f%% %s" % (
        case, estimated / 2**20, measured / 2**20, 100 * error, "ok" if ok else "OUTSIDE 10%"))
print("cases outside: %d" % bad)
PY
echo "$T_OUT" | sed 's/^/  /'
t_expect_status 0
t_expect_contains "cases outside: 0"
t_end

t_case "time comes from the throughput a past run on this device left in state.db"
t_run "$RELEASE" -C "$W" estimate --json lora_a_8
t_expect_status 0
t_expect_lacks "lora_a_8"   # built: nothing to estimate
cat >> "$W/Ftpipe" <<'P'
longer: train models/a data/set_a
	max_steps = 4
	per_device_train_batch_size = 4
	backend = cpu
P
t_run "$RELEASE" -C "$W" estimate longer
t_expect_status 0
t_expect_contains "time   on cpu: steps and evaluations"
t_expect_contains "ops/s, logged by run"
t_expect_lacks "no finished train run"
t_end

t_case "a stage whose memory does not fit is refused before it starts, naming the least change that fits"
cat >> "$W/Ftpipe" <<'P'

big: train models/a data/set_a
	finetuning_type = full
	max_steps = 1
	per_device_train_batch_size = 4
	backend = cpu
	threads = 2
	seed = 99
P
t_run env FTPIPE_MEMORY=200M "$FTPIPE" -C "$W" big
t_expect_status 1
t_expect_contains "stage big would need 211"
t_expect_contains "of host memory (memory plan"
t_expect_contains "available: set per_device_train_batch_size = 2 and gradient_accumulation_steps = 2, the same effective batch (needs 176"
t_expect_lacks "run      big"
t_run env FTPIPE_MEMORY=150M "$FTPIPE" -C "$W" big
t_expect_status 1
t_expect_contains "no batch size fits; try finetuning_type = lora"
t_end

t_case "a run whose outputs exceed a small tmpfs is refused before any stage starts"
T=$(t_workspace)
if mount -t tmpfs -o size=16m ftpipe-test "$T" 2>/dev/null; then
  cat > "$T/Ftpipe" <<'P'
notes.txt: shell
	run = echo first > $@

models/m: init
	vocab_size = 16384
	hidden_size = 256
	num_hidden_layers = 4
	intermediate_size = 704
	num_attention_heads = 4
	num_key_value_heads = 2
	dtype = f32
P
  t_run "$FTPIPE" -C "$T"
  t_expect_status 1
  t_expect_contains "not enough disk space for this run"
  t_expect_contains "models/m 27.3 MiB"
  t_expect_contains "on the tmpfs file system mounted at $T, which has"
  t_expect_contains "MiB short"
  t_expect_lacks "run      notes.txt"
  [ -e "$T/notes.txt" ] && t_fail "a stage ran before the refusal"
  sed -i 's/hidden_size = 256/hidden_size = 64/; s/vocab_size = 16384/vocab_size = 1024/' "$T/Ftpipe"
  t_run "$FTPIPE" -C "$T"
  t_expect_status 0
  umount "$T"
  t_end
else
  echo "ok a run whose outputs exceed a small tmpfs is refused # SKIP cannot mount a tmpfs (needs root)"
fi

# Estimates need no GPU: full fine-tuning on cuda is planned in mixed precision.
t_case "full fine-tuning on cuda is estimated with its float master weights, at ZeRO-3 1 / ranks of them a GPU"
G=$(t_workspace)
cp "$W/train.json" "$G/"
{
  estimate_models
  printf 'gpu_full: train models/a data/set_a\n\tfinetuning_type = full\n\tmax_steps = 1\n\tbackend = cuda\n\tgpus = 1\n\n'
  printf 'gpu_full_zero3: train models/a data/set_a\n\tfinetuning_type = full\n\tmax_steps = 1\n\tbackend = cuda\n'
  printf '\tgpus = 2\n\tnproc_per_node = 2\n\tzero_stage = 3\n\n'
  printf 'gpu_full_zero3_offload: train models/a data/set_a\n\tfinetuning_type = full\n\tmax_steps = 1\n'
  printf '\tbackend = cuda\n\tgpus = 2\n\tnproc_per_node = 2\n\tzero_stage = 3\n\toffload_optimizer = cpu\n'
} > "$G/Ftpipe"
t_run "$FTPIPE" -C "$G" data/set_a
t_expect_status 0
t_run "$FTPIPE" -C "$G" estimate gpu_full gpu_full_zero3 gpu_full_zero3_offload
t_expect_status 0
# models/a: 7.15M weights: bf16 2 bytes, a float master copy, float gradients 4 each, AdamW 8
t_expect_contains "(bf16 weights 13.6 MiB, float master weights 27.3 MiB, float gradients 27.3 MiB, AdamW 54.5 MiB,"
# ZeRO-3 over 2 ranks: half the master copy and of AdamW; the weights' half and two gather buffers (the
# embeddings, 8 MiB each in bf16); half the float gradients, a window of the largest unit (the
# embeddings, 16 MiB in float: this toy model is mostly embeddings) and one of a layer (2.8 MiB),
# where backward goes on beside a unit's reduce-scatter; with offload_optimizer the master
# shard, AdamW and the gradients' shard in host memory: the windows and a staging buffer of the
# embeddings' half (8 MiB) stay
t_expect_contains "(bf16 weights 22.8 MiB, float master weights 13.6 MiB, float gradients 32.4 MiB, AdamW 27.3 MiB,"
t_expect_contains "(bf16 weights 22.8 MiB, float master weights in host memory, float gradients 26.8 MiB, AdamW in host"
t_expect_lacks "not available"
t_end
