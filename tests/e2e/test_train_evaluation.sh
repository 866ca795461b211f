#!/bin/sh
# Evaluation during training (eval_strategy, eval_steps, per_device_eval_batch_size)
# on the validation split of the data or on a third input, as the HF Trainer runs
# it: eval_loss in the log, the metrics and trainer_log.jsonl; and its refusals.
. "$(dirname "$0")/lib.sh"
FIXTURES="$(cd "$(dirname "$0")/../fixtures/datasets" && pwd)"

W=$(t_workspace)
cp -r "$FIXTURES/llamafactory_data" "$W/data"
cat > "$W/Ftpipe" <<'PIPELINE'
tiny: init
	shape = tiny
	num_hidden_layers = 1
	hidden_size = 32
	intermediate_size = 64
	num_attention_heads = 2
	num_key_value_heads = 1
	dtype = f32

split: tokenize tiny data
	template = qwen3_nothink
	dataset = alpaca_en_demo, identity
	val_size = 3
	cutoff_len = 256

whole: tokenize tiny data
	template = qwen3_nothink
	dataset = alpaca_zh_demo
	cutoff_len = 128

by_steps: train tiny split
	max_steps = 4
	per_device_train_batch_size = 2
	logging_steps = 1
	eval_strategy = steps
	eval_steps = 2
	per_device_eval_batch_size = 2

by_epoch: train tiny split whole
	num_train_epochs = 2
	per_device_train_batch_size = 2
	eval_strategy = epoch
PIPELINE

t_case "eval_strategy = steps evaluates the validation split every eval_steps steps"
t_run "$FTPIPE" -C "$W" by_steps
t_expect_status 0
t_run "$FTPIPE" -C "$W" log by_steps
t_expect_contains "evaluating on 3 rows of $W/split/validation every eval_steps steps"
t_expect_contains "step 2 epoch 0.80: eval_loss "
[ "$(grep -c '"eval_loss"' "$W/by_steps/trainer_log.jsonl")" = 2 ] || t_fail "not 2 evaluations: $(cat "$W/by_steps/trainer_log.jsonl")"
grep -q '^{"step":4,"epoch":1.4,"eval_loss":' "$W/by_steps/trainer_log.jsonl" || t_fail "no evaluation at step 4"
# each evaluation follows its step's log line
[ "$(sed -n 3p "$W/by_steps/trainer_log.jsonl" | cut -c1-26)" = '{"step":2,"epoch":0.8,"eva' ] || t_fail "order: $(cat "$W/by_steps/trainer_log.jsonl")"
t_end

t_case "eval_strategy = epoch evaluates a third input at each epoch's end"
t_run "$FTPIPE" -C "$W" by_epoch
t_expect_status 0
t_run "$FTPIPE" -C "$W" log by_epoch
t_expect_contains "evaluating on 4 rows of $W/whole/train at each epoch's end"
[ "$(grep -c '"eval_loss"' "$W/by_epoch/trainer_log.jsonl")" = 2 ] || t_fail "not 2 evaluations: $(cat "$W/by_epoch/trainer_log.jsonl")"
grep -q '"epoch":2.0,"eval_loss":' "$W/by_epoch/trainer_log.jsonl" || t_fail "no evaluation at epoch 2"
t_end

t_case "evaluation without rows to evaluate, or eval data without a strategy, is refused"
printf 'bad: train tiny whole\n\teval_strategy = steps\n' >> "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" bad
t_expect_fail
t_expect_contains "eval_strategy = steps needs rows to evaluate on: $W/whole has no validation split (set val_size on its tokenize stage), and no third input names eval data"
printf 'bad2: train tiny split whole\n' >> "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" bad2
t_expect_fail
t_expect_contains "$W/whole is given to evaluate on, but eval_strategy = no: set eval_strategy = steps or epoch"
t_end
