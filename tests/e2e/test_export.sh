#!/bin/sh
# The export kind after a real train stage on a tiny f32 model: the peft folder
# (names, shapes, adapter_config.json), the merged folder (whole and sharded), a tar.zst archive,
# a full fine-tune copied as f16, and the inputs it refuses.
. "$(dirname "$0")/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"

# A workspace that trains (LoRA, or the given finetuning_type) and adds the given stage lines.
export_workspace() { # FINETUNING_TYPE, then the export stages' text
  W=$(t_workspace)
  cp "$ROOT/examples/quickstart/make_addition_data.sh" "$W/"
  cat > "$W/Ftpipe" <<P
models/tiny: init
	dtype = f32
	threads = 1

data/train.json: shell make_addition_data.sh
	run = sh \$< train 32 > \$@

data/train_set: tokenize models/tiny data/train.json
	template = plain
	cutoff_len = 40
	threads = 1

adapter: train models/tiny data/train_set
	finetuning_type = $1
	threads = 1
	learning_rate = 1e-2
	per_device_train_batch_size = 4
	max_steps = 3
	lora_rank = 4
	lora_alpha = 8

$2
P
}

t_case "exports a peft folder, a merged model and a tar.zst archive"
export_workspace lora "export/peft: export adapter
	base_model_name_or_path = Qwen/Qwen2.5-0.5B

export/merged: export adapter models/tiny
	format = merged

export/merged_bf16: export adapter models/tiny
	format = merged
	dtype = bf16

export/merged_sharded: export adapter models/tiny
	format = merged
	max_shard_size = 64K

export/adapter.tar.zst: export adapter
	archive = tar.zst"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
python3 - "$W" <<'PY' || t_fail "the exported folders are not as peft and transformers expect"
import json, struct, sys
w = sys.argv[1]
def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return {k: v for k, v in json.loads(f.read(n)).items() if k != "__metadata__"}
config = json.load(open(w + "/export/peft/adapter_config.json"))
expected = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "use_rslora": False, "peft_type": "LORA",
            "task_type": "CAUSAL_LM", "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
            "base_model_name_or_path": "Qwen/Qwen2.5-0.5B", "auto_mapping": None, "revision": None,
            "loftq_config": {}, "megatron_config": None, "megatron_core": "megatron.core", "layer_replication": None}
for key, value in expected.items():
    assert config[key] == value, (key, config[key])
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
assert sorted(config["target_modules"]) == sorted(targets), config["target_modules"]
adapter = header(w + "/export/peft/adapter_model.safetensors")
model = json.load(open(w + "/models/tiny/config.json"))
base = header(w + "/models/tiny/model.safetensors")
names = set()
for layer in range(model["num_hidden_layers"]):
    for t in targets:
        group = "self_attn" if t in targets[:4] else "mlp"
        stem = "base_model.model.model.layers.%d.%s.%s" % (layer, group, t)
        out_features, in_features = base["model.layers.%d.%s.%s.weight" % (layer, group, t)]["shape"]
        assert adapter[stem + ".lora_A.weight"]["shape"] == [4, in_features], stem
        assert adapter[stem + ".lora_B.weight"]["shape"] == [out_features, 4], stem
        names |= {stem + ".lora_A.weight", stem + ".lora_B.weight"}
assert set(adapter) == names, set(adapter) ^ names
merged = header(w + "/export/merged/model.safetensors")
assert {k: (v["dtype"], v["shape"]) for k, v in merged.items()} == {k: (v["dtype"], v["shape"]) for k, v in base.items()}
bf16 = header(w + "/export/merged_bf16/model.safetensors")
assert all(v["dtype"] == "BF16" for v in bf16.values()) and set(bf16) == set(base)
assert json.load(open(w + "/export/merged_bf16/config.json"))["torch_dtype"] == "bfloat16"
for f in ["config.json", "tokenizer.json", "tokenizer_config.json"]:
    assert open(w + "/export/merged/" + f, "rb").read() == open(w + "/models/tiny/" + f, "rb").read(), f
# 64K = 65536 bytes: the embedding (259 x 64 f32, 66304 bytes) alone in the first shard
index = json.load(open(w + "/export/merged_sharded/model.safetensors.index.json"))
files = sorted(set(index["weight_map"].values()))
assert len(files) > 2 and files[0].startswith("model-00001-of-"), files
assert set(index["weight_map"]) == set(base), set(index["weight_map"]) ^ set(base)
assert set(header(w + "/export/merged_sharded/" + files[0])) == {"model.embed_tokens.weight"}
sharded = {}
for f in files:
    part = header(w + "/export/merged_sharded/" + f)
    assert f == files[0] or sum(v["data_offsets"][1] - v["data_offsets"][0] for v in part.values()) <= 65536, f
    sharded.update({k: (v["dtype"], v["shape"]) for k, v in part.items()})
assert sharded == {k: (v["dtype"], v["shape"]) for k, v in merged.items()}
PY
# The merged weights differ from the base's: the trained B is not zero.
cmp -s "$W/export/merged/model.safetensors" "$W/models/tiny/model.safetensors" && t_fail "merged weights equal the base's"
listing=$(tar --zstd -tf "$W/export/adapter.tar.zst" | tr '\n' ' ')
[ "$listing" = "adapter/ adapter/adapter_config.json adapter/adapter_model.safetensors " ] || t_fail "the archive lists: $listing"
mkdir "$W/unpacked" && tar --zstd -xf "$W/export/adapter.tar.zst" -C "$W/unpacked"
cmp -s "$W/unpacked/adapter/adapter_model.safetensors" "$W/adapter/adapter_model.safetensors" || t_fail "archived weights differ"
cp "$W/export/adapter.tar.zst" "$W/first.tar.zst"
rm "$W/export/adapter.tar.zst"
t_run "$FTPIPE" -C "$W" export/adapter.tar.zst
t_expect_status 0
t_expect_contains "export/adapter.tar.zst"
cmp -s "$W/export/adapter.tar.zst" "$W/first.tar.zst" || t_fail "the same export archived to other bytes"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_lacks "done     export/"
t_end

t_case "a full fine-tune exports as a model folder (here f16), not as an adapter"
export_workspace full "export/model: export adapter
	format = merged
	dtype = f16

export/model.tar.gz: export adapter
	format = merged
	archive = tar.gz"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
python3 - "$W" <<'PY' || t_fail "the full fine-tune's export is wrong"
import json, struct, sys
w = sys.argv[1]
with open(w + "/export/model/model.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
assert all(v["dtype"] == "F16" for k, v in header.items() if k != "__metadata__")
assert json.load(open(w + "/export/model/config.json"))["torch_dtype"] == "float16"
PY
listing=$(tar -tzf "$W/export/model.tar.gz" | tr '\n' ' ')
[ "$listing" = "model/ model/config.json model/model.safetensors model/tokenizer.json model/tokenizer_config.json " ] ||
  t_fail "the archive lists: $listing"
cat >> "$W/Ftpipe" <<'P'

export/peft: export adapter
P
t_run "$FTPIPE" -C "$W" export/peft
t_expect_fail
t_expect_contains "is a full fine-tune: it has no adapter to export; set format = merged"
t_end

t_case "refuses a merge without the base model, and an input that is no train output"
export_workspace lora "export/merged: export adapter
	format = merged

export/wrong: export models/tiny"
t_run "$FTPIPE" -C "$W" export/merged
t_expect_fail
t_expect_contains "needs the base model folder as the second input"
t_run "$FTPIPE" -C "$W" export/wrong
t_expect_fail
t_expect_contains "models/tiny is not a train output (it has no ftpipe_train.json)"
[ -e "$W/export/merged" ] || [ -e "$W/export/wrong" ] && t_fail "a failed export left an output"
t_end
