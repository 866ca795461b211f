#!/usr/bin/env python3
"""The peer of tests/bench/cuda_vs_torch.sh: PyTorch + transformers + PEFT on
the GPU, doing what ftpipe's side (cuda_vs_torch.c) does.

    python3 cuda_vs_torch.py train MODEL_DIR BATCH SEQ STEPS [--recompute]
    python3 cuda_vs_torch.py load MODEL_DIR
    python3 cuda_vs_torch.py generate MODEL_DIR BATCH PROMPT NEW

train: a random-init model from MODEL_DIR/config.json in bf16, sdpa attention;
LoRA r=8, alpha=16, no dropout, all seven projections (adapter in float, as
PEFT keeps it); AdamW at lr 1e-4; random tokens, every position a target; two
warm-up steps, then STEPS timed ones. --recompute turns on gradient
checkpointing. Prints one JSON line: tokens per second, seconds per step, peak
device memory (torch.cuda.max_memory_allocated), first and last loss.

load: from_pretrained(MODEL_DIR, bf16, device_map="cuda") once CUDA is
started, until the weights are on the GPU. generate: greedy generate() of BATCH
random prompts of PROMPT tokens and exactly NEW new ones each (min_new_tokens,
no stop token), after a short warm-up run, with the model's KV cache. Each
prints one JSON line.
"""
import json
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

WARMUP_STEPS = 2
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_model(model_dir):
    config = AutoConfig.from_pretrained(model_dir)
    config.use_cache = False
    torch.manual_seed(0)
    with torch.device("cuda"):
        try:
            return AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
        except TypeError:  # transformers before 4.56 names it torch_dtype
            return AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16, attn_implementation="sdpa")


def train(model_dir, batch, seq, steps, recompute):
    model = make_model(model_dir)
    if recompute:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)
    generator = torch.Generator(device="cuda").manual_seed(7)
    tokens = torch.randint(0, model.config.vocab_size, (batch, seq), device="cuda", generator=generator)

    losses = []
    started = None
    for step in range(WARMUP_STEPS + steps):
        if step == WARMUP_STEPS:
            torch.cuda.synchronize()
            started = time.perf_counter()
        loss = model(input_ids=tokens, labels=tokens).loss  # transformers shifts the labels
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    print(json.dumps({
        "tokens_per_second": round(batch * seq * steps / seconds, 1),
        "step_seconds": round(seconds / steps, 4),
        "peak_bytes": torch.cuda.max_memory_allocated(),
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


def generate(model_dir, batch, prompt, new_tokens):
    model = make_model(model_dir)
    model.eval()
    model.config.use_cache = True
    generator = torch.Generator(device="cuda").manual_seed(11)
    prompts = torch.randint(0, model.config.vocab_size, (batch, prompt), device="cuda", generator=generator)
    mask = torch.ones_like(prompts)

    def run(count):
        torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=prompts, attention_mask=mask, do_sample=False, max_new_tokens=count,
                                 min_new_tokens=count, eos_token_id=None, pad_token_id=0,
                                 use_cache=True)
        torch.cuda.synchronize()
        return time.perf_counter() - started, out.shape[1] - prompt

    run(8)
    seconds, generated = run(new_tokens)
    print(json.dumps({
        "tokens_per_second": round(batch * generated / seconds, 1),
        "seconds": round(seconds, 3),
        "generated": batch * generated,
        "peak_bytes": torch.cuda.max_memory_allocated(),
    }))


def main():
    mode, model_dir, numbers = sys.argv[1], sys.argv[2], [int(a) for a in sys.argv[3:] if a.isdigit()]
    if mode == "train":
        train(model_dir, *numbers[:3], "--recompute" in sys.argv[6:])
    elif mode == "load":
        load(model_dir)
    elif mode == "generate":
        generate(model_dir, *numbers[:3])
    else:
        sys.exit("usage: cuda_vs_torch.py train|load|generate MODEL_DIR ...")


if __name__ == "__main__":
    main()
