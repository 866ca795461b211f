#!/bin/sh
# The tokenize stage through pipelines: alpaca and sharegpt files, dataset_info.json,
# malformed records (each with its message), on_error = skip, cutoff_len, packing,
# val_size, and the cache. The tokenizer is tests/fixtures/datasets/byte_model,
# whose ids are the text's bytes, so token counts follow from the rendered text:
# with the qwen template the three records of alpaca.json are 112, 126 and 125
# tokens, 18 of them answer tokens (LLaMA-Factory's qwen format, counted by hand).
. "$(dirname "$0")/lib.sh"
FIXTURES="$(cd "$(dirname "$0")/../fixtures/datasets" && pwd)"

# A workspace with the model, the fixtures under data/, and a one-stage pipeline
# whose parameter lines are the arguments.
tokenize_workspace() {
  W=$(t_workspace)
  cp -r "$FIXTURES/byte_model" "$W/model"
  mkdir "$W/data"
  cp "$FIXTURES/alpaca.json" "$FIXTURES/sharegpt.jsonl" "$W/data/"
  cp -r "$FIXTURES/llamafactory" "$W/data/lf"
}
write_stage() { # INPUTS PARAMETER-LINES...
  inputs=$1; shift
  { echo "data/train_set: tokenize model $inputs"; for line in "$@"; do printf '\t%s\n' "$line"; done; } > "$W/Ftpipe"
}
meta_has() { grep -q -- "$1" "$W/data/train_set/meta.json" || t_fail "meta.json lacks $1: $(cat "$W/data/train_set/meta.json")"; }

t_case "tokenizes alpaca records with the qwen template"
tokenize_workspace
write_stage data/alpaca.json "template = qwen"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "data/train_set in "
t_expect_contains ": 3 samples, 363 tokens, 0 truncated, mean 121.0, max 126"
meta_has '"template": "qwen"'
meta_has '"tokens": 363'
meta_has '"trained_tokens": 18'
meta_has '"cutoff_len": 2048'
meta_has '"packing": false'
[ -d "$W/data/train_set/validation" ] && t_fail "a validation split without val_size"
# header 64 + sample offsets 32 (to 128) + row offsets 32 (to 192) + ids 1452 (to 1664) + mask 363
size=$(stat -c %s "$W/data/train_set/train/shard-00000.bin")
[ "$size" = 2027 ] || t_fail "shard size $size, expected 2027"
# The ids begin with <|im_start|> (257) and "sy"; 18 mask bytes are 1.
ids=$(od -A n -t u4 -j 192 -N 12 "$W/data/train_set/train/shard-00000.bin" | tr -s ' ' ' ')
[ "$ids" = " 257 115 121" ] || t_fail "first ids:$ids"
trained=$(tail -c 363 "$W/data/train_set/train/shard-00000.bin" | od -A n -t u1 -v | tr -s ' ' '\n' | grep -c '^1$')
[ "$trained" = 18 ] || t_fail "$trained mask bytes are 1, expected 18"
t_end

t_case "a second run does nothing, and threads is not in the key"
write_stage data/alpaca.json "template = qwen" "threads = 1"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "nothing to do"
t_end

t_case "sharegpt in both spellings and alpaca in one stage"
write_stage "data/alpaca.json data/sharegpt.jsonl" "template = qwen"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains ": 5 samples, "
meta_has '"records": 5'
t_end

t_case "cutoff_len cuts turns as LLaMA-Factory does and counts the truncated samples"
write_stage data/alpaca.json "template = qwen" "cutoff_len = 40"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains ": 3 samples, 120 tokens, 3 truncated, mean 40.0, max 40"
meta_has '"trained_tokens": 12'
t_end

t_case "packing packs whole samples into rows of cutoff_len tokens"
write_stage data/alpaca.json "template = qwen" "cutoff_len = 256" "packing = true"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains ": 3 samples, 363 tokens, 0 truncated"
meta_has '"packing": true'
meta_has '"rows": 2' # 126 + 125 in one row of 256, 112 in the next
t_end

t_case "val_size splits off a validation set, the same one every time"
write_stage data/alpaca.json "template = qwen" "val_size = 1"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains ": 3 samples, 363 tokens"
[ -f "$W/data/train_set/validation/shard-00000.bin" ] || t_fail "no validation shard"
first=$(tr -d ' \n' < "$W/data/train_set/meta.json")
case "$first" in *'"validation":{"samples":1,'*) ;; *) t_fail "meta.json: $first" ;; esac
rm -rf "$W/.ftpipe"; chmod -R u+w "$W/data/train_set"; rm -rf "$W/data/train_set"
t_run "$FTPIPE" -C "$W"
[ "$(tr -d ' \n' < "$W/data/train_set/meta.json")" = "$first" ] || t_fail "a second split differs"
t_end

t_case "max_samples takes the first N records of each dataset, before the validation split"
write_stage "data/alpaca.json data/sharegpt.jsonl" "template = qwen" "max_samples = 2" "val_size = 1"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains ": 4 samples"
meta_has '"records": 4'
case "$(tr -d ' \n' < "$W/data/train_set/meta.json")" in *'"validation":{"samples":1,'*) ;; *) t_fail "no validation sample of 1" ;; esac
write_stage data/alpaca.json "template = qwen" "max_samples = -1"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "max_samples = -1: expected 0 (all records) or a count of records per dataset"
t_end

t_case "datasets named in dataset_info.json"
write_stage data/lf "template = qwen" "dataset = alpaca_demo,openai parts"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains ": 4 samples, "
t_end

t_case "a dataset_info.json folder without dataset = lists its datasets"
write_stage data/lf "template = qwen"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "$W/data/lf holds a dataset_info.json: set dataset = NAME[,NAME...] to choose from: alpaca_demo, renamed, openai, parts, from_hub"
t_end

t_case "an unsupported dataset_info.json entry is refused by name"
write_stage data/lf "template = qwen" "dataset = from_hub"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "$W/data/lf/dataset_info.json: dataset 'from_hub' comes from a hub (\"hf_hub_url\"): fetch it with a download stage"
t_end

# Malformed records through the stage, each with its message.
bad_record_case() { # NAME RECORDS-TEXT MESSAGE
  t_case "a malformed record fails the stage: $1"
  printf '%s\n' "$2" > "$W/data/bad.jsonl"
  write_stage data/bad.jsonl "template = qwen"
  t_run "$FTPIPE" -C "$W"
  t_expect_fail
  t_expect_contains "$W/data/bad.jsonl: $3 (fix the record, or set on_error = skip to skip bad records)"
  t_end
}
GOOD='{"instruction": "q", "output": "a"}'
bad_record_case "missing output" "$GOOD
{\"instruction\": \"q\"}" "record 2: 'output' is missing: a record without an answer is not a supervised example; if the data is plain text for continued pretraining, tokenize it with stage = pt"
bad_record_case "broken JSON line" "$GOOD
$GOOD
{\"instruction\": \"q\", " "record 3: not valid JSON: string or '}' expected near end of file (column 20)"
bad_record_case "unknown sharegpt role" '{"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}' \
  "record 1: message 2: unknown role 'bot' (expected human or user, gpt or assistant, or system)"
bad_record_case "turns out of order" '{"messages": [{"role": "assistant", "content": "a"}]}' \
  "record 1: message 1: expected a user turn, got 'assistant'"
bad_record_case "history not pairs" '{"instruction": "q", "output": "a", "history": [["only prompt"]]}' \
  "record 1: 'history' item 1 is not a [prompt, answer] pair of strings"

t_case "on_error = skip skips bad records and counts them"
printf '%s\n' "$GOOD" '{"instruction": "q"}' '{broken' "$GOOD" > "$W/data/bad.jsonl"
write_stage data/bad.jsonl "template = qwen" "on_error = skip"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains ": 2 samples, "
meta_has '"records": 4'
meta_has '"skipped_records": 2'
t_end

t_case "a broken JSON array cannot be skipped"
printf '[%s,\n %s\n %s]\n' "$GOOD" "$GOOD" "$GOOD" > "$W/data/bad.json"
write_stage data/bad.json "template = qwen" "on_error = skip"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "$W/data/bad.json: line 3: expected ',' or ']' after record 2"
t_end

t_case "every record bad leaves nothing to train on"
printf '%s\n' '{"instruction": "q"}' > "$W/data/bad.jsonl"
write_stage data/bad.jsonl "template = qwen" "on_error = skip"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "the datasets hold no usable record (1 read, 1 skipped)"
t_end

t_case "an unknown template is refused"
write_stage data/alpaca.json "template = qwen9"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "qwen9"
t_end

t_case "a template whose special tokens the tokenizer lacks is refused, naming them"
write_stage data/alpaca.json "template = llama3"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "the chat template llama3 needs the special tokens <|begin_of_text|>, <|start_header_id|>, <|end_header_id|>, <|eot_id|>, which the tokenizer does not have"
t_end

t_case "qwen3 trains the empty think block; enable_thinking = false moves it to the prompt"
write_stage data/alpaca.json "template = qwen3"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
# each of the 5 answers (the third record has two earlier turns) gains the trained
# "<think>\n\n</think>\n\n" (19 bytes): 18 + 5 x 19
meta_has '"trained_tokens": 113'
write_stage data/alpaca.json "template = qwen3" "enable_thinking = false"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
meta_has '"trained_tokens": 18'
t_end

t_case "ftpipe render shows a conversation as tokenize encodes it"
t_run sh -c 'printf "%s" "[{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Yo\"}]" |
  "$1" render --tokenizer "$2" --template qwen3_nothink' sh "$FTPIPE" "$W/model"
t_expect_status 0
t_expect_contains '"text":"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n"'
t_expect_contains '"ids":[257,117,115,101,114,10,72,105,258,10,257,97,115,115,105,115,116,97,110,116,10,89,111,258,10]'
t_expect_contains '"loss_mask":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1]'
t_run sh -c 'echo "[{\"role\": \"user\", \"content\": \"Hi\"}]" | "$1" render --tokenizer "$2" --template qwen' sh "$FTPIPE" "$W/model"
t_expect_fail
t_expect_contains "the conversation ends with a user message that has no answer"
t_run "$FTPIPE" render --tokenizer "$W/model" --template qwen --cutoff-len x
t_expect_fail
t_expect_contains "render: --cutoff-len needs a token count from 1 to 1073741824, not 'x'"
t_end

t_case "a stage without datasets says what it needs"
echo "data/train_set: tokenize model
	template = qwen" > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "tokenize needs a model folder (or its tokenizer.json) and then datasets: \`data/train_set: tokenize MODEL DATA...\`"
t_end

t_case "a first input that is not a tokenizer says what it must be"
echo "data/train_set: tokenize data/alpaca.json data/alpaca.json
	template = qwen" > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "the first input of tokenize must be a model folder or a tokenizer.json: $W/data/alpaca.json: "
t_end
