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
