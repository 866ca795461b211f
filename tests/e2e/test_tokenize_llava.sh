#!/bin/sh
# The tokenize stage with LLaVA images: templates llava (LLaVA-1.5) and llama3
# (LLaVA-Llama-3) on a LlavaForConditionalGeneration folder give exactly the ids
# and labels LLaMA-Factory's LlavaPlugin gives (expected_llava.json, written by
# tests/oracle/check_llamafactory_llava.py --write from its own encoding: each
# <image> 576 image tokens), on the committed Llama 3 tokenizer with <image>
# added and llava-hf's configs (tests/fixtures/models/llava-processor); each
# split's images.bin holds each distinct image once as one CLIP row of
# 3 x 336 x 336; and the mismatches of template and model are refused.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATASETS="$ROOT/tests/fixtures/datasets"
PROCESSOR="$ROOT/tests/fixtures/models/llava-processor"
EXPECTED="$DATASETS/vision_edge/expected_llava.json"

llava_workspace() {
  W=$(t_workspace)
  mkdir "$W/model"
  zstd -qdc "$ROOT/tests/fixtures/tokenizer/llama3/tokenizer.json.zst" > "$W/model/tokenizer.json" &&
    python3 "$PROCESSOR/add_image_token.py" "$W/model/tokenizer.json" &&
    cp "$ROOT/tests/fixtures/tokenizer/llama3/tokenizer_config.json" "$PROCESSOR/config.json" \
      "$PROCESSOR/preprocessor_config.json" "$PROCESSOR/processor_config.json" "$W/model/" ||
    t_fail "could not make the model folder"
  cp -r "$DATASETS/llamafactory_data" "$W/data"
  cp -r "$DATASETS/vision_edge" "$W/edge"
}

t_case "ids and labels equal LLaMA-Factory's LlavaPlugin with templates llava and llama3"
llava_workspace
python3 "$ROOT/tests/e2e/expected_pipeline.py" "$EXPECTED" > "$W/Ftpipe" || t_fail "could not write the pipeline"
t_run "$FTPIPE" -C "$W" -j 2
t_expect_status 0
python3 - "$EXPECTED" "$W" <<'PY' > "$T_ROOT/parity" 2>&1 || t_fail "$(cat "$T_ROOT/parity")"
import glob, hashlib, json, os, struct, sys
up = lambda offset: (offset + 63) // 64 * 64
def shard_samples(path):
    data = open(path, "rb").read()
    n_tokens, n_samples = struct.unpack_from("<QQ", data, 16)
    n_rows = struct.unpack_from("<Q", data, 32)[0]
    ids_at = up(up(64 + 8 * (n_samples + 1)) + 8 * (n_rows + 1))
    samples = struct.unpack_from("<%dQ" % (n_samples + 1), data, 64)
    ids = struct.unpack_from("<%dI" % n_tokens, data, ids_at)
    mask = data[up(ids_at + 4 * n_tokens):up(ids_at + 4 * n_tokens) + n_tokens]
    return [(ids[samples[s]:samples[s + 1]], mask[samples[s]:samples[s + 1]]) for s in range(n_samples)]
def store(path):  # include/ftpipe/formats/image_store.h
    data = open(path, "rb").read()
    magic, version, row_length, n_images, n_rows, n_samples, n_refs, layout = struct.unpack_from("<8sIIQQQQI", data)
    assert magic == b"FTIMAGES" and version == 2 and layout == 1, (path, version, layout)
    assert row_length == 3 * 336 * 336 and n_rows == n_images, (row_length, n_rows, n_images)
    images_at = up(64 + 4 * n_rows * row_length)
    grids = {struct.unpack_from("<III", data, images_at + 40 * i + 16) for i in range(n_images)}
    assert grids <= {(1, 336, 336)}, grids
    offsets_at = up(images_at + 40 * n_images)
    offsets = struct.unpack_from("<%dQ" % (n_samples + 1), data, offsets_at)
    return [offsets[s + 1] - offsets[s] for s in range(n_samples)]
digest = lambda values, code: hashlib.sha256(struct.pack("<%d%s" % (len(values), code), *values)).hexdigest()
problems, checked = [], 0
for config, stages in json.load(open(sys.argv[1])).items():
    for stage, spec in stages.items():
        folder = os.path.join(sys.argv[2], "out", "%s__%s" % (config.replace(",", "_").replace("=", "_"), stage))
        samples = []
        for shard in sorted(glob.glob(os.path.join(folder, "train", "shard-*.bin"))):
            samples += shard_samples(shard)
        ours = [[[len(ids), digest(ids, "I"), digest([t if m else -100 for t, m in zip(ids, mask)], "i")]]
                for ids, mask in samples]
        if ours != spec["rows"]:
            at = next(i for i, (a, b) in enumerate(zip(ours + [None] * 99, spec["rows"] + [None] * 99)) if a != b)
            problems.append("%s %s: sample %d differs: %s, LLaMA-Factory %s" % (config, stage, at, ours[at:at + 1],
                                                                                spec["rows"][at:at + 1]))
        images = store(os.path.join(folder, "train", "images.bin"))
        if images != spec["images"]:
            problems.append("%s %s: images per sample %s, LLaMA-Factory %s" % (config, stage, images, spec["images"]))
        if sum(ids.count(128256) for ids, _ in samples) != 576 * sum(images):
            problems.append("%s %s: not 576 image tokens an image" % (config, stage))
        checked += len(samples)
print("%d samples checked" % checked)
print("\n".join(problems))
sys.exit(1 if problems else 0)
PY
grep -q "samples checked" "$T_ROOT/parity" || t_fail "no parity result: $(cat "$T_ROOT/parity")"
grep -q '"vision_processor": "clip"' "$W/out/llava__edge/meta.json" || t_fail "meta.json lacks the vision processor"
grep -q '"images": 4' "$W/out/llava__edge/meta.json" || t_fail "expected 4 distinct images: $(cat "$W/out/llava__edge/meta.json")"
t_end

t_case "a rerun is a no-op"
llava_workspace
printf 'out: tokenize model edge\n\ttemplate = llava\n\tdataset = edge_sharegpt\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "1 up to date"
t_end

t_case "templates and models that do not go together are refused"
llava_workspace
printf 'out: tokenize model edge\n\ttemplate = qwen2_vl\n\tdataset = edge_sharegpt\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "the chat template qwen2_vl does not take a LLaVA model's images: use llava (LLaVA-1.5) or llama3 (LLaVA with a Llama 3 language model)"
printf 'out: tokenize model edge\n\ttemplate = llava\n\tdataset = edge_sharegpt\n' > "$W/Ftpipe"
cp "$ROOT/tests/fixtures/models/llama-3-8b/config.json" "$W/model/"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "template llava is for LLaVA models, but $W/model/config.json is not a LlavaForConditionalGeneration"
cp "$PROCESSOR/config.json" "$W/model/"
sed 's/"height": 336/"height": 224/' "$PROCESSOR/preprocessor_config.json" > "$W/model/preprocessor_config.json"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "the processor crops images to 336 x 224, but the vision tower reads 336 x 336"
sed 's/"resample": 3/"resample": 2/' "$PROCESSOR/preprocessor_config.json" > "$W/model/preprocessor_config.json"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "preprocessor_config.json: \"resample\" must be 3 (bicubic), the only resampling ftpipe computes"
t_end

t_case "init's tiny-llava tokenizes LLaVA data: 576 <image> tokens an image, one CLIP row each"
W=$(t_workspace)
cp -r "$DATASETS/llamafactory_data" "$W/data"
printf 'model: init\n\tshape = tiny-llava\n\tdtype = f32\n\nout: tokenize model data\n\ttemplate = llava\n\tdataset = mllm_demo\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "LlavaForConditionalGeneration with LlamaForCausalLM: 2 layers, hidden 64, vocab 260"
grep -q '"vision_processor": "clip"' "$W/out/meta.json" || t_fail "meta.json lacks the vision processor: $(cat "$W/out/meta.json")"
grep -q '"image_token_index": 259' "$W/model/config.json" || t_fail "config.json: $(cat "$W/model/config.json")"
python3 - "$W/out/train" <<'PY' || t_fail "the image tokens are not 576 an image"
import glob, struct, sys
images = open(sys.argv[1] + "/images.bin", "rb").read()
n_refs = struct.unpack_from("<Q", images, 40)[0]
tokens = 0
for shard in glob.glob(sys.argv[1] + "/shard-*.bin"):
    data = open(shard, "rb").read()
    n_tokens, n_samples, n_rows = struct.unpack_from("<QQQ", data, 16)
    up = lambda offset: (offset + 63) // 64 * 64
    ids_at = up(up(64 + 8 * (n_samples + 1)) + 8 * (n_rows + 1))
    tokens += struct.unpack_from("<%dI" % n_tokens, data, ids_at).count(259)
sys.exit(0 if n_refs > 0 and tokens == 576 * n_refs else 1)
PY
printf 'model: init\n\tshape = llava-13b\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" model
t_expect_fail
t_expect_contains "unknown model shape 'llava-13b'; known: tiny, qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b, qwen2.5-14b, llama3-8b, tiny-qwen2-vl, qwen2-vl-2b, tiny-qwen2.5-vl, qwen2.5-vl-3b, qwen2.5-vl-7b; LLaVA: tiny-llava, llava-1.5-7b, llava-llama3-8b"
t_end

t_case "init's tiny-llava -> tokenize -> LoRA train -> evaluate -> export (peft, merged), with PEFT's names"
W=$(t_workspace)
cp -r "$DATASETS/llamafactory_data" "$W/data"
cat > "$W/Ftpipe" <<'P'
model: init
	shape = tiny-llava
	dtype = f32

tokens: tokenize model data
	template = llava
	dataset = mllm_demo
	cutoff_len = 2048

adapter: train model tokens
	finetuning_type = lora
	lora_rank = 4
	lora_alpha = 8
	lora_target = all
	learning_rate = 1e-3
	max_steps = 3
	per_device_train_batch_size = 2
	backend = cpu

report: evaluate model adapter data
	dataset = mllm_demo
	cutoff_len = 2048
	max_new_tokens = 4
	compare_base = true
	backend = cpu

export/peft: export adapter

export/merged: export adapter model
	format = merged
P
t_run "$FTPIPE" -C "$W" report export/peft export/merged
t_expect_status 0
t_expect_contains "done     adapter"
t_expect_contains "after 3 steps"
t_expect_contains "eval_loss"
t_expect_contains "done     export/merged"
head -c 8192 "$W/export/merged/model.safetensors" | grep -q 'vision_tower' ||
  t_fail "the merged model lacks the vision tower"
head -c 4096 "$W/adapter/adapter_model.safetensors" |
  grep -q 'base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight' ||
  t_fail "the adapter lacks PEFT's names for LLaVA's language model"
grep -q 'vision_tower|multi_modal_projector' "$W/adapter/adapter_config.json" ||
  t_fail "target_modules does not leave the tower and projector alone: $(cat "$W/adapter/adapter_config.json")"
sed 's/	finetuning_type = lora/	finetuning_type = lora\n	freeze_vision_tower = false/' "$W/Ftpipe" > "$W/Ftpipe.new" &&
  mv "$W/Ftpipe.new" "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" adapter
t_expect_fail
t_expect_contains "freeze_vision_tower = false is not supported yet"
t_end

t_case "config.json's image token must be the tokenizer's <image>"
llava_workspace
printf 'out: tokenize model edge\n\ttemplate = llava\n\tdataset = edge_sharegpt\n' > "$W/Ftpipe"
sed 's/"image_token_index": 128256/"image_token_index": 32000/' "$PROCESSOR/config.json" > "$W/model/config.json"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "model: config.json's image token is 32000, but the tokenizer's <image> is 128256: use the tokenizer that came with the model"
t_end
