"""LLaVA end to end against transformers + PEFT, on this CPU: a pipeline makes
tiny-llava (f32), tokenizes LLaMA-Factory's mllm_demo (template llava, its
images), trains a LoRA adapter on the language model, evaluates it on the same
records and exports it as format = peft and format = merged. Then:
  - PEFT loads the peft export on transformers' LlavaForConditionalGeneration
    with every adapter tensor used (no missing or unexpected key), none on the
    vision tower or the projector;
  - the evaluate stage's eval_loss equals the loss of PEFT's model over the
    tokenize output's samples and CLIP pixels (relative error < 1e-4): ftpipe's
    ids, images, CLIP tower, projector and adapter are transformers';
  - transformers loads the merged export (tower and projector included), whose
    logits equal PEFT's (< 1e-4).

The same records also train the language model fully (finetuning_type = full,
tower and projector frozen): transformers loads the train output with every
weight, the tower and projector as the base's and the language model changed;
its evaluate eval_loss is transformers' loss of that model."""
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn.functional as F

import oracle

TOKENIZE = {"template": "llava", "dataset": "mllm_demo", "cutoff_len": 2048}
EVALUATE = {"dataset": "mllm_demo", "cutoff_len": 2048}


def samples_with_pixels(root, image_size):
    """The tokenize output's samples: (ids, loss mask, pixel_values [n, 3, size, size])."""
    rows = oracle.read_split(os.path.join(root, "tokens"))
    images, per_sample = oracle.read_image_store(os.path.join(root, "tokens", "train", "images.bin"))
    samples = [sample for row in rows for sample in row]
    out = []
    for (ids, mask), refs in zip(samples, per_sample):
        pixels = [np.frombuffer(images[r][1], dtype=np.float32).reshape(3, image_size, image_size) for r in refs]
        out.append((ids, mask, torch.from_numpy(np.stack(pixels)).double()))
    return out


def mean_loss(model, samples):
    """(the mean cross-entropy over the samples' trained tokens, the images seen)."""
    loss_sum, n_tokens, n_images = 0.0, 0, 0
    with torch.no_grad():
        for ids, mask, pixels in samples:
            logits = model(input_ids=torch.tensor([ids]), pixel_values=pixels, use_cache=False).logits[0]
            targets = torch.tensor([ids[t + 1] if mask[t + 1] else -100 for t in range(len(ids) - 1)] + [-100])
            loss_sum += F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum").item()
            n_tokens += int((targets >= 0).sum())
            n_images += pixels.shape[0]
    return loss_sum / n_tokens, n_images


def check_full(cases, root, samples):
    from transformers import LlavaForConditionalGeneration
    base = LlavaForConditionalGeneration.from_pretrained(os.path.join(root, "models", "tiny"))
    model, info = LlavaForConditionalGeneration.from_pretrained(os.path.join(root, "full"),
                                                                attn_implementation="eager", output_loading_info=True)
    problems = ["%s: %s" % (kind, sorted(names)[:5]) for kind, names in info.items() if names]
    base_weights, weights = base.state_dict(), model.state_dict()
    changed = sorted(n for n in weights if not torch.equal(weights[n].double(), base_weights[n].double()))
    frozen_changed = [n for n in changed if "vision_tower" in n or "multi_modal_projector" in n]
    cases.check("full fine-tune loads in transformers whole, tower and projector as the base's",
                not problems and changed and not frozen_changed,
                "%d tensors, %d of the language model changed" % (len(weights), len(changed)),
                problems + frozen_changed[:5])
    reference, _ = mean_loss(model.double().eval(), samples)
    measured = oracle.eval_loss(root, "report_full")
    relative = abs(measured - reference) / abs(reference)
    cases.check("full fine-tune's eval_loss is transformers'", relative < 1e-4,
                "%.6f against %.6f (relative %.2e)" % (measured, reference, relative))


def main():
    from transformers import LlavaForConditionalGeneration
    cases = oracle.Cases()
    root = oracle.scratch_folder("llava_exports")
    try:
        shutil.copytree(os.path.join(oracle.FIXTURES, "datasets", "llamafactory_data"), os.path.join(root, "data"))
        open(os.path.join(root, "Ftpipe"), "w").write(oracle.vl_export_pipeline("tiny-llava", TOKENIZE, EVALUATE))
        if not oracle.pipeline_runs(cases, "tiny-llava", root, ["report", "export/peft", "export/merged",
                                                                "report_full"]):
            return cases.finish()
        base = LlavaForConditionalGeneration.from_pretrained(os.path.join(root, "models", "tiny"),
                                                             attn_implementation="eager")
        image_size = base.config.vision_config.image_size
        model, saved, used = oracle.load_peft_export(base, root)
        in_tower = [name for name in used if "vision_tower" in name or "multi_modal_projector" in name]
        cases.check("peft export loads on LlavaForConditionalGeneration",
                    saved == used and len(saved) == 28 and not in_tower,
                    "%d adapter tensors, each on a module of the language model" % len(saved),
                    (sorted(saved ^ used) + in_tower)[:10])
        model = model.double().eval()
        samples = samples_with_pixels(root, image_size)
        reference, n_images = mean_loss(model, samples)
        measured = oracle.eval_loss(root, "report")
        relative = abs(measured - reference) / abs(reference)
        cases.check("evaluate's eval_loss is PEFT's", relative < 1e-4,
                    "%.6f against %.6f over %d samples with %d images (relative %.2e)"
                    % (measured, reference, len(samples), n_images, relative))
        merged = LlavaForConditionalGeneration.from_pretrained(os.path.join(root, "export", "merged"),
                                                               attn_implementation="eager").double().eval()
        worst = 0.0
        with torch.no_grad():
            for ids, _, pixels in samples:
                a = model(input_ids=torch.tensor([ids]), pixel_values=pixels, use_cache=False).logits[0]
                b = merged(input_ids=torch.tensor([ids]), pixel_values=pixels, use_cache=False).logits[0]
                worst = max(worst, float((a - b).abs().max() / a.abs().max()))
        cases.check("merged export loads in transformers with PEFT's logits", worst < 1e-4,
                    "worst relative error %.2e" % worst)
        check_full(cases, root, samples)
    finally:
        oracle.remove_scratch(root)
    return cases.finish()


if __name__ == "__main__":
    sys.exit(main())
