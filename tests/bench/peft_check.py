"""The peer of tests/bench/peft_check.sh: for each adapter, ftpipe's base +
adapter logits against PEFT's (from_pretrained(base) +
PeftModel.from_pretrained(peft export)) and transformers' on the merged
export, and the merged export's weights against PEFT's own
merge_and_unload(); all in float32 on the CPU.

    python3 peft_check.py BASE TOKEN,TOKEN,... (PEFT MERGED FTPIPE_LOGITS)...

Prints, per adapter, the largest |lora_B| (the adapter must be trained, or the
check proves little) and the max relative errors (max |a - b| / max |a|, per
tensor for the weights); exits 1 when a logits error is >= 1e-4 or a weight's
>= 1e-5."""
import json
import os
import sys

import numpy as np
import torch
from peft import PeftModel
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM

LOGITS_LIMIT = 1e-4
WEIGHTS_LIMIT = 1e-5


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


def load(path):
    return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager").eval()


def relative_error(expected, actual):
    largest = float(np.abs(expected).max())
    return float(np.abs(expected - actual).max() / largest) if largest > 0 else float(np.abs(actual).max())


def merged_weights_error(base, peft_dir, merged_dir):
    """The worst tensor of the merged export against merge_and_unload()'s, and
    the names either side lacks."""
    theirs = {k: v.float().numpy() for k, v in
              PeftModel.from_pretrained(load(base), peft_dir).merge_and_unload().state_dict().items()}
    ours = load_file(merged_dir + "/model.safetensors")
    if json.load(open(base + "/config.json")).get("tie_word_embeddings"):
        theirs.pop("lm_head.weight", None)  # the tied head is the embedding, not saved twice
    missing = sorted(set(theirs) ^ set(ours))
    worst = max(relative_error(theirs[k], ours[k]) for k in ours if k in theirs)
    return worst, missing


def check_adapter(base, ids, peft_dir, merged_dir, logits_path):
    name = os.path.basename(os.path.dirname(peft_dir.rstrip("/")))  # export/NAME/peft
    config = json.load(open(peft_dir + "/adapter_config.json"))
    adapter = load_file(peft_dir + "/adapter_model.safetensors")
    largest_b = max(float(np.abs(v).max()) for k, v in adapter.items() if ".lora_B." in k)
    with_peft = logits_of(PeftModel.from_pretrained(load(base), peft_dir).eval(), ids)
    ours = np.fromfile(logits_path, dtype="<f4").reshape(with_peft.shape)
    without_adapter = relative_error(ours, logits_of(load(base), ids))
    peft_error = relative_error(ours, with_peft)
    merged_error = relative_error(ours, logits_of(load(merged_dir), ids))
    weights_error, missing = merged_weights_error(base, peft_dir, merged_dir)
    print("%s (r %d, alpha %s, rslora %s, targets %s):" % (name, config["r"], config["lora_alpha"],
                                                          config["use_rslora"], ",".join(sorted(config["target_modules"]))))
    print("  largest |lora_B|: %.3g; the adapter moves the logits by %.3g (relative)" % (largest_b, without_adapter))
    print("  base + peft adapter (PeftModel) vs ftpipe: max relative error %.3g" % peft_error)
    print("  merged export (from_pretrained) vs ftpipe: max relative error %.3g" % merged_error)
    print("  merged export's weights vs PEFT's merge_and_unload(): max relative error %.3g" % weights_error)
    failures = []
    if largest_b < 1e-3 or without_adapter < 1e-3:
        failures.append("the adapter barely changes the model, so the check proves nothing")
    if peft_error >= LOGITS_LIMIT or merged_error >= LOGITS_LIMIT:
        failures.append("a logits error is >= %g" % LOGITS_LIMIT)
    if weights_error >= WEIGHTS_LIMIT:
        failures.append("a merged weight differs from merge_and_unload()'s by >= %g" % WEIGHTS_LIMIT)
    if missing:
        failures.append("the merged export and merge_and_unload() differ in tensors: %s" % ", ".join(missing))
    for failure in failures:
        print("peft_check: FAILED (%s): %s" % (name, failure))
    return not failures


def main():
    if len(sys.argv) < 6 or (len(sys.argv) - 3) % 3:
        print(__doc__)
        return 1
    base, ids = sys.argv[1], [int(t) for t in sys.argv[2].split(",")]
    sets = [sys.argv[i:i + 3] for i in range(3, len(sys.argv), 3)]
    passed = [check_adapter(base, ids, *s) for s in sets]
    if not all(passed):
        return 1
    print("peft_check: ok (%d adapters; logits < %g, weights < %g)" % (len(sets), LOGITS_LIMIT, WEIGHTS_LIMIT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
