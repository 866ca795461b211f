#!/bin/sh
# ftpipe estimate for tokenize, evaluate and export, against what their runs
# make: tokenize's output size (from a sample of the conversations encoded) and
# its time from a past run's rate; evaluate's memory (the model's plan and the KV
# cache, against the backend's measured peak) and its time from a past run;
# export's disk for a peft folder, a merged model, a full fine-tune in bf16 and an
# archive. Sizes and memory must be within 10 %; a case outside fails.
. "$(dirname "$0")/lib.sh"

W=$(t_workspace)
python3 - "$W" <<'PY'
import json, random, sys
random.seed(7)
folder = sys.argv[1]
rows = [{"instruction": "say %d things" % i, "input": "",
         "output": " ".join(str(random.randint(0, 99999)) for _ in range(random.randint(1, 90)))} for i in range(1500)]
json.dump(rows, open(folder + "/big.json", "w"))
texts = [{"text": " ".join(str(random.randint(0, 999)) for _ in range(random.randint(5, 120)))} for i in range(600)]
json.dump(texts, open(folder + "/texts.json", "w"))
json.dump(rows[:40], open(folder + "/small.json", "w"))
evals = [{"instruction": "what is %d plus %d?" % (i, i + 1), "input": "", "output": str(2 * i + 1)} for i in range(24)]
json.dump(evals, open(folder + "/eval.json", "w"))
PY
cat > "$W/Ftpipe" <<'P'
models/m: init
	vocab_size = 2048
	hidden_size = 64
	num_hidden_layers = 2
	intermediate_size = 176
	num_attention_heads = 2
	num_key_value_heads = 1
	dtype = f32

data/small: tokenize models/m small.json
	template = plain
	cutoff_len = 96

data/big: tokenize models/m big.json
	template = plain
	cutoff_len = 128

data/big_packed: tokenize models/m big.json
	template = plain
	cutoff_len = 128
	packing = true
	val_size = 0.1

data/texts: tokenize models/m texts.json
	template = plain
	stage = pt
	cutoff_len = 64

adapter: train models/m data/small
	max_steps = 2
	backend = cpu

full: train models/m data/small
	finetuning_type = full
	max_steps = 2
	backend = cpu

eval_base: evaluate models/m eval.json
	template = plain
	checker = exact
	max_new_tokens = 12
	batch_size = 8
	backend = cpu

eval_adapter: evaluate models/m adapter eval.json
	template = plain
	checker = exact
	max_new_tokens = 20
	batch_size = 16
	backend = cpu
	compare_base = true

eval_streamed: evaluate models/m adapter eval.json
	template = plain
	checker = exact
	max_new_tokens = 20
	batch_size = 16
	backend = cpu
	offload_param = cpu

eval_one_rank: evaluate models/m eval.json
	template = plain
	checker = exact
	max_new_tokens = 13
	batch_size = 8
	backend = cpu

eval_two_ranks: evaluate models/m eval.json
	template = plain
	checker = exact
	max_new_tokens = 13
	batch_size = 8
	backend = cpu
	nproc_per_node = 2

export/peft: export adapter

export/merged: export adapter models/m
	format = merged

export/full_bf16: export full
	format = merged
	dtype = bf16

export/peft.tar.zst: export adapter
	archive = tar.zst
P

# TARGET KIND FIGURE [upper]: the estimate before the run against the run's result
compare() {
  python3 - "$W" "$@" <<'PY'
import json, os, sqlite3, sys
folder, figure_name, targets = sys.argv[1], sys.argv[2], sys.argv[3:]
estimates = {s["target"]: s for s in json.load(open(folder + "/estimate.json"))["stages"]}
db = sqlite3.connect(folder + "/.ftpipe/state.db")
def size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
bad = 0
for target in targets:
    figure = estimates[target][figure_name]
    if figure_name == "disk_bytes":
        measured = size(os.path.join(folder, target))
    else:
        run = db.execute("SELECT id FROM runs WHERE target = ? ORDER BY id DESC LIMIT 1", (target,)).fetchone()[0]
        measured = db.execute("SELECT max(value) FROM metrics WHERE run_id = ? AND name IN ('peak_bytes', "
                              "'base_peak_bytes')", (run,)).fetchone()[0]
    error = (figure["value"] - measured) / measured
    ok = figure["known"] and abs(error) <= 0.10
    bad += not ok
    print("%-22s estimated %9.0f, measured %9.0f bytes, %+5.1f%% %s (%s)" % (
        target, figure["value"], measured, 100 * error, "ok" if ok else "OUTSIDE 10%", figure["source"]))
print("cases outside: %d" % bad)
PY
}

t_case "tokenize: output size from a sample of the data, within 10% (plain, packed with a validation split, pt)"
t_run "$FTPIPE" -C "$W" models/m
t_expect_status 0
"$FTPIPE" -C "$W" estimate --json data/big data/big_packed data/texts > "$W/estimate.json" || t_fail "estimate failed"
t_run "$FTPIPE" -C "$W" data/big data/big_packed data/texts
t_expect_status 0
t_run compare disk_bytes data/big data/big_packed data/texts
echo "$T_OUT" | sed 's/^/  /'
t_expect_contains "(the mean of 256 encoded, cut to cutoff_len 128)"
t_expect_contains "blocks of cutoff_len 64"
t_expect_contains "cases outside: 0"
t_end

t_case "tokenize: time from the rate a past tokenize run left"
t_run "$FTPIPE" -C "$W" estimate data/small
t_expect_status 0
t_expect_contains "time   on cpu: tokenizing and writing"
t_expect_contains "tokens/s, logged by run"
t_end

t_case "evaluate: memory from the model's plan and the KV cache, within 10% of the measured peak (weights streamed too)"
t_run "$FTPIPE" -C "$W" adapter full data/small
t_expect_status 0
"$FTPIPE" -C "$W" estimate --json eval_base eval_adapter eval_streamed > "$W/estimate.json" || t_fail "estimate failed"
t_run "$FTPIPE" -C "$W" eval_base eval_adapter eval_streamed
t_expect_status 0
t_run compare host_bytes eval_base eval_adapter eval_streamed
echo "$T_OUT" | sed 's/^/  /'
t_expect_contains "KV cache"
t_expect_contains "cases outside: 0"
t_end

t_case "evaluate over 2 ranks of a machine counts the host memory of each: twice one rank's"
t_run "$FTPIPE" -C "$W" estimate --json eval_one_rank eval_two_ranks
t_expect_status 0
echo "$T_OUT" | python3 -c '
import json, sys
stages = {s["target"]: s["host_bytes"] for s in json.load(sys.stdin)["stages"]}
one, two = stages["eval_one_rank"], stages["eval_two_ranks"]
print("  one rank %.0f bytes, two %.0f: %s" % (one["value"], two["value"], two["source"]))
sys.exit(not (two["value"] == 2 * one["value"] and "x 2 ranks on the machine" in two["source"]))' ||
  t_fail "two ranks are not counted twice"
t_end

t_case "evaluate: time from the rate a past evaluate run left"
cat >> "$W/Ftpipe" <<'P'

eval_again: evaluate models/m full eval.json
	template = plain
	checker = exact
	max_new_tokens = 4
	backend = cpu
P
t_run "$FTPIPE" -C "$W" estimate eval_again
t_expect_status 0
t_expect_contains "time   on cpu: prompts, answers and the loss pass"
t_expect_contains "ops/s, logged by run"
t_end

t_case "export: disk for a peft folder, a merged model and a full fine-tune in bf16, within 10%"
"$FTPIPE" -C "$W" estimate --json export/peft export/merged export/full_bf16 > "$W/estimate.json" ||
  t_fail "estimate failed"
t_run "$FTPIPE" -C "$W" export/peft export/merged export/full_bf16
t_expect_status 0
t_run compare disk_bytes export/peft export/merged export/full_bf16
echo "$T_OUT" | sed 's/^/  /'
t_expect_contains "in bf16 and its other files"
t_expect_contains "cases outside: 0"
t_end

t_case "export: an archive is counted with the folder it is made from, at most their size"
t_run "$FTPIPE" -C "$W" estimate --json export/peft.tar.zst
t_expect_status 0
t_expect_contains "and the archive of them, at most as large"
estimated=$(echo "$T_OUT" | python3 -c "import json,sys; print(int(json.load(sys.stdin)['stages'][0]['disk_bytes']['value']))")
t_run "$FTPIPE" -C "$W" export/peft.tar.zst
t_expect_status 0
[ "$(stat -c %s "$W/export/peft.tar.zst")" -le "$estimated" ] || t_fail "the archive is larger than the estimate"
t_end

t_case "a kind's figures wait for inputs that are not built"
T=$(t_workspace)
cp "$W/Ftpipe" "$W/small.json" "$W/eval.json" "$T/"
t_run "$FTPIPE" -C "$T" estimate data/small eval_base export/peft
t_expect_status 0
t_expect_contains "needs $T/models/m, which is not built yet"
t_expect_contains "needs $T/adapter, which is not built yet"
t_end

t_case "what a run would refuse leaves the figure unknown, and the run says it with its own message"
printf '[{"instruction": 5}]' > "$W/bad.json"
cat >> "$W/Ftpipe" <<'P'

data/bad: tokenize models/m bad.json
	template = plain
P
t_run "$FTPIPE" -C "$W" estimate data/bad
t_expect_status 0
t_expect_contains "disk   cannot estimate:"
t_run "$FTPIPE" -C "$W" data/bad
t_expect_status 1
t_expect_contains "run      data/bad"
t_expect_lacks "estimating data/bad"
t_end
