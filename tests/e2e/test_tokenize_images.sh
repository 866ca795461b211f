#!/bin/sh
# The tokenize stage on vision-language data (template qwen2_vl): LLaMA-Factory's
# mllm_demo and vision_edge (tests/fixtures/datasets, images from
# make_vision_data.py) give exactly the ids, labels and image grids LLaMA-Factory
# gives (expected_llamafactory.json, written by
# tests/oracle/check_llamafactory_images.py --write from its own encoding), on the
# committed Qwen3 tokenizer with a Qwen2-VL processor config; each split's
# images.bin holds each distinct image once; a rerun is a no-op and a changed
# image runs the stage again; and every mistake with images is refused with a
# message naming the file, record and image.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATASETS="$ROOT/tests/fixtures/datasets"
EXPECTED="$DATASETS/vision_edge/expected_llamafactory.json"

# A workspace with the model (tokenizer + preprocessor_config.json) and copies of the data.
vl_workspace() {
  W=$(t_workspace)
  mkdir "$W/model"
  zstd -qdc "$ROOT/tests/fixtures/tokenizer/qwen3/tokenizer.json.zst" > "$W/model/tokenizer.json" &&
    cp "$ROOT/tests/fixtures/tokenizer/qwen3/tokenizer_config.json" \
      "$ROOT/tests/fixtures/models/qwen2-vl-processor/preprocessor_config.json" "$W/model/" ||
    t_fail "could not make the model folder"
  cp -r "$DATASETS/llamafactory_data" "$W/data"
  cp -r "$DATASETS/vision_edge" "$W/edge"
}

t_case "ids, labels and image grids equal LLaMA-Factory's on mllm_demo and the edge cases"
vl_workspace
python3 "$ROOT/tests/e2e/expected_pipeline.py" "$EXPECTED" qwen2_vl > "$W/Ftpipe" || t_fail "could not write the pipeline"
t_run "$FTPIPE" -C "$W" -j 2
t_expect_status 0
python3 - "$EXPECTED" "$W" <<'PY' > "$T_ROOT/parity" 2>&1 || t_fail "$(cat "$T_ROOT/parity")"
import glob, hashlib, json, os, struct, sys
up = lambda offset: (offset + 63) // 64 * 64
def shard_rows(path):
    data = open(path, "rb").read()
    n_tokens, n_samples, n_rows = struct.unpack_from("<QQQ", data, 16)
    sample_at = 64
    row_at = up(sample_at + 8 * (n_samples + 1))
    ids_at = up(row_at + 8 * (n_rows + 1))
    mask_at = up(ids_at + 4 * n_tokens)
    samples = struct.unpack_from("<%dQ" % (n_samples + 1), data, sample_at)
    rows = struct.unpack_from("<%dQ" % (n_rows + 1), data, row_at)
    ids = struct.unpack_from("<%dI" % n_tokens, data, ids_at)
    mask = data[mask_at:mask_at + n_tokens]
    return [[(ids[samples[s]:samples[s + 1]], mask[samples[s]:samples[s + 1]]) for s in range(rows[r], rows[r + 1])]
            for r in range(n_rows)]
def store(path):  # include/ftpipe/formats/image_store.h
    data = open(path, "rb").read()
    magic, version, row_length, n_images, n_rows, n_samples, n_refs = struct.unpack_from("<8sIIQQQQ", data, 0)
    assert magic == b"FTIMAGES" and version == 2, path
    images_at = up(64 + 4 * n_rows * row_length)
    offsets_at = up(images_at + 40 * n_images)
    refs_at = up(offsets_at + 8 * (n_samples + 1))
    grids = [struct.unpack_from("<III", data, images_at + 40 * i + 16) for i in range(n_images)]
    hashes = {data[images_at + 40 * i:images_at + 40 * i + 16] for i in range(n_images)}
    offsets = struct.unpack_from("<%dQ" % (n_samples + 1), data, offsets_at)
    refs = struct.unpack_from("<%dI" % n_refs, data, refs_at)
    return [[list(grids[i]) for i in refs[offsets[s]:offsets[s + 1]]] for s in range(n_samples)], len(hashes), n_images
problems, checked = [], 0
for config, stages in json.load(open(sys.argv[1])).items():
    for stage, spec in stages.items():
        folder = os.path.join(sys.argv[2], "out", "%s__%s" % (config.replace(",", "_").replace("=", "_"), stage))
        rows = []
        for shard in sorted(glob.glob(os.path.join(folder, "train", "shard-*.bin"))):
            rows += shard_rows(shard)
        ours = [[[len(ids), hashlib.sha256(struct.pack("<%dI" % len(ids), *ids)).hexdigest(),
                  hashlib.sha256(struct.pack("<%di" % len(ids), *[t if m else -100 for t, m in zip(ids, mask)]))
                  .hexdigest()] for ids, mask in row] for row in rows]
        if ours != spec["rows"]:
            at = next(i for i, (a, b) in enumerate(zip(ours + [None] * 99, spec["rows"] + [None] * 99)) if a != b)
            problems.append("%s %s: row %d differs: %s, LLaMA-Factory %s" % (
                config, stage, at, ours[at] if at < len(ours) else None,
                spec["rows"][at] if at < len(spec["rows"]) else None))
        grids, distinct, stored = store(os.path.join(folder, "train", "images.bin"))
        if distinct != stored:
            problems.append("%s %s: %d images stored, %d distinct" % (config, stage, stored, distinct))
        if spec["grids"] is not None and grids != spec["grids"]:
            problems.append("%s %s: grids %s, LLaMA-Factory %s" % (config, stage, grids, spec["grids"]))
        checked += sum(len(row) for row in ours)
print("%d samples checked" % checked)
sys.exit(1 if problems else 0)
PY
[ -s "$T_ROOT/parity" ] && grep -q "samples checked" "$T_ROOT/parity" || t_fail "no parity result: $(cat "$T_ROOT/parity")"
grep -q '"vision_processor": "qwen2_vl"' "$W/out/defaults__edge/meta.json" || t_fail "meta.json lacks the vision processor"
# vision_edge: large, tiny, wide and square, square_again being square's bytes
grep -q '"images": 4' "$W/out/defaults__edge/meta.json" || t_fail "expected 4 distinct images: $(cat "$W/out/defaults__edge/meta.json")"
t_end

t_case "a rerun is a no-op; a changed image runs the stage again"
vl_workspace
printf 'out: tokenize model edge\n\ttemplate = qwen2_vl\n\tdataset = edge_sharegpt\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "1 up to date"
tokens_before=$(grep '"tokens"' "$W/out/meta.json")
cp "$W/edge/images/large.jpg" "$W/edge/images/square.png"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "1 run"
# square.png now has large.jpg's bytes (and so its tokens); square_again.png keeps the square
grep -q '"images": 4' "$W/out/meta.json" || t_fail "expected 4 distinct images: $(cat "$W/out/meta.json")"
[ "$(grep '"tokens"' "$W/out/meta.json")" != "$tokens_before" ] || t_fail "the token count did not change"
t_end

t_case "mistakes with images are refused naming the file, record and image"
vl_workspace
printf 'out: tokenize model data\n\ttemplate = qwen\n\tdataset = mllm_demo\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "mllm_demo.json: record 1: the record is multimodal (\"images\"): ftpipe reads images only in the tokenize stage with a vision-language template (qwen2_vl; llava or llama3 with a LLaVA model)"
# a dataset file given alone: its images are in no input folder, so not in the key
printf 'out: tokenize model edge/edge_sharegpt.json\n\ttemplate = qwen2_vl\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "edge/images/large.jpg is not inside an input folder of out, so a change to it would not make the stage run again"
# a corrupt image fails its records, or with on_error = skip is skipped
printf 'not a picture' > "$W/edge/images/tiny.png"
printf 'out: tokenize model edge\n\ttemplate = qwen2_vl\n\tdataset = edge_sharegpt\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "edge_sharegpt.json: record 2: image 1:"
t_expect_contains "tiny.png"
printf 'out: tokenize model edge\n\ttemplate = qwen2_vl\n\tdataset = edge_sharegpt\n\ton_error = skip\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
grep -q '"skipped_records": 1' "$W/out/meta.json" || t_fail "expected 1 skipped record: $(cat "$W/out/meta.json")"
# an image gone, a placeholder too many
cp "$DATASETS/vision_edge/images/tiny.png" "$W/edge/images/tiny.png"
python3 - "$W/edge/edge_sharegpt.json" <<'PY'
import json, sys
records = json.load(open(sys.argv[1]))
records[0]["images"] = ["images/gone.jpg"]
records[3]["messages"][0]["content"] += "<image>"
json.dump(records, open(sys.argv[1], "w"))
PY
t_run "$FTPIPE" -C "$W"
t_expect_status 0
grep -q '"skipped_records": 2' "$W/out/meta.json" || t_fail "expected 2 skipped records: $(cat "$W/out/meta.json")"
printf 'out: tokenize model edge\n\ttemplate = qwen2_vl\n\tdataset = edge_sharegpt\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "edge_sharegpt.json: record 1: image 1 'images/gone.jpg' is not a file, neither in the dataset folder"
# images cut by cutoff_len; no processor config
cp "$DATASETS/vision_edge/edge_sharegpt.json" "$W/edge/"
printf 'out: tokenize model edge\n\ttemplate = qwen2_vl\n\tdataset = edge_sharegpt\n\tcutoff_len = 40\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "edge_sharegpt.json: record 1: its image takes"
t_expect_contains "an image cut short cannot be read; raise cutoff_len or lower image_max_pixels"
rm "$W/model/preprocessor_config.json"
printf 'out: tokenize model edge\n\ttemplate = qwen2_vl\n\tdataset = edge_sharegpt\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "has no preprocessor_config.json: images are preprocessed as the model's processor says"
t_end

t_case "train refuses tokenized data with images for a text-only model"
vl_workspace
cp "$ROOT/tests/fixtures/models/qwen2.5-0.5b/config.json" "$W/model/"
printf 'out: tokenize model edge\n\ttemplate = qwen2_vl\n\tdataset = edge_sharegpt\n\nadapter: train model out\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" adapter
t_expect_fail
t_expect_contains "holds images (tokenized for qwen2_vl), but"
t_expect_contains "is a text-only model (Qwen2ForCausalLM), which would learn from image placeholder tokens"
t_end
