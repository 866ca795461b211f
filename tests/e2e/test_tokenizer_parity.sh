#!/bin/sh
# Token-id parity of `ftpipe encode` with Hugging Face `tokenizers` for the Qwen3
# and Llama 3 tokenizers and two SentencePiece-style ones (Llama 2's legacy
# normalizer and its Metaspace form, trained by make_sentencepiece.py), on a corpus of over 1 MB (tests/fixtures/tokenizer/
# make_corpus.py) whose expected ids tests/fixtures/tokenizer/make_fixtures.py
# made with `tokenizers`; decoding back; the encode/decode commands' refusals.
# The tokenizer files are committed under tests/fixtures/tokenizer/NAME/ (compressed,
# with their licences; make_tokenizer_files.py made them from PyPI packages), so the
# test fetches nothing.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FIXTURES="$ROOT/tests/fixtures/tokenizer"
MODELS="$T_ROOT/models"

# The committed tokenizer files of NAME as a model folder under $MODELS.
unpack_tokenizer() {
  mkdir -p "$MODELS/$1" &&
    zstd -qdc "$FIXTURES/$1/tokenizer.json.zst" > "$MODELS/$1/tokenizer.json" &&
    cp "$FIXTURES/$1/tokenizer_config.json" "$MODELS/$1/"
}

# A field of fixtures.json.
fact() {
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))
for key in sys.argv[2].split("."): d = d[key]
print(d)' "$FIXTURES/fixtures.json" "$1"
}

t_case "set-up: the committed tokenizer files and the corpus"
NAMES="qwen3 llama3 sentencepiece_legacy sentencepiece_metaspace"
for name in $NAMES; do
  unpack_tokenizer "$name" || t_fail "could not unpack $FIXTURES/$name/tokenizer.json.zst"
  sum=$(sha256sum "$MODELS/$name/tokenizer.json" 2>/dev/null | cut -d' ' -f1)
  [ "$sum" = "$(fact "$name.tokenizer_json_sha256")" ] ||
    t_fail "$FIXTURES/$name/tokenizer.json.zst is not the file the fixtures were made from (sha256 $sum)"
done
CORPUS="$T_ROOT/corpus.jsonl"
python3 "$FIXTURES/make_corpus.py" > "$CORPUS" || t_fail "make_corpus.py failed"
sum=$(sha256sum "$CORPUS" | cut -d' ' -f1)
[ "$sum" = "$(fact corpus_sha256)" ] || t_fail "the corpus is not the one the fixtures were made from (sha256 $sum)"
[ "$(wc -c < "$CORPUS")" -gt 1000000 ] || t_fail "the corpus is smaller than 1 MB"
t_end
# Every case below needs the set-up: its failure is reported once, above.
[ "$T_FAILED" = 0 ] || exit 1

for name in $NAMES; do
  MODEL="$MODELS/$name"
  zstd -qdc "$FIXTURES/expected_$name.ids.zst" > "$T_ROOT/$name.expected" 2>/dev/null

  t_case "$name: ids of every corpus line equal tokenizers' ($(fact "$name.n_tokens") tokens)"
  t_run sh -c '"$1" encode --tokenizer "$2" --jsonl < "$3" > "$4"' sh "$FTPIPE" "$MODEL" "$CORPUS" "$T_ROOT/$name.ids"
  t_expect_status 0
  if ! cmp -s "$T_ROOT/$name.ids" "$T_ROOT/$name.expected"; then
    line=$(cmp "$T_ROOT/$name.ids" "$T_ROOT/$name.expected" 2>&1 | sed -n 's/.* line \([0-9]*\).*/\1/p')
    t_fail "ids differ from line ${line:-?} on: $(sed -n "${line:-1}p" "$T_ROOT/$name.ids" | cut -c1-200)
expected:    $(sed -n "${line:-1}p" "$T_ROOT/$name.expected" | cut -c1-200)"
  fi
  t_end

  # where tokenizers' decoding is not the text (Metaspace "first" drops a leading space), its decodings
  WANTED="$CORPUS"
  [ -f "$FIXTURES/expected_$name.decoded.zst" ] && WANTED="$T_ROOT/$name.wanted" &&
    zstd -qdc "$FIXTURES/expected_$name.decoded.zst" > "$WANTED"
  t_case "$name: decoding the ids gives $([ "$WANTED" = "$CORPUS" ] && echo the text back || echo "tokenizers' text")$([ $name = qwen3 ] && echo ', in NFC')"
  t_run sh -c '"$1" decode --tokenizer "$2" --jsonl < "$3" > "$4"' sh "$FTPIPE" "$MODEL/tokenizer.json" \
    "$T_ROOT/$name.expected" "$T_ROOT/$name.decoded"
  t_expect_status 0
  differ=$(python3 -c 'import json, sys, unicodedata
nfc = sys.argv[3] == "qwen3"
corpus = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
decoded = [json.loads(l) for l in open(sys.argv[2], encoding="utf-8")]
wanted = [unicodedata.normalize("NFC", t) if nfc else t for t in corpus]
bad = [i + 1 for i, (a, b) in enumerate(zip(decoded, wanted)) if a != b]
print(" ".join(map(str, bad[:10])) if bad or len(decoded) == len(wanted) else "count")' \
    "$WANTED" "$T_ROOT/$name.decoded" "$name")
  [ -z "$differ" ] || t_fail "decoded text differs on lines: $differ"
  t_end
done

MODEL="$MODELS/qwen3"
t_case "encode without --jsonl: all of standard input is one text"
python3 -c 'import json, sys; sys.stdout.write(json.loads(open(sys.argv[1], encoding="utf-8").readline()))' \
  "$CORPUS" > "$T_ROOT/first.txt"
t_run sh -c '"$1" encode --tokenizer "$2" < "$3"' sh "$FTPIPE" "$MODEL" "$T_ROOT/first.txt"
t_expect_status 0
[ "$T_OUT" = "$(head -n 1 "$T_ROOT/qwen3.expected")" ] || t_fail "ids differ from the corpus's first line"
t_end

t_case "encode --threads 1 gives the same ids as all cores"
head -n 100 "$CORPUS" > "$T_ROOT/head.jsonl"
t_run sh -c '"$1" encode --tokenizer "$2" --jsonl --threads 1 < "$3"' sh "$FTPIPE" "$MODEL" "$T_ROOT/head.jsonl"
t_expect_status 0
[ "$T_OUT" = "$(head -n 100 "$T_ROOT/qwen3.expected")" ] || t_fail "ids differ with one thread"
t_end

t_case "encode refuses a line that is not a JSON string, naming the line"
t_run sh -c 'printf "\"ok\"\n42\n" | "$1" encode --tokenizer "$2" --jsonl' sh "$FTPIPE" "$MODEL"
t_expect_status 1
t_expect_contains "ftpipe: standard input line 2: expected a JSON string (\"text\"), found another JSON value"
t_end

t_case "encode refuses text that is not UTF-8"
t_run sh -c 'printf "ab\377" | "$1" encode --tokenizer "$2"' sh "$FTPIPE" "$MODEL"
t_expect_status 1
t_expect_contains "ftpipe: standard input: the text is not valid UTF-8 (at byte 2)"
t_end

t_case "decode refuses ids outside the vocabulary and words that are not ids"
t_run sh -c 'echo "9707 999999" | "$1" decode --tokenizer "$2"' sh "$FTPIPE" "$MODEL"
t_expect_status 1
t_expect_contains "ftpipe: standard input: token id 999999 is not in the vocabulary (151669 tokens)"
t_run sh -c 'echo "9707 x12" | "$1" decode --tokenizer "$2"' sh "$FTPIPE" "$MODEL"
t_expect_status 1
t_expect_contains "ftpipe: standard input: 'x12' is not a token id"
t_end

t_case "encode and decode name what is missing"
t_run "$FTPIPE" encode --jsonl
t_expect_status 1
t_expect_contains "ftpipe: encode: --tokenizer PATH is required (a tokenizer.json or a model folder)"
t_run "$FTPIPE" decode --tokenizer "$T_ROOT"
t_expect_status 1
t_expect_contains "ftpipe: $T_ROOT: the folder has no tokenizer.json"
t_end
