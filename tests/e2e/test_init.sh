#!/bin/sh
# The init kind through pipelines: random model folders for named shapes and
# explicit dimensions, with the built-in or a given tokenizer.
. "$(dirname "$0")/lib.sh"

t_case "a tiny model folder with the built-in tokenizer"
W=$(t_workspace)
printf 'models/tiny: init\n\tdtype = f32\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "done     models/tiny"
t_expect_contains "Qwen2ForCausalLM: 2 layers, hidden 64, vocab 259, 0.09M parameters, 355.0 KiB"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
  [ -f "$W/models/tiny/$f" ] || t_fail "models/tiny/$f is missing"
done
grep -q '"torch_dtype": "float32"' "$W/models/tiny/config.json" || t_fail "config.json: $(cat "$W/models/tiny/config.json")"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_lacks "run      models/tiny"
t_end

t_case "explicit dimensions override the shape, head_dim follows"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
models/q3: init
	architecture = qwen3
	hidden_size = 32
	num_attention_heads = 2
	num_key_value_heads = 1
	num_hidden_layers = 1
	seed = 5
P
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "Qwen3ForCausalLM: 1 layers, hidden 32, vocab 259"
grep -q '"head_dim": 16' "$W/models/q3/config.json" || t_fail "head_dim: $(cat "$W/models/q3/config.json")"
grep -q '"model_type": "qwen3"' "$W/models/q3/config.json" || t_fail "model_type: $(cat "$W/models/q3/config.json")"
grep -q '"torch_dtype": "bfloat16"' "$W/models/q3/config.json" || t_fail "dtype: $(cat "$W/models/q3/config.json")"
t_end

t_case "a given tokenizer is copied and sets the vocabulary"
W=$(t_workspace)
mkdir -p "$W/tok"
cp "$(dirname "$0")/../fixtures/datasets/byte_model/tokenizer.json" "$W/tok/"
printf 'models/m: init tok/tokenizer.json\n\tdtype = f32\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
cmp -s "$W/tok/tokenizer.json" "$W/models/m/tokenizer.json" || t_fail "tokenizer.json differs from the input"
grep -q '"vocab_size": 259' "$W/models/m/config.json" || t_fail "vocab: $(cat "$W/models/m/config.json")"
t_end

t_case "an unknown shape and a second input are refused"
W=$(t_workspace)
printf 'models/x: init\n\tshape = qwen9\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "unknown model shape 'qwen9'; known: tiny, qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b, qwen2.5-14b, llama3-8b"
printf 'a\n' > "$W/a.json"
printf 'models/y: init a.json a.json\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "init takes at most one input, the tokenizer; 2 given"
t_end
