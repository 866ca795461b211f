#!/bin/sh
# LLaMA-Factory's own data folder (tests/fixtures/datasets/llamafactory_data:
# its dataset_info.json as it is and excerpts of its demo files, made by
# make_excerpts.py): every entry is tokenized, and each either works or is
# refused with the reason, never with advice that would mis-train; its
# pretraining demo data (c4_demo, wiki_demo) with stage = pt gives exactly
# LLaMA-Factory's blocks (expected_pretraining.json, made by
# tests/oracle/check_llamafactory_pretraining.py --write from its own
# preprocessing) on the committed Qwen3 and Llama 3 tokenizers.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA="$ROOT/tests/fixtures/datasets/llamafactory_data"
TOKENIZERS="$ROOT/tests/fixtures/tokenizer"

t_case "every entry of LLaMA-Factory's dataset_info.json works or is refused with its reason"
W=$(t_workspace)
cp -r "$ROOT/tests/fixtures/datasets/byte_model" "$W/model"
python3 - "$DATA/dataset_info.json" > "$W/Ftpipe" <<'EOF' || t_fail "could not write the pipeline"
import json, sys
for name in json.load(open(sys.argv[1])):
    print(f"out/{name}: tokenize model data\n\ttemplate = qwen\n\tdataset = {name}\n")
EOF
ln -s "$DATA" "$W/data"
t_run "$FTPIPE" -C "$W" -k -j 2
t_expect_fail
printf '%s\n' "$T_OUT" > "$W/run.log"
python3 - "$DATA/dataset_info.json" "$W" <<'EOF' > "$T_ROOT/verdicts" 2>&1 || t_fail "$(cat "$T_ROOT/verdicts")"
import json, os, sys
info = json.load(open(sys.argv[1]))
# Each entry's outcome: its output folder, or the reason in its failure line.
reasons = {  # what a refusal must name, by kind of entry
    "hub": "comes from a hub",
    "tools": "tool (function) definitions",
    "multimodal": "is multimodal",
    "ranking": "is ranking (preference) data",
    "kto": "is KTO data",
    "text": "stage = pt",
}
def kind(entry):
    if "file_name" not in entry:
        return "hub"
    columns = entry.get("columns", {})
    if entry.get("ranking"):
        return "ranking"
    if "kto_tag" in columns:
        return "kto"
    if "tools" in columns:
        return "tools"
    if {"images", "videos", "audios"} & set(columns):
        return "multimodal"
    if "response" not in columns and "messages" not in columns and columns.get("prompt") == "text":
        return "text"
    return "works"
output = open(os.path.join(sys.argv[2], "run.log")).read()
problems, counts = [], {}
for name, entry in info.items():
    expected = kind(entry)
    counts[expected] = counts.get(expected, 0) + 1
    built = os.path.isfile(os.path.join(sys.argv[2], "out", name, "meta.json"))
    failure = [line for line in output.splitlines() if line.startswith("FAILED") and f" out/{name}:" in line]
    if expected == "works":
        if not built:
            problems.append(f"{name}: expected to tokenize, got {failure or 'nothing'}")
        continue
    if built or not failure:
        problems.append(f"{name}: expected a refusal naming '{reasons[expected]}', but it {'built' if built else 'left no FAILED line'}")
    elif reasons[expected] not in failure[0]:
        problems.append(f"{name}: the refusal does not name '{reasons[expected]}': {failure[0]}")
    elif "remove" in failure[0]:
        problems.append(f"{name}: the refusal advises removing something: {failure[0]}")
print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
if problems or counts.get("works", 0) < 3:
    print("\n".join(problems) or "fewer than 3 entries work")
    sys.exit(1)
EOF
t_end

t_case "pretraining (stage = pt) on LLaMA-Factory's c4_demo and wiki_demo gives its blocks"
for name in qwen3 llama3; do
  mkdir -p "$T_ROOT/models/$name" &&
    zstd -qdc "$TOKENIZERS/$name/tokenizer.json.zst" > "$T_ROOT/models/$name/tokenizer.json" &&
    cp "$TOKENIZERS/$name/tokenizer_config.json" "$T_ROOT/models/$name/" || t_fail "could not unpack the $name tokenizer"
done
W=$(t_workspace)
python3 - "$DATA/expected_pretraining.json" "$T_ROOT/models" "$DATA" > "$W/Ftpipe" <<'EOF'
import json, sys
for case, spec in json.load(open(sys.argv[1])).items():
    print(f"{case}: tokenize {sys.argv[2]}/{spec['tokenizer']} {sys.argv[3]}\n\tstage = pt\n"
          f"\ttemplate = {spec['template']}\n\tdataset = {spec['dataset']}\n\tcutoff_len = {spec['cutoff_len']}\n")
EOF
t_run "$FTPIPE" -C "$W"
t_expect_status 0
python3 - "$DATA/expected_pretraining.json" "$W" <<'EOF' > "$T_ROOT/pt" 2>&1 || t_fail "$(cat "$T_ROOT/pt")"
import hashlib, json, os, struct, sys
problems = []
for case, spec in json.load(open(sys.argv[1])).items():
    ids, masks, n_blocks = b"", b"", 0
    split = os.path.join(sys.argv[2], case, "train")
    for shard in sorted(os.listdir(split)):
        data = open(os.path.join(split, shard), "rb").read()
        n_tokens, n_samples, n_rows = struct.unpack_from("<QQQ", data, 16)
        up = lambda offset, size: (offset + size + 63) // 64 * 64
        ids_at = up(up(64, 8 * (n_samples + 1)), 8 * (n_rows + 1))
        ids += data[ids_at:ids_at + 4 * n_tokens]
        mask_at = up(ids_at, 4 * n_tokens)
        masks += data[mask_at:mask_at + n_tokens]
        n_blocks += n_samples
    first = list(struct.unpack_from(f"<{spec['cutoff_len']}I", ids)) if len(ids) >= 4 * spec["cutoff_len"] else []
    if n_blocks != spec["n_blocks"]:
        problems.append(f"{case}: {n_blocks} blocks, LLaMA-Factory made {spec['n_blocks']}")
    elif first != spec["first_block"]:
        at = next((i for i, (a, b) in enumerate(zip(first, spec["first_block"])) if a != b), None)
        problems.append(f"{case}: the first block differs at token {at}")
    elif hashlib.sha256(ids).hexdigest() != spec["ids_sha256"]:
        problems.append(f"{case}: a later block differs from LLaMA-Factory's")
    elif set(masks) != {1}:
        problems.append(f"{case}: not every token is trained on")
print("\n".join(problems))
sys.exit(1 if problems else 0)
EOF
t_end

t_case "pretraining refuses conversations and says when there is too little text"
W=$(t_workspace)
cp -r "$ROOT/tests/fixtures/datasets/byte_model" "$W/model"
printf 'out: tokenize model %s\n\tstage = pt\n\ttemplate = qwen\n\tdataset = alpaca_demo, openai\n' \
  "$ROOT/tests/fixtures/datasets/llamafactory" > "$W/Ftpipe"
printf 'one line\n\ntwo\r\nthree' > "$W/short.txt"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "dataset 'openai' holds sharegpt conversations, but pretraining (stage = pt) reads texts"
printf 'out: tokenize model short.txt\n\tstage = pt\n\ttemplate = qwen\n\tcutoff_len = 4000\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
# 4 lines (one empty), each followed by <|im_end|>: 8 + 1 + 0 + 1 + 3 + 1 + 5 + 1 bytes and tokens
t_expect_contains "the texts hold 20 tokens, less than one block of cutoff_len = 4000"
printf 'out: tokenize model short.txt\n\tstage = pt\n\ttemplate = qwen\n\tcutoff_len = 6\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains ": 3 samples, 18 tokens"
t_end
