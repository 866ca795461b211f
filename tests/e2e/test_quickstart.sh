#!/bin/sh
# The quickstart pipeline (examples/quickstart) end to end, shortened to one
# epoch: every stage runs, the training loss falls, accuracy is printed; a second
# run does nothing; a new learning_rate reruns train, evaluate and export only.
. "$(dirname "$0")/lib.sh"
QUICKSTART="$(cd "$(dirname "$0")/../../examples/quickstart" && pwd)"
W=$(t_workspace)
cp "$QUICKSTART/Ftpipe" "$QUICKSTART/make_addition_data.sh" "$W/"

t_case "the quickstart runs end to end: loss falls, accuracy printed, model exported"
t_run "$FTPIPE" -C "$W" EPOCHS=1
t_expect_status 0
t_expect_contains "7 run, 0 restored, 0 up to date"
t_expect_contains "accuracy "
python3 - "$W/models/addition/trainer_log.jsonl" <<'PY' || t_fail "the training loss did not fall: $(cat "$W/models/addition/trainer_log.jsonl")"
import json, sys
losses = [json.loads(line)["loss"] for line in open(sys.argv[1])]
sys.exit(0 if len(losses) >= 2 and losses[-1] < 0.8 * losses[0] else 1)
PY
tar --zstd -tf "$W/export/addition.tar.zst" | grep -q 'model.safetensors' ||
  t_fail "the export lacks model.safetensors: $(tar --zstd -tf "$W/export/addition.tar.zst" 2>&1)"
t_end

t_case "a second run is a no-op"
t_run "$FTPIPE" -C "$W" EPOCHS=1
t_expect_status 0
t_expect_contains "nothing to do (7 up to date)"
t_end

t_case "a new learning_rate reruns train, evaluate and export only"
t_run "$FTPIPE" -C "$W" -n EPOCHS=1 LEARNING_RATE=1e-3
t_expect_status 0
t_expect_contains "models/addition"
t_expect_contains "learning_rate"
t_run "$FTPIPE" -C "$W" EPOCHS=1 LEARNING_RATE=1e-3
t_expect_status 0
t_expect_contains "3 run, 0 restored, 4 up to date"
for target in models/addition report export/addition.tar.zst; do
  t_expect_contains "done     $target"
done
for target in models/tiny data/train.json data/eval.json data/train_set; do
  t_expect_lacks "run      $target "
done
t_end
