#!/bin/sh
# The quickstart pipeline (examples/quickstart) end to end through `make quickstart`'s
# own recipe, on a copy and shortened to one epoch: every stage runs, the training
# loss falls, the accuracy line is the output's last; a second run does nothing and
# still ends with it; a new learning_rate reruns train, evaluate and export only.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
QUICKSTART="$ROOT/examples/quickstart"
W=$(t_workspace)
cp "$QUICKSTART/Ftpipe" "$QUICKSTART/make_addition_data.sh" "$W/"
# make's -o: the program under test is taken as it is, never rebuilt here.
make_quickstart() {
  t_run make -s --no-print-directory -C "$ROOT" -o "$FTPIPE" quickstart QUICKSTART="$W" QUICKSTART_FTPIPE="$FTPIPE" EPOCHS=1
}
expect_accuracy_last() {
  last=$(printf '%s\n' "$T_OUT" | tail -n 1)
  case "$last" in "accuracy "*" samples") ;; *) t_fail "the last line is not the accuracy line: $last; output:
$T_OUT" ;; esac
}

t_case "make quickstart runs it end to end: loss falls, model exported, accuracy printed last"
make_quickstart
t_expect_status 0
t_expect_contains "7 run, 0 restored, 0 up to date"
expect_accuracy_last
python3 - "$W/models/addition/trainer_log.jsonl" <<'PY' || t_fail "the training loss did not fall: $(cat "$W/models/addition/trainer_log.jsonl")"
import json, sys
losses = [json.loads(line)["loss"] for line in open(sys.argv[1])]
sys.exit(0 if len(losses) >= 2 and losses[-1] < 0.8 * losses[0] else 1)
PY
tar --zstd -tf "$W/export/addition.tar.zst" | grep -q 'model.safetensors' ||
  t_fail "the export lacks model.safetensors: $(tar --zstd -tf "$W/export/addition.tar.zst" 2>&1)"
t_end

t_case "a second make quickstart is a no-op that still ends with the accuracy line"
make_quickstart
t_expect_status 0
t_expect_contains "nothing to do (7 up to date)"
expect_accuracy_last
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
