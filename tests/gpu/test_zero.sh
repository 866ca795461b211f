#!/bin/sh
# ZeRO and offload_optimizer on the cuda backend (the cpu backend's are in
# tests/e2e/test_zero.sh). Two cuda runs are not bit for bit the same yet
# (tests/gpu/test_train_bits.sh), so a variant passes when its adapter is no
# further from the plain run's than a second plain run is (times 4, for the
# drift of a different path) and its losses are within 1e-3 relative:
#   - one GPU: offload_optimizer = cpu (AdamW on the host's cores) against in place;
#   - two GPUs (skipped on one): 2 ranks over NCCL at ZeRO-1, ZeRO-2 and ZeRO-2
#     with offload against 2 ranks at stage 0.
# Run on a GPU machine by tests/gpu/run.sh, with build/ftpipe.
. "$(dirname "$0")/gpu_lib.sh"

if ! nvidia-smi >/dev/null 2>&1; then
  echo "ok ZeRO and offload on the GPU # SKIP no GPU here"
  exit 0
fi
GPUS=$(nvidia-smi -L | wc -l)

trained() { # NPROC PARAMETER-LINES...
  n=$1
  shift
  W=$(tiny_addition_workspace 2000 128)
  cat >> "$W/Ftpipe" <<P
adapter: train models/tiny data/train_set
	backend = cuda
	gpus = $n
	nproc_per_node = $n
	learning_rate = 1e-3
	per_device_train_batch_size = 4
	global_batch_size = 8
	max_steps = 60
	logging_steps = 1
P
  for line in "$@"; do printf '\t%s\n' "$line"; done >> "$W/Ftpipe"
  "$FTPIPE" -C "$W" > "$W/out" 2>&1 || t_fail "training with $n GPUs and $* failed: $(tail -20 "$W/out")"
  echo "$W/adapter"
}

compare() { # REFERENCE REPEAT CANDIDATE
  python3 - "$@" <<'PY'
import json, struct, sys
def tensors(d):
    with open(d + "/adapter_model.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return {k: struct.unpack("<%df" % ((t["data_offsets"][1] - t["data_offsets"][0]) // 4),
                             data[t["data_offsets"][0]:t["data_offsets"][1]])
            for k, t in header.items() if k != "__metadata__"}
def losses(d):
    return [json.loads(l)["loss"] for l in open(d + "/trainer_log.jsonl") if '"loss"' in l]
def distance(x, y):
    return max(abs(p - q) for k in x for p, q in zip(x[k], y[k]))
reference, repeat, candidate = sys.argv[1:4]
r = tensors(reference)
noise, d = distance(r, tensors(repeat)), distance(r, tensors(candidate))
print("# %s: %g from the plain run, whose repeat is %g from it" % (candidate, d, noise))
assert d <= 4 * noise + 1e-6, "the adapter is %g from the plain run's, a repeat %g" % (d, noise)
for step, (a, b) in enumerate(zip(losses(reference), losses(candidate)), 1):
    assert abs(a - b) <= 1e-3 * abs(a), "step %d: loss %r, the plain run's %r" % (step, b, a)
PY
}

t_case "offload_optimizer = cpu on one GPU: the in-place run's adapter, as close as a repeat"
plain=$(trained 1)
repeat=$(trained 1)
offloaded=$(trained 1 "zero_stage = 1" "offload_optimizer = cpu")
compare "$plain" "$repeat" "$offloaded" || t_fail "offload_optimizer against in place"
grep -q "offload_optimizer = cpu: AdamW's state" "$(dirname "$offloaded")/out" 2>/dev/null ||
  "$FTPIPE" -C "$(dirname "$offloaded")" log adapter | grep -q "offload_optimizer = cpu: AdamW's state" ||
  t_fail "the log does not note the offload"
t_end

if [ "$GPUS" -lt 2 ]; then
  echo "ok ZeRO-1 and ZeRO-2 over NCCL on 2 GPUs # SKIP $GPUS GPU here"
  exit 0
fi
t_case "ZeRO-1 and ZeRO-2 over NCCL on 2 GPUs, with and without offload: stage 0's adapter, as close as a repeat"
plain=$(trained 2)
repeat=$(trained 2)
for variant in "zero_stage = 1" "zero_stage = 2" "zero_stage = 2;offload_optimizer = cpu"; do
  sharded=$(IFS=';'; trained 2 $variant)
  compare "$plain" "$repeat" "$sharded" || t_fail "$variant against stage 0"
done
t_end
