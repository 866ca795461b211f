#!/bin/sh
# evaluate on the cuda backend with offload_param = cpu: the weights stay in
# page-locked host memory and each unit is uploaded on the side stream as
# generation and the loss pass use it. A LoRA adapter trained briefly and its
# base model (compare_base) give the same answers, bit for bit, and the same
# eval_loss as with the weights on the GPU, in less GPU memory; the estimate's
# device figure beside the measured peak, and both runs' times, are printed as
# "#" lines. Run on a GPU machine by tests/gpu/run.sh, with build/ftpipe.
. "$(dirname "$0")/gpu_lib.sh"

if ! nvidia-smi >/dev/null 2>&1; then
  echo "ok evaluate streaming its weights on the GPU # SKIP no GPU here"
  exit 0
fi

t_case "evaluate with offload_param = cpu on cuda: the same answers and loss as the weights on the GPU, in less memory"
W=$(tiny_addition_workspace 400 64)
sed -i 's/^	num_hidden_layers = 2$/	num_hidden_layers = 8/' "$W/Ftpipe"
cat >> "$W/Ftpipe" <<'P'
data/eval.json: shell make_addition_data.sh
	run = sh $< eval 64 > $@

adapter: train models/tiny data/train_set
	backend = cuda
	gpus = 1
	learning_rate = 1e-3
	max_steps = 30

P
for variant in whole streamed; do
  printf '%s: evaluate models/tiny adapter data/eval.json\n\tbackend = cuda\n\tgpus = 1\n' "$variant" >> "$W/Ftpipe"
  printf '\tmax_new_tokens = 8\n\tbatch_size = 16\n\tcompare_base = true\n' >> "$W/Ftpipe"
  [ "$variant" = streamed ] && printf '\toffload_param = cpu\n\tseed = 43\n' >> "$W/Ftpipe" # seed: another key
  echo >> "$W/Ftpipe"
done
t_run "$FTPIPE" -C "$W" adapter data/eval.json # what the estimate reads
t_expect_status 0
t_run "$FTPIPE" -C "$W" estimate streamed
echo "$T_OUT" | grep -E '^streamed|^    device' | sed 's/^/# /'
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_run "$FTPIPE" -C "$W" log streamed
t_expect_contains "offload_param: the weights stay in host memory; generating gathered "
echo "$T_OUT" | grep "generating gathered" | sed 's/^/# /'
python3 - "$W" <<'PY' || t_fail "the streamed evaluation differs: $(head -c 400 "$W/streamed/results.jsonl")"
import json, sys
w = sys.argv[1]
def read(name):
    return ([json.loads(line) for line in open("%s/%s/results.jsonl" % (w, name))],
            json.load(open("%s/%s/metrics.json" % (w, name))))
whole, whole_metrics = read("whole")
streamed, streamed_metrics = read("streamed")
for key in ("peak_bytes", "total_s", "eval_loss"):
    print("# %s: whole %s, streamed %s" % (key, whole_metrics[key], streamed_metrics[key]))
same = [(r["answer"], r["base_answer"]) for r in whole] == [(r["answer"], r["base_answer"]) for r in streamed]
losses = all(whole_metrics[k] == streamed_metrics[k] for k in ("eval_loss", "base_eval_loss"))
sys.exit(0 if same and losses and streamed_metrics["peak_bytes"] < whole_metrics["peak_bytes"] else 1)
PY
t_end
