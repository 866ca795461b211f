# Two small init models (a: 4 layers of 256, b: 3 of 384 with tied embeddings)
# and their tokenized train.json: the shapes the estimate tests compare
# estimates and measurements on; sourced by test_estimate.sh and
# test_estimate_time.sh, which add their train stages after it.
estimate_models() {
  cat <<'P'
models/a: init
	vocab_size = 16384
	hidden_size = 256
	num_hidden_layers = 4
	intermediate_size = 704
	num_attention_heads = 4
	num_key_value_heads = 2
	dtype = f32

models/b: init
	vocab_size = 8192
	hidden_size = 384
	num_hidden_layers = 3
	intermediate_size = 1024
	num_attention_heads = 6
	num_key_value_heads = 2
	tie_word_embeddings = true
	dtype = f32

data/set_a: tokenize models/a train.json
	template = plain
	cutoff_len = 128

data/set_b: tokenize models/b train.json
	template = plain
	cutoff_len = 96

P
}
