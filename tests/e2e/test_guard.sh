#!/bin/sh
# The train stage's guards: in a small tmpfs that a shell stage beside it fills
# during the run, training checkpoints and stops cleanly before the disk is full;
# after space is freed the rerun resumes and ends with the same bytes as a run
# that was never stopped. The guard's samples are in state.db.
. "$(dirname "$0")/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"

write_pipeline() { # FOLDER [filler]
  cp "$ROOT/examples/quickstart/make_addition_data.sh" "$1/"
  cat > "$1/Ftpipe" <<'P'
models/tiny: init
	hidden_size = 128
	intermediate_size = 256
	num_attention_heads = 4
	num_key_value_heads = 2
	dtype = f32
	threads = 1

data/train.json: shell make_addition_data.sh
	run = sh $< train 64 > $@

data/train_set: tokenize models/tiny data/train.json
	template = plain
	cutoff_len = 40

model: train models/tiny data/train_set
	finetuning_type = full
	max_steps = 120
	per_device_train_batch_size = 4
	learning_rate = 1e-3
	save_steps = 1000
	logging_steps = 10
	guard_interval = 0
	threads = 1
	backend = cpu
P
  [ "$2" = filler ] && cat >> "$1/Ftpipe" <<'P'

# Waits until training has started, then fills the file system until less than
# the next checkpoint plus the result (about 4.9 MiB) but more than the
# checkpoint alone (3.7 MiB) is free.
filled: shell
	run = while ! ls -d .ftpipe/work/*/checkpoints >/dev/null 2>&1; do sleep 0.05; done; \
	      while [ $$(df -B1 --output=avail . | tail -n 1) -gt 4400000 ]; do \
	        dd if=/dev/zero bs=128K count=1 >> filler 2>/dev/null; done; echo filled > $@
P
}

t_case "a train stage in a tmpfs that fills up checkpoints and stops; the rerun equals an uninterrupted run"
T=$(t_workspace)
if ! mount -t tmpfs -o size=24m ftpipe-test "$T" 2>/dev/null; then
  echo "ok guard: disk filling during training # SKIP cannot mount a tmpfs (needs root)"
  exit 0
fi
write_pipeline "$T" filler
t_run "$FTPIPE" -C "$T" -j 2 model filled
t_expect_status 1
echo "$T_OUT" | grep "will be full" | sed "s/^/  /"
t_expect_contains "will be full before the next checkpoint (step 120)"
t_expect_contains "free, filling at"
t_expect_contains "with checkpoint-"
t_expect_contains "saved: the next run resumes from it"
stopped=$(ls -d "$T"/.ftpipe/work/*/checkpoints/checkpoint-* 2>/dev/null | sed 's/.*checkpoint-//' | sort -n | tail -n 1)
[ -n "$stopped" ] && [ "$stopped" -lt 120 ] || t_fail "no checkpoint before the last step: '$stopped'"
samples=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT count(*) FROM metrics WHERE name = 'guard_disk_free_bytes'\").fetchone()[0])" "$T/.ftpipe/state.db")
[ "$samples" -ge 1 ] || t_fail "no guard samples in state.db"
rm -f "$T/filler"
t_run "$FTPIPE" -C "$T" model
t_expect_status 0
"$FTPIPE" -C "$T" log model | grep -q "resumed from checkpoint-$stopped" || t_fail "the rerun did not resume from checkpoint-$stopped"
U=$(t_workspace)
write_pipeline "$U"
t_run "$FTPIPE" -C "$U" model
t_expect_status 0
cmp "$T/model/model.safetensors" "$U/model/model.safetensors" || t_fail "the resumed model differs from the uninterrupted one"
umount "$T"
t_end
