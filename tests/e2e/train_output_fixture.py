"""Writes train-output folders as the train stage lays them out, for testing
the kinds that read them without training:
  python3 train_output_fixture.py lora MODEL_DIR OUT_DIR TEMPLATE TOKENIZER_HASH
      a LoRA adapter on q_proj and v_proj with seeded random A and B
  python3 train_output_fixture.py full MODEL_DIR OUT_DIR TEMPLATE TOKENIZER_HASH
      MODEL_DIR copied as the fine-tuned model
Both add ftpipe_train.json."""
import json
import os
import random
import shutil
import struct
import sys


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, (shape, values) in tensors.items():
        blob = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def write_lora(model_dir, out_dir, rank=4):
    config = json.load(open(os.path.join(model_dir, "config.json")))
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    widths = {"q_proj": config["num_attention_heads"] * head_dim, "v_proj": config["num_key_value_heads"] * head_dim}
    draw = random.Random(7)
    tensors = {}
    for layer in range(layers):
        for target, out_features in widths.items():
            prefix = "base_model.model.model.layers.%d.self_attn.%s" % (layer, target)
            tensors[prefix + ".lora_A.weight"] = ([rank, hidden], [draw.uniform(-0.5, 0.5) for _ in range(rank * hidden)])
            tensors[prefix + ".lora_B.weight"] = ([out_features, rank],
                                                  [draw.uniform(-0.5, 0.5) for _ in range(out_features * rank)])
    os.makedirs(out_dir)
    write_safetensors(os.path.join(out_dir, "adapter_model.safetensors"), tensors)
    json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0,
               "target_modules": list(widths), "use_rslora": False},
              open(os.path.join(out_dir, "adapter_config.json"), "w"))


def main():
    kind, model_dir, out_dir, template, tokenizer_hash = sys.argv[1:6]
    if kind == "lora":
        write_lora(model_dir, out_dir)
    else:
        shutil.copytree(model_dir, out_dir)
    json.dump({"finetuning_type": kind, "template": template, "tokenizer_hash": tokenizer_hash, "cutoff_len": 64,
               "base_model": os.path.basename(model_dir), "global_step": 1},
              open(os.path.join(out_dir, "ftpipe_train.json"), "w"))


main()
