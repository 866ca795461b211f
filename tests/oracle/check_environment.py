"""The oracle environment is the pinned one, and each reference in it works on
this CPU: every package of tests/oracle/requirements*.txt is installed at its
pinned version, and torch, transformers, peft, tokenizers, safetensors, Pillow,
LLaMA-Factory's data code and DeepSpeed's config code each do one small thing."""
import importlib.metadata
import io
import os
import re
import sys

import oracle

os.environ["DISABLE_VERSION_CHECK"] = "1"  # llamafactory's declared range: requirements.txt says why


def pins():
    found = {}
    for name in ("requirements.txt", "requirements-source.txt"):
        for line in open(os.path.join(os.path.dirname(__file__), name)):
            match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
            if match:
                found[match.group(1)] = match.group(2)
    return found


def torch_forward():
    import torch
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 4)
    out = layer(torch.randn(2, 16))
    return "%s: a linear layer's forward on the CPU, output %s" % (torch.__version__, tuple(out.shape))


def tiny_transformer():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    return "a one-layer Qwen2 forward, logits %s" % (tuple(logits.shape),)


def peft_wraps():
    import peft
    import torch
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["0"]))
    n = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    return "LoRA on a linear layer, %d trainable parameters" % n


def tokenizers_encode():
    import tokenizers
    folder = oracle.scratch_folder("environment")
    try:
        oracle.unpack_tokenizer("qwen3", folder)
        ids = tokenizers.Tokenizer.from_file(os.path.join(folder, "tokenizer.json")).encode("Hello").ids
    finally:
        oracle.remove_scratch(folder)
    return "Qwen3 encodes 'Hello' as %s" % ids


def safetensors_round_trip():
    import numpy as np
    from safetensors.numpy import load, save
    back = load(save({"x": np.arange(4, dtype=np.float32)}))["x"]
    return "a round trip of %s" % back.tolist()


def pillow_png():
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (10, 20, 30)).save(buffer, format="PNG")
    image = Image.open(io.BytesIO(buffer.getvalue()))
    return "a PNG written and read back, %s %s" % (image.mode, image.size)


def llamafactory_data():
    from llamafactory.data.template import TEMPLATES
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor  # noqa: F401
    return "its data code imports, %d templates" % len(TEMPLATES)


def deepspeed_config():
    import deepspeed
    from deepspeed.runtime.config import DeepSpeedConfig
    config = DeepSpeedConfig({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4,
                              "gradient_accumulation_steps": 2, "zero_optimization": {"stage": 2}})
    return "%s: a config read, ZeRO stage %d" % (deepspeed.__version__, config.zero_optimization_stage)


def main():
    cases = oracle.Cases()
    wrong = []
    wanted = pins()
    for name, version in sorted(wanted.items()):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong.append("%s: pinned %s, installed %s" % (name, version, installed or "none"))
    cases.check("environment: pinned versions", not wrong,
                "%d packages at their pinned versions" % len(wanted) if not wrong else
                "%d packages differ from their pins (make oracles rebuilds the environment)" % len(wrong), wrong)
    for reference, use in (("torch", torch_forward), ("transformers", tiny_transformer), ("peft", peft_wraps),
                           ("tokenizers", tokenizers_encode), ("safetensors", safetensors_round_trip),
                           ("Pillow", pillow_png), ("llamafactory", llamafactory_data), ("deepspeed", deepspeed_config)):
        name = "environment: " + reference
        try:
            cases.ok(name, use())
        except Exception as error:  # report every reference that fails, not only the first
            cases.fail(name, "%s: %s" % (type(error).__name__, error))
    return cases.finish()


if __name__ == "__main__":
    sys.exit(main())
