# gpu_lib: what the GPU test scripts share, sourced first: tests/e2e/lib.sh's
# cases, ROOT, FTPIPE (this checkout's build/ftpipe) and the tiny workspace.
. "$(dirname "$0")/../e2e/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
FTPIPE="$ROOT/build/ftpipe"

# tiny_addition_workspace RECORDS CUTOFF [TOKENIZE-LINE...]: a new workspace
# (its path printed) whose Ftpipe makes the tiny qwen2 model (hidden 256, 2
# layers, 4 query and 2 key/value heads of 64) and tokenizes RECORDS addition
# records at CUTOFF into data/train_set; the caller appends its train stage.
tiny_addition_workspace() {
  W=$(t_workspace)
  cp "$ROOT/examples/quickstart/make_addition_data.sh" "$W/"
  records=$1
  cutoff=$2
  shift 2
  cat > "$W/Ftpipe" <<P
models/tiny: init
	architecture = qwen2
	hidden_size = 256
	intermediate_size = 512
	num_hidden_layers = 2
	num_attention_heads = 4
	num_key_value_heads = 2
	head_dim = 64

data/train.json: shell make_addition_data.sh
	run = sh \$< train $records > \$@

data/train_set: tokenize models/tiny data/train.json
	template = plain
	cutoff_len = $cutoff
P
  for line in "$@"; do printf '\t%s\n' "$line"; done >> "$W/Ftpipe"
  echo >> "$W/Ftpipe"
  echo "$W"
}
