#!/usr/bin/env python3
"""The peer of tests/bench/cuda_vs_torch.sh: PyTorch + transformers + PEFT on
the GPU, doing what ftpipe's side (cuda_vs_torch.c) does.

    python3 cuda_vs_torch.py train MODEL_DIR BATCH SEQ STEPS [--recompute] [--peer P] [--device D]
    python3 cuda_vs_torch.py load MODEL_DIR
    python3 cuda_vs_torch.py generate MODEL_DIR BATCH PROMPT NEW [--peer P] [--device D]

train: a random-init model from MODEL_DIR/config.json in bf16, sdpa attention;
LoRA r=8, alpha=16, no dropout, all seven projections; AdamW at lr 1e-4;
random tokens, every position a target; two warm-up steps, then STEPS timed
ones. --recompute turns on gradient checkpointing. The peer (--peer) is one of
  peft        PEFT as it comes: the adapter in float (its default autocast of
              adapter weights), torch.optim.AdamW's default implementation;
  peft-bf16   the adapter in bf16 too (autocast_adapter_dtype=False), AdamW
              with fused=True: what a careful user does first;
  compiled    peft-bf16 under torch.compile (the whole model), and a fused
              linear + cross-entropy when one is installed (Liger's; the JSON
              line says whether it was).
Prints one JSON line: tokens per second, seconds per step, peak device memory
(torch.cuda.max_memory_allocated), first and last loss, the peer's name.

load: from_pretrained(MODEL_DIR, bf16, device_map="cuda") once CUDA is
started, until the weights are on the GPU. generate: greedy generate() of BATCH
random prompts of PROMPT tokens and exactly NEW new ones each (min_new_tokens,
no stop token), after a short warm-up run, with the model's KV cache; the peer
is `dynamic` (transformers' default cache) or `static` (its static cache with
the forward under torch.compile, as transformers' guide to fast generation
does). Each prints one JSON line.

--device cpu runs any of it on the CPU (a smoke test of the script itself with
a tiny model: tests/oracle/check_bench_peer.py); memory is then not measured.
"""
import json
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

WARMUP_STEPS = 2
TRAIN_PEERS = ("peft", "peft-bf16", "compiled")
GENERATE_PEERS = ("dynamic", "static")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def peak_bytes(device):
    return torch.cuda.max_memory_allocated() if device == "cuda" else None


def make_model(model_dir, device):
    config = AutoConfig.from_pretrained(model_dir)
    config.use_cache = False
    torch.manual_seed(0)
    with torch.device(device):
        try:
            return AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
        except TypeError:  # transformers before 4.56 names it torch_dtype
            return AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16, attn_implementation="sdpa")


def fused_linear_cross_entropy(model):
    """Liger's fused linear + cross-entropy in place of lm_head and the loss, when
    the liger_kernel package is installed; False when it is not."""
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
    except ImportError:
        return False
    _apply_liger_kernel_to_instance(model=model, fused_linear_cross_entropy=True, cross_entropy=False)
    return True


def train(model_dir, batch, seq, steps, recompute, peer, device):
    model = make_model(model_dir, device)
    fused_loss = peer == "compiled" and fused_linear_cross_entropy(model)
    if recompute:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora, autocast_adapter_dtype=peer == "peft")
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    fused = peer != "peft" and device == "cuda"
    optimizer = torch.optim.AdamW(trained, lr=1e-4, weight_decay=0.0, fused=fused or None)
    forward = torch.compile(model) if peer == "compiled" else model
    generator = torch.Generator(device=device).manual_seed(7)
    tokens = torch.randint(0, model.config.vocab_size, (batch, seq), device=device, generator=generator)

    losses = []
    started = None
    for step in range(WARMUP_STEPS + steps):
        if step == WARMUP_STEPS:
            synchronize(device)
            started = time.perf_counter()
        loss = forward(input_ids=tokens, labels=tokens).loss  # transformers shifts the labels
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    synchronize(device)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "peer": peer,
        "adapter_dtype": str(trained[0].dtype).replace("torch.", ""),
        "fused_linear_cross_entropy": fused_loss,
        "tokens_per_second": round(batch * seq * steps / seconds, 1),
        "step_seconds": round(seconds / steps, 4),
        "peak_bytes": peak_bytes(device),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
    }))


def load(model_dir):
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    started = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cuda")
    except TypeError:  # transformers before 4.56 names it torch_dtype
        model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16, device_map="cuda")
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({
        "load_seconds": round(seconds, 3),
        "weight_bytes": weight_bytes,
        "gb_per_second": round(weight_bytes / seconds * 1e-9, 2),
    }))


def generate(model_dir, batch, prompt, new_tokens, peer, device):
    model = make_model(model_dir, device)
    model.eval()
    model.config.use_cache = True
    options = {}
    if peer == "static":
        options["cache_implementation"] = "static"
        model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    generator = torch.Generator(device=device).manual_seed(11)
    prompts = torch.randint(0, model.config.vocab_size, (batch, prompt), device=device, generator=generator)
    mask = torch.ones_like(prompts)

    def run(count):
        synchronize(device)
        started = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=prompts, attention_mask=mask, do_sample=False, max_new_tokens=count,
                                 min_new_tokens=count, eos_token_id=None, pad_token_id=0,
                                 use_cache=True, **options)
        synchronize(device)
        return time.perf_counter() - started, out.shape[1] - prompt

    run(8)
    if peer == "static":
        run(new_tokens)  # the static cache's shapes compile on their first full-length run
    seconds, generated = run(new_tokens)
    print(json.dumps({
        "peer": peer,
        "tokens_per_second": round(batch * generated / seconds, 1),
        "seconds": round(seconds, 3),
        "generated": batch * generated,
        "peak_bytes": peak_bytes(device),
    }))


def option(name, default, allowed=None):
    if name not in sys.argv:
        return default
    value = sys.argv[sys.argv.index(name) + 1]
    if allowed and value not in allowed:
        sys.exit("cuda_vs_torch.py: %s %s: expected one of %s" % (name, value, ", ".join(allowed)))
    return value


def main():
    mode, model_dir = sys.argv[1], sys.argv[2]
    numbers = [int(a) for a in sys.argv[3:] if a.isdigit()]
    device = option("--device", "cuda", ("cuda", "cpu"))
    if mode == "train":
        peer = option("--peer", "peft", TRAIN_PEERS)
        train(model_dir, *numbers[:3], "--recompute" in sys.argv, peer, device)
    elif mode == "load":
        load(model_dir)
    elif mode == "generate":
        generate(model_dir, *numbers[:3], option("--peer", "dynamic", GENERATE_PEERS), device)
    else:
        sys.exit("usage: cuda_vs_torch.py train|load|generate MODEL_DIR ...")


if __name__ == "__main__":
    main()
