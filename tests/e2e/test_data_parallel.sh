#!/bin/sh
# Data-parallel training on the cpu backend, ranks as processes on this host:
# 2 and 4 ranks log the losses of one rank with the same effective batch (within
# 1e-5 relative) and end with its adapter within what reordering the sums on one
# rank already changes; with global_batch_size the 1-, 2- and 4-rank runs share
# one key, without it the rank count enters the key; a rank killed with -9 stops
# the stage within seconds, naming it, and a rerun with another rank count
# resumes from the last checkpoint and finishes.
. "$(dirname "$0")/lib.sh"

# A workspace whose pipeline ends in `adapter: train` with these parameter lines (lib.sh).
dp_workspace() { t_train_workspace 44 "backend = cpu" "threads = 1" "learning_rate = 1e-2" "logging_steps = 1" "$@"; }
# Trains in a fresh workspace; prints its adapter folder.
trained() {
  dp_workspace "$@"
  "$FTPIPE" -C "$W" > "$W/out" 2>&1 || { t_fail "training with $* failed: $(cat "$W/out")"; }
  echo "$W/adapter"
}
# Compares two adapter folders: the losses of every step within 1e-5 relative,
# and the adapter's largest difference from the first no larger than BOUND's
# (a third folder) is from it.
compare() { # REFERENCE CANDIDATE BOUND
  python3 - "$@" <<'PY'
import json, struct, sys
def tensors(d):
    with open(d + "/adapter_model.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = struct.unpack("<%df" % ((b - a) // 4), data[a:b])
    return out
def losses(d):
    return [json.loads(l)["loss"] for l in open(d + "/trainer_log.jsonl")]
def max_diff(x, y):
    assert x.keys() == y.keys()
    return max(abs(p - q) for k in x for p, q in zip(x[k], y[k]))
reference, candidate, bound = sys.argv[1:4]
lr, lc = losses(reference), losses(candidate)
assert len(lr) == len(lc) and len(lr) > 0, (lr, lc)
for step, (a, b) in enumerate(zip(lr, lc), 1):
    assert abs(a - b) <= 1e-5 * abs(a), "step %d: loss %r against one rank's %r" % (step, b, a)
r = tensors(reference)
d, reordering = max_diff(r, tensors(candidate)), max_diff(r, tensors(bound))
assert d <= reordering, "the adapter differs by %g, one rank's reordering by %g" % (d, reordering)
PY
}

t_case "2 and 4 ranks match one rank with the same effective batch"
STEPS="max_steps = 8"    # 44 rows: 6 steps of 8 an epoch, the last of 4
one=$(trained "$STEPS" "per_device_train_batch_size = 8")
one_4x2=$(trained "$STEPS" "per_device_train_batch_size = 4" "gradient_accumulation_steps = 2")
one_2x4=$(trained "$STEPS" "per_device_train_batch_size = 2" "gradient_accumulation_steps = 4")
two=$(trained "$STEPS" "per_device_train_batch_size = 4" "nproc_per_node = 2")
four=$(trained "$STEPS" "per_device_train_batch_size = 2" "nproc_per_node = 4")
compare "$one" "$two" "$one_4x2" || t_fail "2 ranks x 4 against 1 rank x 8"
compare "$one" "$four" "$one_2x4" || t_fail "4 ranks x 2 against 1 rank x 8"
grep -q "steps of 4 x 1 rows x 2 ranks on the cpu backend" "$(dirname "$two")/out" 2>/dev/null ||
  "$FTPIPE" -C "$(dirname "$two")" log adapter | grep -q "steps of 4 x 1 rows x 2 ranks" ||
  t_fail "the log does not say 2 ranks"
t_end

t_case "global_batch_size: 1, 2 and 4 ranks share one key; without it the rank count enters the key"
dp_workspace "max_steps = 3" "per_device_train_batch_size = 2" "global_batch_size = 8" "nproc_per_node = 1"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "run      adapter (train)"
for n in 2 4; do
  sed -i "s/nproc_per_node = .*/nproc_per_node = $n/" "$W/Ftpipe"
  t_run "$FTPIPE" -C "$W"
  t_expect_status 0
  t_expect_lacks "run      adapter"
  t_expect_contains "nothing to do (4 up to date)"
done
sed -i "s/global_batch_size = 8/gradient_accumulation_steps = 1/" "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" adapter
t_expect_status 0
t_expect_contains "run      adapter (train)"
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "steps of 2 x 1 rows x 4 ranks"
sed -i "s/nproc_per_node = 4/nproc_per_node = 2/" "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" adapter
t_expect_contains "run      adapter (train)"
t_end

t_case "global_batch_size that the ranks do not divide is refused"
dp_workspace "max_steps = 3" "per_device_train_batch_size = 4" "global_batch_size = 8" "nproc_per_node = 4"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "global_batch_size = 8 is not a multiple of per_device_train_batch_size (4) x ranks (4) = 16"
t_end

t_case "kill -9 of one rank stops the stage within seconds naming it; a rerun on 4 ranks resumes"
dp_workspace "max_steps = 400" "save_steps = 10" "per_device_train_batch_size = 2" "global_batch_size = 8" \
  "nproc_per_node = 2"
"$FTPIPE" -C "$W" > "$W/first.out" 2>&1 &
pid=$!
waited=0
until ls -d "$W"/.ftpipe/work/*/checkpoints/checkpoint-10 >/dev/null 2>&1 || [ $waited -ge 1200 ]; do
  sleep 0.05; waited=$((waited + 1))
done
rank_pid=$(sed -n 's/^rank 1 of 2: pid \([0-9]*\) on .*/\1/p' "$W"/.ftpipe/work/*/rank-1.log)
killed_at=$(date +%s%N)
kill -9 "$rank_pid"
wait "$pid"
status=$?
seconds=$(( ($(date +%s%N) - killed_at) / 1000000000 ))
[ "$status" != 0 ] || t_fail "the run succeeded after its rank 1 was killed: $(cat "$W/first.out")"
[ "$seconds" -le 10 ] || t_fail "the stage took $seconds s to stop after rank 1 died"
[ -f "$W/adapter/adapter_model.safetensors" ] && t_fail "the run finished before its rank was killed"
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "rank 1 (pid $rank_pid on "
t_expect_contains "was killed by signal 9"
t_expect_contains "the last lines of its log"
t_expect_contains "every rank was stopped; run again to resume from the last checkpoint"
sed -i "s/nproc_per_node = 2/nproc_per_node = 4/" "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "resumed from checkpoint-"
t_expect_contains "steps of 2 x 1 rows x 4 ranks"
python3 -c "
import json, sys
steps = [json.loads(l)['step'] for l in open(sys.argv[1])]
assert steps == list(range(1, 401)), steps" "$W/adapter/trainer_log.jsonl" || t_fail "trainer_log.jsonl after a resume"
t_end

t_case "evaluate on 3 ranks gives one rank's report"
eval_workspace() { # NPROC
  dp_workspace "max_steps = 2" "per_device_train_batch_size = 4"
  cat >> "$W/Ftpipe" <<P

data/eval.json: shell make_addition_data.sh
	run = sh \$< eval 11 > \$@

report: evaluate models/tiny adapter data/eval.json
	checker = sum-equals
	max_new_tokens = 6
	batch_size = 2
	compare_base = true
	backend = cpu
	threads = 1
	nproc_per_node = $1
P
  "$FTPIPE" -C "$W" > "$W/out" 2>&1 || t_fail "evaluate on $1 ranks failed: $(cat "$W/out")"
}
eval_workspace 1
ONE=$W
eval_workspace 3
cmp -s "$ONE/report/results.jsonl" "$W/report/results.jsonl" ||
  t_fail "results.jsonl differs: $(diff "$ONE/report/results.jsonl" "$W/report/results.jsonl" | head -5)"
python3 - "$ONE/report/metrics.json" "$W/report/metrics.json" <<'PY' || t_fail "metrics differ"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def walk(x, y, path):
    if isinstance(x, dict):
        for k in x:
            if k.endswith("_s") or "per_s" in k or "bytes" in k:
                continue  # times and memory are this run's
            walk(x[k], y[k], path + "." + k)
    elif isinstance(x, list):
        assert len(x) == len(y), path
        for i, (p, q) in enumerate(zip(x, y)):
            walk(p, q, "%s[%d]" % (path, i))
    elif isinstance(x, float):
        assert abs(x - y) <= 1e-6 * max(1.0, abs(x)), (path, x, y)
    else:
        assert x == y, (path, x, y)
walk(a, b, "")
PY
t_run "$FTPIPE" -C "$W" log report
t_expect_contains "3 ranks share the 11 samples"
t_end

t_case "Ctrl-C stops every rank after the same step and keeps the work folder"
dp_workspace "max_steps = 400" "save_steps = 10" "per_device_train_batch_size = 2" "nproc_per_node = 3"
"$FTPIPE" -C "$W" > "$W/first.out" 2>&1 &
pid=$!
waited=0
until ls -d "$W"/.ftpipe/work/*/checkpoints/checkpoint-10 >/dev/null 2>&1 || [ $waited -ge 1200 ]; do
  sleep 0.05; waited=$((waited + 1))
done
ranks=$(sed -n 's/^rank [12] of 3: pid \([0-9]*\) on .*/\1/p' "$W"/.ftpipe/work/*/rank-*.log)
kill -INT "$pid"
wait "$pid"
status=$?
[ "$status" = 130 ] || t_fail "exit status $status after SIGINT, expected 130: $(cat "$W/first.out")"
for rank in $ranks; do
  kill -0 "$rank" 2>/dev/null && t_fail "rank pid $rank still runs after the stage stopped"
done
ls -d "$W"/.ftpipe/work/*/checkpoints/checkpoint-* >/dev/null 2>&1 || t_fail "the work folder's checkpoints are gone"
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "cancelled at step "
t_end
