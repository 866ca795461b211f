#!/bin/sh
# ftpipe estimate's time against the measured time of the real stage, on the cpu
# backend, for several shapes, batch sizes, LoRA and full fine-tuning and
# recomputation: (a) from the rates a past run of the train kind on this device
# left in state.db, and (b) from `ftpipe estimate --measure`, which times a few
# real steps just before. What is compared is CPU time (every thread of the
# ftpipe process and its stages), not wall time: on a machine shared with other
# work, wall time says how busy the machine was; CPU time says what the stage
# cost, and the estimate's cpu_time_s predicts it. Every stage runs with
# threads = 1, so its CPU time is also its wall time on an idle machine. Each
# case must be within 20 %; a case outside fails the test. The accuracy cases
# run the release build (ASan's own cost is not the program's); the JSON and text
# forms of --measure run the build under test. A stage that streams its weights
# from host memory takes no rate from runs that did not.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/estimate_models.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RELEASE="$ROOT/build/ftpipe"

W=$(t_workspace)
python3 - "$W/train.json" <<'PY'
import json, sys
# Every sample longer than cutoff_len, so each micro-batch fills its rows.
rows = [{"instruction": "count by %d" % i, "input": "", "output": " ".join(str(i * j) for j in range(80))}
        for i in range(64)]
json.dump(rows, open(sys.argv[1], "w"))
PY
# NAME MODEL TYPE BATCH RECOMPUTE STEPS
case_lines() {
  printf '%s: train models/%s data/set_%s\n' "$1" "$2" "$2"
  printf '\tfinetuning_type = %s\n\tper_device_train_batch_size = %s\n\tgradient_checkpointing = %s\n' "$3" "$4" "$5"
  printf '\tmax_steps = %s\n\tsave_steps = %s\n\tbackend = cpu\n\tthreads = 1\n\n' "$6" "$(($6 / 2))"
}
{
  estimate_models
  case_lines reference a lora 4 false 12
  case_lines a_lora_8 a lora 8 false 8
  case_lines a_full_2_recomputed a full 2 true 16
  case_lines b_lora_4 b lora 4 false 12
  case_lines b_full_6 b full 6 false 8
} > "$W/Ftpipe"
CASES="a_lora_8 a_full_2_recomputed b_lora_4 b_full_6"

t_case "estimate --measure says where its time comes from, as text and as JSON"
t_run "$FTPIPE" -C "$W" estimate --measure reference
t_expect_status 0
t_expect_contains "time   needs $W/models/a, which is not built yet"
t_expect_lacks "measuring reference"
t_run "$FTPIPE" -C "$W" models/a data/set_a models/b data/set_b
t_expect_status 0
t_run "$FTPIPE" -C "$W" estimate --measure reference
t_expect_status 0
t_expect_contains "measuring reference (train): a few real steps, timed and thrown away"
t_expect_contains "time   on cpu: steps and evaluations"
t_expect_contains "ops at"
t_expect_contains "measured by estimate --measure of reference; loading, checkpoints and the result"
t_expect_contains "s of CPU time"
"$FTPIPE" -C "$W" estimate --measure --json reference > "$W/measured.json" 2> "$W/measured.err" ||
  t_fail "estimate --measure --json failed: $(cat "$W/measured.err")"
python3 - "$W/measured.json" <<'PY' || t_fail "the JSON lacks a measured time"
import json, sys
stage = json.load(open(sys.argv[1]))["stages"][0]
assert stage["time_s"]["known"] and stage["time_s"]["value"] > 0, stage
assert "measured by estimate --measure" in stage["time_s"]["source"], stage
assert stage["cpu_time_s"]["known"], stage
PY
# Nothing of it was kept but the rates: no run, no output, no work folder, no scratch.
t_run "$FTPIPE" -C "$W" status
t_expect_contains "reference"
[ -e "$W/reference" ] && t_fail "the measurement published an output"
ls "$W/.ftpipe" | grep -q measure- && t_fail "a scratch folder was left: $(ls "$W/.ftpipe")"
[ "$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT count(*) FROM runs WHERE target = 'reference'\").fetchone()[0])" "$W/.ftpipe/state.db")" = 0 ] ||
  t_fail "the measurement recorded a run"
t_end

t_case "a measurement runs the stage's ranks and on its backend, and one that fails says why"
cat >> "$W/Ftpipe" <<'P'
on_cuda: train models/a data/set_a
	max_steps = 2
	backend = cuda
	gpus = 1
P
cat >> "$W/Ftpipe" <<'P'
two_ranks: train models/a data/set_a
	max_steps = 2
	per_device_train_batch_size = 2
	nproc_per_node = 2
	backend = cpu
	threads = 1
P
t_run "$FTPIPE" -C "$W" estimate --measure two_ranks
t_expect_status 0
t_expect_contains "measured by estimate --measure of two_ranks"
t_run "$FTPIPE" -C "$W" estimate --measure on_cuda
t_expect_status 0
if [ -e /dev/nvidia0 ]; then
  t_expect_contains "measured by estimate --measure of on_cuda"
else
  t_expect_contains "time   not measured (backend = cuda: no usable CUDA GPU"
  t_expect_contains "no finished train run or measurement on cuda in state.db yet" # the cpu's rates are not the GPU's
fi
t_end

t_case "a run that keeps its weights in host memory is predicted only by one that does, or by --measure"
cat >> "$W/Ftpipe" <<'P'
streamed: train models/a data/set_a
	max_steps = 2
	per_device_train_batch_size = 2
	zero_stage = 3
	offload_param = cpu
	backend = cpu
	threads = 1
P
t_run "$FTPIPE" -C "$W" estimate streamed # two_ranks' measured rate is of a run with every weight in place
t_expect_status 0
t_expect_contains "no finished train run or measurement on cpu in state.db yet to take a rate of steps and evaluations with the weights in host memory from"
t_run "$FTPIPE" -C "$W" estimate --measure streamed
t_expect_status 0
t_expect_contains "steps and evaluations with the weights in host memory"
t_expect_contains "measured by estimate --measure of streamed"
t_end

if [ ! -x "$RELEASE" ]; then
  echo "ok estimated time against measured time # SKIP $RELEASE is not built (make build/ftpipe)"
  exit 0
fi

t_case "estimated CPU time within 20% of the real stage's, from a past run and from --measure (4 cases)"
t_run "$RELEASE" -C "$W" reference
t_expect_status 0
t_run python3 - "$RELEASE" "$W" $CASES <<'PY'
import json, resource, subprocess, sys, time
ftpipe, folder, cases = sys.argv[1], sys.argv[2], sys.argv[3:]

def estimate(target, *flags):
    out = subprocess.run([ftpipe, "-C", folder, "estimate", "--json", *flags, target], check=True,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
    return json.loads(out)["stages"][0]["cpu_time_s"]

def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime

# (a): every case from the reference run's rates, before any case runs.
from_past = {case: estimate(case) for case in cases}
bad = 0
for case in cases:
    from_measure = estimate(case, "--measure")
    cpu, wall = children_cpu(), time.monotonic()
    subprocess.run([ftpipe, "-C", folder, case], check=True, stdout=subprocess.DEVNULL)
    cpu, wall = children_cpu() - cpu, time.monotonic() - wall
    for how, figure in (("past run", from_past[case]), ("--measure", from_measure)):
        error = (figure["value"] - cpu) / cpu if figure["known"] else float("inf")
        ok = abs(error) <= 0.20
        bad += not ok
        print("%-20s %-9s estimated %5.2f s, measured %5.2f s of CPU (%5.2f s wall), %+6.1f%% %s" % (
            case, how, figure["value"], cpu, wall, 100 * error, "ok" if ok else "OUTSIDE 20%"))
print("cases outside: %d" % bad)
PY
echo "$T_OUT" | sed 's/^/  /'
t_expect_status 0
t_expect_contains "cases outside: 0"
t_end
