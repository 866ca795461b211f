#!/bin/sh
# On a GPU machine: `ftpipe estimate`'s device memory per GPU against the cuda
# backend's measured peak (the memory_bytes metric train logs: every allocation
# and the scratch) for LoRA on the Qwen2.5 0.5B, 1.5B and 7B shapes, and on
# 1.5B and 7B with every weight streamed from host memory (ZeRO-3 with
# offload_param on one GPU); one
# "ok"/"not ok" line per case (within 10%), "#" lines with the figures. Needs
# build/ftpipe built with nvcc and python3; not part of `make test`.
cd "$(dirname "$0")/../.."
[ -d build/gpu/lib ] && export LD_LIBRARY_PATH="$(pwd)/build/gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
F="$(pwd)/build/ftpipe"
W=$(mktemp -d "${TMPDIR:-/tmp}/ftpipe-gpu-estimate.XXXXXX")
cp examples/quickstart/make_addition_data.sh "$W/"
failed=0
run_case() { # SHAPE BATCH CUTOFF RECOMPUTE [streamed]
  name="$1 batch $2 x $3 recompute $4${5:+ streamed}"
  suffix=${5:+_$5}
  cat > "$W/Ftpipe" <<P
models/$1: init
	shape = $1

data/train.json: shell make_addition_data.sh
	run = sh \$< train 256 > \$@

data/set_$3: tokenize models/$1 data/train.json
	template = qwen
	cutoff_len = $3

adapter_$1_$2_$3_$4$suffix: train models/$1 data/set_$3
	max_steps = 2
	logging_steps = 1
	per_device_train_batch_size = $2
	gradient_checkpointing = $4
	backend = cuda
	gpus = 1
P
  # ZeRO is not in the key: another seed makes the streamed case a run of its own
  [ -n "$5" ] && printf '\tzero_stage = 3\n\toffload_param = cpu\n\tseed = 7\n' >> "$W/Ftpipe"
  target="adapter_$1_$2_$3_$4$suffix"
  "$F" -C "$W" "models/$1" "data/set_$3" > "$W/build.log" 2>&1 || { cat "$W/build.log"; failed=$((failed + 1)); return; }
  "$F" -C "$W" estimate --json "$target" > "$W/estimate.json" || { failed=$((failed + 1)); return; }
  "$F" -C "$W" "$target" > "$W/train.log" 2>&1 || { cat "$W/train.log"; failed=$((failed + 1)); return; }
  python3 - "$W" "$target" "$name" <<'PY' || failed=$((failed + 1))
import json, sqlite3, sys
folder, target, name = sys.argv[1:4]
stage = json.load(open(folder + "/estimate.json"))["stages"][0]
estimated = stage["device_bytes"]["value"]
db = sqlite3.connect(folder + "/.ftpipe/state.db")
run = db.execute("SELECT id FROM runs WHERE target = ? ORDER BY id DESC LIMIT 1", (target,)).fetchone()[0]
measured = db.execute("SELECT max(value) FROM metrics WHERE run_id = ? AND name = 'memory_bytes'", (run,)).fetchone()[0]
error = (estimated - measured) / measured
print("# %s: estimated %.2f GiB, measured %.2f GiB, %+.1f%% (%s)" % (name, estimated / 2**30, measured / 2**30,
                                                                  100 * error, stage["device_bytes"]["source"]))
print("%s %s" % ("ok" if abs(error) <= 0.10 else "not ok", name))
samples = db.execute("SELECT count(*), max(value) FROM metrics WHERE run_id = ? AND name = 'guard_gpu_temperature_c'",
                     (run,)).fetchone()
print("%s the guards sampled the GPU through NVML (%d samples, up to %s C)" % (
    "ok" if samples[0] > 0 else "not ok", samples[0], samples[1]))
sys.exit(0 if abs(error) <= 0.10 and samples[0] > 0 else 1)
PY
}
run_case qwen2.5-0.5b 8 512 false
run_case qwen2.5-0.5b 16 1024 true
run_case qwen2.5-1.5b 8 1024 false
run_case qwen2.5-7b 4 1024 true
run_case qwen2.5-1.5b 8 1024 false streamed
run_case qwen2.5-7b 4 1024 true streamed
rm -rf "$W"
echo "$failed failed"
[ "$failed" -eq 0 ]
