#!/bin/sh
# Progress of a long stage where output is not a terminal: with
# FTPIPE_PROGRESS_INTERVAL=0 every status becomes a plain line (step/total,
# tokens/s, loss, ETA); with the default interval a short run prints none.
. "$(dirname "$0")/lib.sh"

t_train_workspace 64 "max_steps = 30" "per_device_train_batch_size = 4" "logging_steps = 5" "threads = 1"

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
