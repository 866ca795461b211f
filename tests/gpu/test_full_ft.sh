#!/bin/sh
# Full fine-tuning on the cuda backend through the train stage, against the cpu
# backend (tests/gpu/test_cuda_parity.c checks the model and optimizer beneath):
#   - 20 steps of a tiny bf16 model on one GPU: each step's loss within 2e-2
#     relative of the cpu backend's, and falling; the result a model folder in
#     config.json's torch_dtype (bfloat16), as on cpu;
#   - zero_stage = 1 with offload_optimizer = cpu (AdamW on the host) against
#     AdamW on the GPU: each step's loss within 1e-3 relative;
# (backend enters a stage's key, so a stage does not resume across backends; that
# a checkpoint of either backend loads into the other is test_cuda_parity.c's.)
# Prints the measured differences. Run on a GPU machine by tests/gpu/run.sh, with
# build/ftpipe.
. "$(dirname "$0")/gpu_lib.sh"

if ! nvidia-smi >/dev/null 2>&1; then
  echo "ok full fine-tuning on the GPU # SKIP no GPU here"
  exit 0
fi

# A workspace whose `model` target is full fine-tuning of a tiny bf16 model with
# the given parameter lines; prints its path.
workspace() {
  W=$(tiny_addition_workspace 400 64)
  cat >> "$W/Ftpipe" <<P
model: train models/tiny data/train_set
	finetuning_type = full
	learning_rate = 3e-4
	per_device_train_batch_size = 4
	max_steps = 20
	logging_steps = 1
P
  for line in "$@"; do printf '\t%s\n' "$line"; done >> "$W/Ftpipe"
  echo "$W"
}

trained() { # PARAMETER-LINES...: trains, prints the workspace
  W=$(workspace "$@")
  "$FTPIPE" -C "$W" > "$W/out" 2>&1 || t_fail "training with $* failed: $(tail -20 "$W/out")"
  echo "$W"
}

compare() { # REFERENCE CANDIDATE TOLERANCE: per-step losses of trainer_log.jsonl
  python3 - "$@" <<'PY'
import json, sys
def losses(d):
    return {json.loads(l)["step"]: json.loads(l)["loss"] for l in open(d + "/model/trainer_log.jsonl") if '"loss"' in l}
reference, candidate, tolerance = losses(sys.argv[1]), losses(sys.argv[2]), float(sys.argv[3])
steps = sorted(candidate)
assert steps and all(s in reference for s in steps), "steps %r, the reference's %r" % (steps, sorted(reference))
worst = max(abs(candidate[s] - reference[s]) / abs(reference[s]) for s in steps)
print("# %s against %s, steps %d to %d: worst relative loss difference %.2e (tolerance %g); loss %.4f -> %.4f"
      % (sys.argv[2], sys.argv[1], steps[0], steps[-1], worst, tolerance, candidate[steps[0]], candidate[steps[-1]]))
assert worst <= tolerance, "a step's loss is %g relative from the reference's" % worst
PY
}

falls() { # WORKSPACE: the last logged loss below the first
  python3 - "$1" <<'PY'
import json, sys
l = [json.loads(x)["loss"] for x in open(sys.argv[1] + "/model/trainer_log.jsonl") if '"loss"' in x]
assert len(l) >= 20 and l[-1] < l[0] - 0.1, "losses %r do not fall" % l
PY
}

dtype_of() { # WORKSPACE: the dtypes in model/model.safetensors
  python3 - "$1" <<'PY'
import json, struct, sys
with open(sys.argv[1] + "/model/model.safetensors", "rb") as f:
    header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
print(" ".join(sorted({t["dtype"] for k, t in header.items() if k != "__metadata__"})))
PY
}

t_case "full fine-tuning on cuda: 20 steps' losses within 2e-2 of the cpu backend's and falling, a bf16 model folder"
on_cpu=$(trained "backend = cpu")
on_gpu=$(trained "backend = cuda")
compare "$on_cpu" "$on_gpu" 2e-2 || t_fail "cuda against cpu"
falls "$on_gpu" || t_fail "the loss does not fall on cuda"
[ "$(dtype_of "$on_gpu")" = "BF16" ] || t_fail "the cuda result holds $(dtype_of "$on_gpu"), not BF16"
[ "$(dtype_of "$on_gpu")" = "$(dtype_of "$on_cpu")" ] || t_fail "the cuda and cpu results differ in dtype"
grep -q "float master copy" "$on_gpu/out" ||
  "$FTPIPE" -C "$on_gpu" log model | grep -q "float master copy" || t_fail "the memory plan does not name the master copy"
t_end

t_case "full fine-tuning on cuda with offload_optimizer = cpu: AdamW on the host, losses within 1e-3 of AdamW on the GPU"
offloaded=$(trained "backend = cuda" "zero_stage = 1" "offload_optimizer = cpu")
compare "$on_gpu" "$offloaded" 1e-3 || t_fail "offloaded against in place"
t_end
