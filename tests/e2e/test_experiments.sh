#!/bin/sh
# Experiments: sweeps written as templates or as a matrix, and what they run.
. "$(dirname "$0")/lib.sh"

t_case "a template included six times with its variables reassigned makes six correctly labelled results"
W=$(t_workspace)
cat > "$W/run.ft" <<'P'
runs/lr$(LR)_r$(RANK): shell data.txt
	run = mkdir $@ && printf '{"lr": "%s", "r": %s}\n' $(LR) $(RANK) > $@/adapter_config.json
P
cat > "$W/Ftpipe" <<'P'
LR := 1e-3
RANK := 4
include run
RANK := 8
include run
LR := 3e-3
RANK := 4
include run
RANK := 8
include run
LR := 1e-2
RANK := 4
include run
RANK := 8
include run
P
echo data > "$W/data.txt"
t_run "$FTPIPE" -C "$W" -j 2
t_expect_status 0
t_expect_contains "ftpipe: 6 run, 0 restored, 0 up to date"
for lr in 1e-3 3e-3 1e-2; do
  for r in 4 8; do
    got=$(cat "$W/runs/lr${lr}_r$r/adapter_config.json" 2>&1)
    [ "$got" = "{\"lr\": \"$lr\", \"r\": $r}" ] || t_fail "runs/lr${lr}_r$r says $got"
  done
done
t_end

write_matrix_pipeline() {
  cat > "$1/Ftpipe" <<P
matrix lr = $2
matrix rank = 4 8
runs/lr\$(lr)_r\$(rank): shell data.txt
	run = mkdir \$@ && echo "lr \$(lr) rank \$(rank)" > \$@/config && echo run >> ran.log
evals/lr\$(lr)_r\$(rank).txt: shell runs/lr\$(lr)_r\$(rank)
	run = cat \$</config > \$@
compare.txt: shell evals/lr\$(lr)_r\$(rank).txt
	run = cat \$^ > \$@
P
}

t_case "a matrix stage runs once per combination, and a stage naming no axis takes them all"
W=$(t_workspace)
echo data > "$W/data.txt"
write_matrix_pipeline "$W" "1e-3 3e-3 1e-2"
t_run "$FTPIPE" -C "$W" -j 2
t_expect_status 0
t_expect_contains "ftpipe: 13 run, 0 restored, 0 up to date"
[ "$(wc -l < "$W/compare.txt")" = 6 ] || t_fail "compare.txt: $(cat "$W/compare.txt")"
[ "$(sed -n 4p "$W/compare.txt")" = "lr 3e-3 rank 8" ] || t_fail "compare.txt: $(cat "$W/compare.txt")"
t_end

t_case "changing one matrix value runs only the new combinations and what takes them all"
: > "$W/ran.log"
write_matrix_pipeline "$W" "1e-3 3e-3 3e-2"
t_run "$FTPIPE" -C "$W" -j 2
t_expect_status 0
t_expect_contains "ftpipe: 5 run, 0 restored, 8 up to date"
[ "$(wc -l < "$W/ran.log")" = 2 ] || t_fail "$(wc -l < "$W/ran.log") trainings ran, expected 2"
grep -q "lr 3e-2 rank 8" "$W/compare.txt" || t_fail "compare.txt: $(cat "$W/compare.txt")"
t_end

t_case "a pattern rule over 20 files runs 20 stages; a 21st file runs one more; an edited one reruns alone"
W=$(t_workspace)
mkdir "$W/in"
for i in $(seq 1 20); do echo "file $i" > "$W/in/f$i.txt"; done
cat > "$W/Ftpipe" <<'P'
out/%.txt: shell in/%.txt
	run = tr a-z A-Z < $< > $@
P
[ "$(wc -l < "$W/Ftpipe")" -lt 5 ] || t_fail "the pipeline is not under 5 lines"
t_run "$FTPIPE" -C "$W" -j 2
t_expect_status 0
t_expect_contains "ftpipe: 20 run, 0 restored, 0 up to date"
[ "$(cat "$W/out/f7.txt")" = "FILE 7" ] || t_fail "out/f7.txt: $(cat "$W/out/f7.txt")"
echo "file 21" > "$W/in/f21.txt"
t_run "$FTPIPE" -C "$W"
t_expect_contains "ftpipe: 1 run, 0 restored, 20 up to date"
[ "$(cat "$W/out/f21.txt")" = "FILE 21" ] || t_fail "out/f21.txt: $(cat "$W/out/f21.txt")"
echo "edited" > "$W/in/f3.txt"
t_run "$FTPIPE" -C "$W"
t_expect_contains "ftpipe: 1 run, 0 restored, 20 up to date"
[ "$(cat "$W/out/f3.txt")" = "EDITED" ] || t_fail "out/f3.txt: $(cat "$W/out/f3.txt")"
t_end

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
t_case "examples/sweep: a 3 x 2 sweep trains and evaluates six runs; metrics shows them side by side"
W=$(t_workspace)/sweep # beside a quickstart/, whose data script the sweep shares
mkdir -p "$W" "$W/../quickstart"
cp "$ROOT/examples/sweep/Ftpipe" "$W/"
cp "$ROOT/examples/quickstart/make_addition_data.sh" "$W/../quickstart/"
t_run "$FTPIPE" -C "$W" -j 2
t_expect_status 0
t_expect_contains "ftpipe: 17 run, 0 restored, 0 up to date"
t_run "$FTPIPE" -C "$W" metrics
t_expect_status 0
header=$(echo "$T_OUT" | head -n 1)
[ "$(echo "$header" | tr -s ' ')" = "target learning_rate lora_rank loss train_loss eval_loss accuracy" ] ||
  t_fail "header: $header"
[ "$(echo "$T_OUT" | grep -c '^evals/lr')" = 6 ] || t_fail "not six rows: $T_OUT"
echo "$T_OUT" | grep -Eq '^evals/lr3e-3_r8 +0\.003 +8 +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+$' || t_fail "row lr3e-3_r8: $T_OUT"
t_run "$FTPIPE" -C "$W" metrics --json
echo "$T_OUT" | python3 -c '
import json, sys
rows = json.load(sys.stdin)
assert len(rows) == 6, rows
row = [r for r in rows if r["target"] == "evals/lr1e-2_r4"][0]
assert row["params"]["learning_rate"] == "0.01" and row["params"]["lora_rank"] == "4", row
assert set(row["metrics"]) == {"loss", "train_loss", "eval_loss", "accuracy"}, row
' || t_fail "metrics --json: $T_OUT"
t_run "$FTPIPE" -C "$W" metrics --csv runs/lr1e-3_r4 runs/lr1e-3_r8
[ "$(echo "$T_OUT" | head -n 1)" = "target,lora_rank,loss,train_loss" ] || t_fail "metrics --csv: $T_OUT"
[ "$(echo "$T_OUT" | wc -l)" = 3 ] || t_fail "metrics --csv: $T_OUT"
t_run "$FTPIPE" -C "$W" metrics --diff evals/lr1e-3_r4 evals/lr1e-2_r8
t_expect_status 0
echo "$T_OUT" | grep -Eq '^learning_rate +0\.001 +0\.01 *$' || t_fail "metrics --diff: $T_OUT"
echo "$T_OUT" | grep -Eq '^eval_loss +[0-9.]+ +[0-9.]+ +[-+][0-9.e-]+$' || t_fail "metrics --diff: $T_OUT"
t_run "$FTPIPE" -C "$W" metrics --diff evals/lr1e-3_r4
t_expect_status 2
t_expect_contains "--diff compares two targets"
t_end

t_case "changing one value of the sweep runs only its new combinations"
sed -i 's/^matrix lr = 1e-3 3e-3 1e-2$/matrix lr = 1e-3 3e-3 3e-2/' "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" -j 2
t_expect_status 0
t_expect_contains "ftpipe: 5 run, 0 restored, 12 up to date"
t_expect_contains "done     runs/lr3e-2_r8"
t_end

t_case "gc keeps earlier experiments: after a parameter change, switching back restores instead of retraining"
sed -i 's/max_steps = 32/max_steps = 24/' "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" -j 2
t_expect_contains "ftpipe: 13 run, 0 restored, 4 up to date"
t_run "$FTPIPE" -C "$W" gc
t_expect_status 0
t_expect_contains "earlier results (--keep-runs N, --older-than DURATION or --all-unreferenced remove more)"
sed -i 's/max_steps = 24/max_steps = 32/' "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "ftpipe: 0 run, 13 restored, 4 up to date"
t_run "$FTPIPE" -C "$W" gc --keep-runs 0
t_expect_status 0
t_expect_lacks "earlier results"
sed -i 's/max_steps = 32/max_steps = 24/' "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" -j 2
t_expect_contains "ftpipe: 13 run, 0 restored, 4 up to date"
t_run "$FTPIPE" -C "$W" gc --older-than soon
t_expect_status 1
t_expect_contains "gc --older-than needs a duration"
t_end

t_case "a shell stage sees the pipeline variables its env declares, with their values where it is written"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
LR := 1e-3
a.txt: shell
	env = LR HOME
	run = echo "$$LR $${HOME:+home}" > $@
LR := 1e-2
b.txt: shell
	env = LR
	run = echo "$$LR" > $@
P
t_run env LR=from-environment "$FTPIPE" -C "$W"
t_expect_status 0
[ "$(cat "$W/a.txt")" = "1e-3 home" ] || t_fail "a.txt: $(cat "$W/a.txt")"
[ "$(cat "$W/b.txt")" = "1e-2" ] || t_fail "b.txt: $(cat "$W/b.txt")"
t_run "$FTPIPE" -C "$W" LR=5e-3
t_expect_contains "ftpipe: 2 run, 0 restored, 0 up to date"
[ "$(cat "$W/a.txt")" = "5e-3 home" ] || t_fail "a.txt: $(cat "$W/a.txt")"
t_end
