#!/bin/sh
# executor = slurm against a real Slurm of this one host (tests/e2e/slurm.sh
# starts munged, slurmctld and slurmd): a train stage of 2 ranks runs through
# srun and is published as a local one is; a job cancelled with scancel fails
# its stage naming the job id. Every wait is bounded (slurm.sh); where loopback is
# the host's only address Slurm cannot listen, and the test is a skip that says so.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/slurm.sh"
RUN_SECONDS=300

t_case "a Slurm of this host starts"
slurm_start > "$T_ROOT/slurm-start.out" 2>&1
status=$?
if [ "$status" = 2 ]; then
  echo "ok executor = slurm # SKIP $(cat "$T_ROOT/slurm-start.out")"
  exit 0
fi
[ "$status" = 0 ] || t_fail "$(cat "$T_ROOT/slurm-start.out")"
t_end
[ "$T_FAILED" = 0 ] || exit 1
# A run through srun, given up after RUN_SECONDS.
run_bounded() {
  t_run timeout "$RUN_SECONDS" "$@"
  [ "$T_STATUS" != 124 ] || t_fail "$* did not end within $RUN_SECONDS s: $T_OUT"
}

t_case "a train stage of 2 ranks runs through srun and is published"
t_train_workspace 32 "backend = cpu" "threads = 1" "max_steps = 3" "per_device_train_batch_size = 2" \
  "nproc_per_node = 2" "executor = slurm" "time = 5m"
run_bounded "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "done     adapter"
[ -f "$W/adapter/adapter_model.safetensors" ] || t_fail "the adapter was not published"
t_run "$FTPIPE" -C "$W" log adapter
t_expect_contains "submitting through Slurm: srun --verbose --job-name=ftpipe:adapter --nodes=1 --ntasks-per-node=1 --time=5"
t_expect_contains "slurm job "
t_expect_contains "steps of 2 x 1 rows x 2 ranks"
run_bounded "$FTPIPE" -C "$W"
t_expect_contains "nothing to do"
t_end

t_case "a cancelled job fails its stage, naming the job id"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
slow.txt: shell
	run = sleep 60; echo late > $@
	executor = slurm
P
timeout "$RUN_SECONDS" "$FTPIPE" -C "$W" > "$W/out" 2>&1 &
pid=$!
job_queued() { job=$(slurm_command squeue -h -o %i -n ftpipe:slow.txt 2>/dev/null | head -n1); [ -n "$job" ]; }
run_ended() { ! kill -0 "$pid" 2>/dev/null; }
if ! slurm_until "$SLURM_WAIT_SECONDS" job_queued; then
  t_fail "no job appeared in squeue within $SLURM_WAIT_SECONDS s: $(cat "$W/out")"
  kill "$pid" 2>/dev/null
fi
[ -z "$job" ] || slurm_command scancel "$job" || t_fail "scancel $job failed or did not answer"
slurm_until "$SLURM_WAIT_SECONDS" run_ended ||
  { t_fail "ftpipe did not end within $SLURM_WAIT_SECONDS s of scancel: $(cat "$W/out")"; kill "$pid" 2>/dev/null; }
wait "$pid"
status=$?
[ "$status" != 0 ] || t_fail "the stage succeeded after its job was cancelled"
grep -q "slurm job $job of stage slow.txt failed" "$W/out" || t_fail "the failure does not name job $job: $(cat "$W/out")"
[ -f "$W/slow.txt" ] && t_fail "a cancelled stage published its output"
t_end
