# A pipeline with a stage of every kind that writes (download, shm, init, shell,
# tokenize, train, export), small enough to run in about a second with the
# release build, and what its targets hash to; sourced by test_kill.sh and
# test_fault_injection.sh (they set RUN and ROOT first). The download runs last
# (the export is its input only for that): its many writes would otherwise take
# every injected fault meant for the stages after it.
# The adapter folder also holds timings (train_runtime); its weights are what must match.
TARGETS="models/tiny data/train.json data/train_set downloads/big staged adapter/adapter_model.safetensors
         adapter/adapter_config.json export/adapter.tar.gz"

# A workspace holding the pipeline and its source files; $1: the folder.
make_workspace() {
  mkdir -p "$1/src" "$1/shm"
  cp "$ROOT/examples/quickstart/make_addition_data.sh" "$1/"
  # 12 MiB that differ from byte to byte, so a torn copy cannot pass for whole.
  awk 'BEGIN { for (i = 0; i < 196608; i++) printf "%063d\n", i }' > "$1/src/big.bin"
  cat > "$1/Ftpipe" <<P
models/tiny: init
	dtype = f32
	threads = 1

data/train.json: shell make_addition_data.sh
	run = sh \$< train 96 > \$@

data/train_set: tokenize models/tiny data/train.json
	template = plain
	cutoff_len = 40
	threads = 1

adapter: train models/tiny data/train_set
	threads = 1
	learning_rate = 1e-2
	per_device_train_batch_size = 4
	max_steps = 10
	save_steps = 2

export/adapter.tar.gz: export adapter
	archive = tar.gz

downloads/big: download export/adapter.tar.gz
	url = file://$1/src/big.bin

staged: shm downloads/big
	dir = shm
P
}

# "TARGET HASH" per line, the staged copy hashed through its link.
target_hashes() {
  for t in $TARGETS; do
    path="$1/$t"
    [ -L "$path" ] && path=$(readlink -f "$path")
    printf '%s %s\n' "$t" "$("$RUN" hash "$path" 2>&1 | cut -d' ' -f1)"
  done
}
# Cache objects whose content does not hash to their name.
bad_objects() {
  find "$1/.ftpipe/cache/objects" -type f 2>/dev/null | while read -r object; do
    name=$(basename "$(dirname "$object")")$(basename "$object")
    [ "$("$RUN" hash "$object" | cut -d' ' -f1)" = "$name" ] || echo "$object"
  done
}

