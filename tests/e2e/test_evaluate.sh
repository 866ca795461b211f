#!/bin/sh
# The evaluate kind through pipelines, on a tiny random model and 20 samples of
# the quickstart's addition data: its output files, accuracy as the checker
# judges, a LoRA train output against its base, a fully fine-tuned one, seeded
# sampling, the weights streamed from host memory (offload_param) with the
# same answers and loss, the GPU-memory check's suggestions, and the errors
# users can make. Train outputs are built by
# train_output_fixture.py (a LoRA adapter with random A and B, or a copy of a
# second init model as the "fine-tuned" one), so that no training runs here.
. "$(dirname "$0")/lib.sh"
HERE="$(cd "$(dirname "$0")" && pwd)"
QUICKSTART="$HERE/../../examples/quickstart"

# The workspace: models/tiny and models/other (another seed), data/eval.json,
# and the train outputs lora/ and full/ (of other's weights) on tiny's tokenizer.
W=$(t_workspace)
cp "$QUICKSTART/make_addition_data.sh" "$W/"
model_stage() { # TARGET SEED
  printf '%s: init\n\tnum_hidden_layers = 2\n\thidden_size = 64\n\tintermediate_size = 128\n' "$1"
  printf '\tnum_attention_heads = 4\n\tnum_key_value_heads = 2\n\tdtype = f32\n\tseed = %s\n\n' "$2"
}
{
  model_stage models/tiny 42
  model_stage models/other 7
  printf 'data/eval.json: shell make_addition_data.sh\n\trun = sh $< eval 20 > $@\n\n'
} > "$W/base.ft"
cp "$W/base.ft" "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
[ "$T_STATUS" = 0 ] || { echo "not ok setting up the workspace: $T_OUT"; exit 1; }
# A model folder's tokenizer identity as include/ftpipe/text/tokenizer.h defines it:
# the hash of "tokenizer.json HEX\nbos_token BOS\neos_token EOS\n" ("no bos_token",
# "no eos_token" without them).
tokenizer_identity() {
  json=$("$FTPIPE" hash "$1/tokenizer.json" | cut -d' ' -f1)
  python3 - "$1/tokenizer_config.json" "$json" > "$T_ROOT/identity.txt" <<'PY'
import json, os, sys
path, json_hash = sys.argv[1:3]
config = json.load(open(path)) if os.path.exists(path) else {}
def token(name):
    value = config.get(name)
    value = value.get("content") if isinstance(value, dict) else value
    return "%s %s\n" % (name, value) if value is not None else "no %s\n" % name
sys.stdout.write("tokenizer.json %s\n" % json_hash + token("bos_token") + token("eos_token"))
PY
  "$FTPIPE" hash "$T_ROOT/identity.txt" | cut -d' ' -f1
}
HASH=$(tokenizer_identity "$W/models/tiny")
python3 "$HERE/train_output_fixture.py" lora "$W/models/tiny" "$W/lora" plain "$HASH"
python3 "$HERE/train_output_fixture.py" full "$W/models/other" "$W/full" plain "$HASH"

# Replaces the pipeline's evaluate stages: TARGET INPUTS PARAMETER-LINES..., then
# more stages after a "--".
write_stages() {
  cp "$W/base.ft" "$W/Ftpipe"
  while [ $# -gt 0 ]; do
    printf '%s: evaluate %s\n\tmax_new_tokens = 6\n' "$1" "$2" >> "$W/Ftpipe"
    shift 2
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do printf '\t%s\n' "$1" >> "$W/Ftpipe"; shift; done
    [ $# -gt 0 ] && shift
    echo >> "$W/Ftpipe"
  done
}
# Prints a metric of TARGET/metrics.json.
metric() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$W/$1/metrics.json" "$2"; }
# Fails unless python3 expression EXPR holds of the results (a list of dicts) and the metrics.
expect_results() { # TARGET EXPR
  python3 - "$W/$1" "$2" <<'PY' || t_fail "$1: $2 does not hold: $(head -c 600 "$W/$1/results.jsonl")"
import json, sys
folder, expression = sys.argv[1], sys.argv[2]
results = [json.loads(line) for line in open(folder + "/results.jsonl")]
metrics = json.load(open(folder + "/metrics.json"))
data = json.load(open(folder + "/../data/eval.json"))
sys.exit(0 if eval(expression) else 1)
PY
}

t_case "a LoRA train output against its base model: both reported, well-formed files"
write_stages report "models/tiny lora data/eval.json" "compare_base = true" -- \
  base_only "models/tiny data/eval.json" "template = plain"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "done     report in "
t_expect_contains ": accuracy 0.0000 (base 0.0000), eval_loss "
t_expect_contains ": accuracy 0.0000, eval_loss "
for f in results.jsonl metrics.json report.md; do [ -f "$W/report/$f" ] || t_fail "report/$f is missing"; done
expect_results report 'len(results) == 20 and [r["index"] for r in results] == list(range(20))'
expect_results report 'all(set(r) == {"index", "prompt", "expected", "answer", "correct", "base_answer", "base_correct"} for r in results)'
expect_results report '[r["prompt"] for r in results] == [d["instruction"] for d in data]'
expect_results report '[r["expected"] for r in results] == [d["output"] for d in data]'
expect_results report 'metrics["samples"] == 20 and metrics["base_samples"] == 20 and metrics["generated_tokens"] > 0'
expect_results report 'all(metrics[p + k] > 0 for p in ("", "base_") for k in ("eval_loss", "perplexity", "tokens_per_s", "total_s", "peak_bytes", "load_peak_bytes"))'
expect_results report 'abs(metrics["perplexity"] - 2.718281828459045 ** metrics["eval_loss"]) < 1e-6 * metrics["perplexity"]'
# The base row is the model alone, and the adapter changes it.
[ "$(metric report base_eval_loss)" = "$(metric base_only eval_loss)" ] ||
  t_fail "base_eval_loss $(metric report base_eval_loss) differs from the base model's $(metric base_only eval_loss)"
[ "$(metric report eval_loss)" != "$(metric report base_eval_loss)" ] || t_fail "the adapter changed nothing"
expect_results report '[r["base_answer"] for r in results] == [json.loads(l)["answer"] for l in open(folder + "/../base_only/results.jsonl")]'
grep -q '^| model | accuracy | eval loss | perplexity | tokens/s | time | peak memory |$' "$W/report/report.md" ||
  t_fail "report.md lacks the table: $(cat "$W/report/report.md")"
grep -q '^| lora | 0.0000 (0/20) | ' "$W/report/report.md" || t_fail "report.md lacks the lora row"
grep -q '^| tiny | 0.0000 (0/20) | ' "$W/report/report.md" || t_fail "report.md lacks the base row"
grep -q '^### Example 1$' "$W/report/report.md" || t_fail "report.md lacks examples"
t_run "$FTPIPE" -C "$W" log report
t_expect_contains "| lora | 0.0000 (0/20) | "
t_expect_contains "| tiny | 0.0000 (0/20) | "
t_end

t_case "a model with more embedding rows than its tokenizer has tokens: ids it lacks are left out"
W3=$(t_workspace)
cp "$QUICKSTART/make_addition_data.sh" "$W3/"
cat > "$W3/Ftpipe" <<'P'
models/wide: init
	num_hidden_layers = 1
	hidden_size = 64
	intermediate_size = 128
	num_attention_heads = 4
	num_key_value_heads = 2
	vocab_size = 4000
	dtype = f32

data/eval.json: shell make_addition_data.sh
	run = sh $< eval 4 > $@

report: evaluate models/wide data/eval.json
	template = plain
	max_new_tokens = 8
P
t_run "$FTPIPE" -C "$W3"
t_expect_status 0
[ -s "$W3/report/results.jsonl" ] || t_fail "no results.jsonl"
t_end

t_case "accuracy counts the checker's verdicts, sample by sample"
write_stages all "models/tiny data/eval.json" "template = plain" "checker = shell" "command = true" -- \
  some "models/tiny data/eval.json" "template = plain" "checker = shell" \
  'command = case "$$FTPIPE_PROMPT" in 1*) exit 0 ;; *) exit 1 ;; esac' -- \
  none "models/tiny data/eval.json" "template = plain" "checker = contains" "max_samples = 5"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains ": accuracy 1.0000, eval_loss "
expect_results all 'metrics["accuracy"] == 1.0 and metrics["correct"] == 20 and all(r["correct"] for r in results)'
expect_results some '[r["correct"] for r in results] == [d["instruction"].startswith("1") for d in data]'
expect_results some 'metrics["correct"] == sum(d["instruction"].startswith("1") for d in data)'
expect_results some '0 < metrics["accuracy"] < 1 and metrics["accuracy"] == metrics["correct"] / 20'
expect_results none 'len(results) == 5 and metrics["accuracy"] == 0.0 and metrics["samples"] == 5'
t_end

t_case "a fully fine-tuned train output is evaluated as its own weights"
write_stages full_report "models/tiny full data/eval.json" "compare_base = true" -- \
  other_only "models/other data/eval.json" "template = plain"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
[ "$(metric full_report eval_loss)" = "$(metric other_only eval_loss)" ] ||
  t_fail "eval_loss $(metric full_report eval_loss) is not the fine-tuned weights' $(metric other_only eval_loss)"
[ "$(metric full_report eval_loss)" != "$(metric full_report base_eval_loss)" ] || t_fail "base and full agree"
grep -q '^| full | ' "$W/full_report/report.md" || t_fail "report.md lacks the full row"
t_end

t_case "sampling with the same seed gives the same answers; another seed others"
write_stages sampled "models/tiny lora data/eval.json" "temperature = 1.0" "top_p = 0.9" "seed = 5" -- \
  reseeded "models/tiny lora data/eval.json" "temperature = 1.0" "top_p = 0.9" "seed = 6"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
cmp -s "$W/sampled/results.jsonl" "$W/reseeded/results.jsonl" && t_fail "seeds 5 and 6 gave the same answers"
# The same stage in a fresh workspace, so that nothing comes from the cache.
W2=$(t_workspace)
mkdir "$W2/models" "$W2/data"
cp -r "$W/models/tiny" "$W2/models/" && cp -r "$W/lora" "$W2/" && cp "$W/data/eval.json" "$W2/data/"
chmod -R u+w "$W2"
sed -n '/^sampled:/,/^$/p' "$W/Ftpipe" > "$W2/Ftpipe"
t_run "$FTPIPE" -C "$W2"
t_expect_contains "done     sampled"
cmp -s "$W/sampled/results.jsonl" "$W2/sampled/results.jsonl" || t_fail "a second run with seed 5 differs"
t_end

t_case "offload_param = cpu streams the weights from host memory: the same answers and loss"
# A fresh workspace, so that nothing comes from the cache (offload_param is not in the key).
W4=$(t_workspace)
mkdir "$W4/models" "$W4/data"
cp -r "$W/models/tiny" "$W4/models/" && cp -r "$W/lora" "$W/full" "$W4/" && cp "$W/data/eval.json" "$W4/data/"
chmod -R u+w "$W4"
stage() { # TARGET INPUTS PARAMETER-LINES...: one evaluate stage streaming its weights
  printf '%s: evaluate %s\n\tmax_new_tokens = 6\n\toffload_param = cpu\n' "$1" "$2"
  shift 2
  for line in "$@"; do printf '\t%s\n' "$line"; done
  echo
}
{
  stage report "models/tiny lora data/eval.json" "compare_base = true"
  stage full_report "models/tiny full data/eval.json" "compare_base = true"
  stage sampled "models/tiny lora data/eval.json" "temperature = 1.0" "top_p = 0.9" "seed = 5"
  stage ranked "models/tiny lora data/eval.json" "max_samples = 10" "nproc_per_node = 2"
} > "$W4/Ftpipe"
t_run "$FTPIPE" -C "$W4"
t_expect_status 0
for target in report full_report sampled; do
  cmp -s "$W/$target/results.jsonl" "$W4/$target/results.jsonl" ||
    t_fail "$target: streamed answers differ: $(head -c 300 "$W4/$target/results.jsonl")"
done
for key in eval_loss base_eval_loss; do
  for target in report full_report; do
    [ "$(metric "$target" $key)" = "$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
      "$W4/$target/metrics.json" $key)" ] || t_fail "$target: streamed $key differs"
  done
done
head -n 10 "$W/report/results.jsonl" | python3 -c '
import json, sys
whole = [json.loads(line)["answer"] for line in sys.stdin]
ranked = [json.loads(line)["answer"] for line in open(sys.argv[1])]
sys.exit(whole != ranked)' "$W4/ranked/results.jsonl" || t_fail "two streaming ranks answer otherwise"
t_run "$FTPIPE" -C "$W4" log report
t_expect_contains "offload_param: the weights stay in host memory; generating gathered "
# Each layer starts the next one's gather: all but the embeddings (and a tied head) are gathered ahead.
counts=$(printf '%s\n' "$T_OUT" | sed -n 's/.* generating gathered \([0-9]*\) units .*, \([0-9]*\) of them ahead.*/\1 \2/p')
set -- $counts
[ $# -ge 2 ] && [ "$2" -gt 0 ] && [ $(($2 * 2)) -gt "$1" ] || t_fail "too few gathers ahead of their use: $T_OUT"
t_end

# On a GPU the budget is the GPU's free memory (NVML; FTPIPE_GPU_MEMORY here,
# where CI has no GPU): a model of eight layers whose weights outweigh two of
# them, checked before any stage starts.
t_case "on a GPU, an evaluation that does not fit names a smaller batch, then offload_param, with their figures"
W5=$(t_workspace)
cp "$QUICKSTART/make_addition_data.sh" "$W5/"
cat > "$W5/Ftpipe" <<'P'
models/deep: init
	num_hidden_layers = 8
	hidden_size = 256
	intermediate_size = 1024
	num_attention_heads = 4
	num_key_value_heads = 2
	dtype = f32

data/eval.json: shell make_addition_data.sh
	run = sh $< eval 20 > $@

report: evaluate models/deep data/eval.json
	template = plain
	max_new_tokens = 6
	backend = cuda
P
t_run "$FTPIPE" -C "$W5" models/deep data/eval.json
t_expect_status 0
t_run "$FTPIPE" -C "$W5" estimate report
t_expect_contains "device model plan 23.6 MiB for 20 x 39 tokens and KV cache 720.0 KiB for 20 x 9 tokens, with the cuda backend's scratch"
t_run env FTPIPE_GPU_MEMORY=50M "$FTPIPE" -C "$W5" report
t_expect_fail
t_expect_contains "stage report would need 58.1 MiB of GPU memory a GPU"
t_expect_contains "but 50.0 MiB is free on the GPU: set batch_size = 2 (needs 48.5 MiB of the 50.0 MiB free on the GPU)"
t_run env FTPIPE_GPU_MEMORY=45M "$FTPIPE" -C "$W5" report
t_expect_fail
t_expect_contains "but 45.0 MiB is free on the GPU: set batch_size = 10 and offload_param = cpu: the weights stay in host memory, a layer's uploaded as it is used (needs 41.4 MiB of the 45.0 MiB free on the GPU, and 15.1 MiB of host memory)"
t_run env FTPIPE_GPU_MEMORY=30M "$FTPIPE" -C "$W5" report
t_expect_fail
t_expect_contains "but 30.0 MiB is free on the GPU: nothing fits, not even batch_size = 1 with offload_param = cpu"
printf '\toffload_param = cpu\n\tbatch_size = 10\n' >> "$W5/Ftpipe"
t_run "$FTPIPE" -C "$W5" estimate report
t_expect_contains "(two units of the weights gathered at once)"
t_expect_contains "host   the weights in page-locked host memory (offload_param = cpu), 15.1 MiB, beside the program"
t_run env FTPIPE_GPU_MEMORY=45M "$FTPIPE" -C "$W5" report # let through, to a backend that finds no GPU here
t_expect_lacks "would need"
t_end

t_case "greedy answers and the loss do not depend on the batch size"
write_stages one "models/tiny lora data/eval.json" "batch_size = 1" -- \
  seven "models/tiny lora data/eval.json" "batch_size = 7"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
cmp -s "$W/one/results.jsonl" "$W/seven/results.jsonl" || t_fail "answers differ between batch sizes 1 and 7"
python3 -c 'import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) > 1e-5 * a)' \
  "$(metric one eval_loss)" "$(metric seven eval_loss)" || t_fail "eval_loss differs between batch sizes"
t_end

t_case "sharegpt JSONL with the qwen template; max_samples"
python3 -c '
import json, sys
for record in json.load(open(sys.argv[1])):
    print(json.dumps({"messages": [{"role": "user", "content": record["instruction"]},
                                   {"role": "assistant", "content": record["output"]}]}))' "$W/data/eval.json" > "$W/chat.jsonl"
write_stages chat "models/tiny chat.jsonl" "template = qwen" "format = sharegpt" "max_samples = 4" "checker = sum-equals"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains ": accuracy 0.0000, eval_loss "
expect_results chat '[r["prompt"] for r in results] == [d["instruction"] for d in data[:4]]'
expect_results chat 'metrics["samples"] == 4 and metrics["loss_tokens"] > 0'
t_run "$FTPIPE" -C "$W" log chat
t_expect_contains "4 samples (0 cut at cutoff_len), longest prompt "
t_expect_contains "template qwen"
t_end

t_case "after the train stage: the adapter answers in the data's form, its base does not"
cp "$W/base.ft" "$W/Ftpipe"
cat >> "$W/Ftpipe" <<'P'
data/train.json: shell make_addition_data.sh
	run = sh $< train 200 > $@

data/train_set: tokenize models/tiny data/train.json
	template = plain
	cutoff_len = 64

adapter: train models/tiny data/train_set
	learning_rate = 1e-2
	max_steps = 20
	per_device_train_batch_size = 8

trained: evaluate models/tiny adapter data/eval.json
	max_new_tokens = 16
	compare_base = true
	checker = regex
	pattern = ^王大丫丫
P
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains ": accuracy 1.0000 (base 0.0000), eval_loss "
expect_results trained 'metrics["eval_loss"] < metrics["base_eval_loss"] - 0.5'
expect_results trained 'all(r["answer"].startswith("王大丫丫") and not r["base_answer"].startswith("王") for r in results)'
t_end

HASHLESS="$W/lora_other_tokenizer"
python3 "$HERE/train_output_fixture.py" lora "$W/models/tiny" "$HASHLESS" plain 0123456789abcdef0123456789abcdef

# Each: NAME INPUTS MESSAGE PARAMETER-LINES...
error_case() {
  t_case "refused: $1"
  inputs=$2 message=$3
  shift 3
  write_stages bad "$inputs" "$@"
  t_run "$FTPIPE" -C "$W" bad
  t_expect_fail
  t_expect_contains "$message"
  [ -e "$W/bad" ] && t_fail "an output was published"
  t_end
}
error_case "no template without a train output" "models/tiny data/eval.json" \
  "evaluate needs template = NAME, the chat template the model answers in (qwen, qwen3, qwen3_nothink, qwen2_vl, llava, llama3, alpaca, default, empty, plain)"
error_case "an unknown template" "models/tiny data/eval.json" "unknown chat template" "template = chatgpt"
error_case "a train output first" "lora data/eval.json" \
  "evaluate's first input $W/lora is a train output: give the base model folder first" "template = plain"
error_case "a second input that is not a train output" "models/tiny models/other data/eval.json" \
  "evaluate's second input $W/models/other is not a train output (it has no ftpipe_train.json)" "template = plain"
error_case "a train output as the data" "models/tiny lora" \
  "evaluate's last input $W/lora is a train output, not eval data" "template = plain"
error_case "a data file as the model" "data/eval.json lora data/eval.json" \
  "evaluate's first input $W/data/eval.json is not a model folder (it has no config.json)"
error_case "one input" "models/tiny" \
  "evaluate takes a model folder, optionally a train output, and eval data (\`bad: evaluate MODEL [TRAIN_OUTPUT] DATA\`); 1 input given"
error_case "a train output of another tokenizer" "models/tiny lora_other_tokenizer data/eval.json" \
  "is not the one $HASHLESS was trained with (hash 0123456789abcdef0123456789abcdef)"
error_case "a bad regex" "models/tiny lora data/eval.json" \
  "pattern = (: checker regex '(': missing closing parenthesis" "checker = regex" "pattern = ("
error_case "a pattern without checker = regex" "models/tiny lora data/eval.json" \
  "pattern = x is for checker = regex (checker is exact)" "pattern = x"
error_case "the shell checker without a command" "models/tiny lora data/eval.json" \
  "the shell checker needs a command (command = ...)" "checker = shell"
error_case "compare_base without a train output" "models/tiny data/eval.json" \
  "compare_base = true compares a train output with its base model, but bad has none" "template = plain" \
  "compare_base = true"
error_case "top_p out of range" "models/tiny lora data/eval.json" \
  "top_p = 0: expected a probability above 0, up to 1" "top_p = 0"
