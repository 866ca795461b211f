#!/bin/sh
# Progress of a long stage where output is not a terminal: with
# FTPIPE_PROGRESS_INTERVAL=0 every status becomes a plain line (step/total,
# tokens/s, loss, ETA); with the default interval a short run prints none.
. "$(dirname "$0")/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"

W=$(t_workspace)
cp "$ROOT/examples/quickstart/make_addition_data.sh" "$W/"
cat > "$W/Ftpipe" <<'P'
models/tiny: init
	dtype = f32
	threads = 1

data/train.json: shell make_addition_data.sh
	run = sh $< train 64 > $@

data/train_set: tokenize models/tiny data/train.json
	template = plain
	cutoff_len = 40

adapter: train models/tiny data/train_set
	max_steps = 30
	per_device_train_batch_size = 4
	logging_steps = 5
	threads = 1
P

t_case "a plain progress line shows step/total, tokens/s, loss and ETA"
t_run env FTPIPE_PROGRESS_INTERVAL=0 "$FTPIPE" -C "$W" adapter
t_expect_status 0
echo "$T_OUT" | grep -E '^ +adapter +[0-9]+%  step [0-9]+/30, [0-9]+ tokens/s, loss [0-9.]+, ETA [0-9]+s$' >/dev/null ||
  t_fail "no progress line of the expected form; output:
$T_OUT"
t_end

t_case "with the default interval a short run prints no progress lines"
sed -i 's/max_steps = 30/max_steps = 31/' "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" adapter
t_expect_status 0
t_expect_lacks "tokens/s, loss"
t_end
