"""The peer of tests/bench/peft_check.sh: ftpipe's base + adapter logits
against PEFT's (from_pretrained(base) + PeftModel.from_pretrained(peft export))
and transformers' on the merged export, all in float32 on the CPU.

    python3 peft_check.py BASE PEFT MERGED FTPIPE_LOGITS TOKEN...

Prints the largest |lora_B| (the adapter must be trained, or the check proves
little) and the two max relative errors (max |a - b| / max |a|); exits 1 when
either is >= 1e-4."""
import sys

import numpy as np
import torch
from peft import PeftModel
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM

LIMIT = 1e-4


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


def load(path):
    return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager").eval()


def relative_error(expected, actual):
    return float(np.abs(expected - actual).max() / np.abs(expected).max())


def main():
    base, peft_dir, merged, logits_path = sys.argv[1:5]
    ids = [int(t) for t in sys.argv[5:]]
    adapter = load_file(peft_dir + "/adapter_model.safetensors")
    largest_b = max(float(np.abs(v).max()) for k, v in adapter.items() if ".lora_B." in k)
    ours = np.fromfile(logits_path, dtype="<f4")
    with_peft = logits_of(PeftModel.from_pretrained(load(base), peft_dir).eval(), ids)
    from_merged = logits_of(load(merged), ids)
    ours = ours.reshape(with_peft.shape)
    without_adapter = relative_error(ours, logits_of(load(base), ids))
    peft_error = relative_error(ours, with_peft)
    merged_error = relative_error(ours, from_merged)
    print("largest |lora_B|: %.3g; the adapter moves the logits by %.3g (relative)" % (largest_b, without_adapter))
    print("base + peft adapter (PeftModel) vs ftpipe: max relative error %.3g" % peft_error)
    print("merged export (from_pretrained) vs ftpipe: max relative error %.3g" % merged_error)
    if largest_b < 1e-3 or without_adapter < 1e-3:
        print("peft_check: FAILED: the adapter barely changes the model, so the check proves nothing")
        return 1
    if peft_error >= LIMIT or merged_error >= LIMIT:
        print("peft_check: FAILED: an error is >= %g" % LIMIT)
        return 1
    print("peft_check: ok (both < %g)" % LIMIT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
