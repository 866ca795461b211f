#!/usr/bin/env python3
"""The peer of tests/bench/cuda_vs_torch.sh: LoRA training with PyTorch +
transformers + PEFT on the GPU, as ftpipe's side (cuda_vs_torch.c) runs it.

    python3 cuda_vs_torch.py MODEL_DIR BATCH SEQ STEPS [--recompute]

A random-init model from MODEL_DIR/config.json in bf16, sdpa attention; LoRA
r=8, alpha=16, no dropout, all seven projections (adapter in float, as PEFT
keeps it); AdamW at lr 1e-4; random tokens, every position a target; two
warm-up steps, then STEPS timed ones. --recompute turns on gradient
checkpointing. Prints one JSON line: tokens per second, seconds per step, peak
device memory (torch.cuda.max_memory_allocated), first and last loss.
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


def main():
    model_dir, batch, seq, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    recompute = "--recompute" in sys.argv[5:]
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


if __name__ == "__main__":
    main()
