"""Qwen2-VL and Qwen2.5-VL end to end against transformers + PEFT, on this CPU:
for each, a pipeline makes tiny-qwen2-vl or tiny-qwen2.5-vl (f32), tokenizes LLaMA-Factory-style records with images
(made here with Pillow), trains a LoRA adapter on them, evaluates it on the
same records, and exports it as format = peft and format = merged. Then:
  - PEFT loads the peft export on the transformers model with every
    adapter tensor used (no missing or unexpected key);
  - the evaluate stage's eval_loss equals the loss of PEFT's model over the
    tokenize output's samples and pixels (relative error < 1e-4): ftpipe's
    ids, images, vision tower, M-RoPE and adapter are transformers';
  - transformers loads the merged export, whose logits equal PEFT's (< 1e-4).

The same records also train the language model fully (finetuning_type = full,
the tower frozen): transformers loads the train output with every weight (none
missing or unexpected), the tower as the base's and the language model
changed; its evaluate eval_loss is transformers' loss of that model, and the
merged export of it gives its logits."""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

import oracle

RECORDS = [
    ("<image>What colour is this?", "It is red, fading to blue.", ["images/a.png"]),
    ("Compare <image> with <image>.", "The first is wide, the second tall.", ["images/b.jpg", "images/c.png"]),
    ("<image>Describe it.", "A green square.", ["images/c.png"]),
]
TOKENIZE = {"template": "qwen2_vl", "dataset": "vl_demo", "image_max_pixels": 20000}
EVALUATE = {"template": "qwen2_vl", "dataset": "vl_demo", "image_max_pixels": 20000}


def write_workspace(root, shape):
    from PIL import Image
    images = os.path.join(root, "data", "images")
    os.makedirs(images)
    x = np.linspace(0, 255, 120, dtype=np.float32)
    red_blue = np.stack([np.tile(255 - x, (80, 1)), np.zeros((80, 120)), np.tile(x, (80, 1))], -1)
    Image.fromarray(red_blue.astype(np.uint8)).save(os.path.join(images, "a.png"))
    Image.fromarray((np.random.RandomState(1).rand(150, 60, 3) * 255).astype(np.uint8)).save(
        os.path.join(images, "b.jpg"), quality=90)
    Image.new("RGB", (64, 64), (20, 200, 40)).save(os.path.join(images, "c.png"))
    records = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "images": i}
               for q, a, i in RECORDS]
    json.dump(records, open(os.path.join(root, "data", "vl_demo.json"), "w"), indent=1)
    info = {"vl_demo": {"file_name": "vl_demo.json", "formatting": "sharegpt",
                        "columns": {"messages": "messages", "images": "images"},
                        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                 "assistant_tag": "assistant"}}}
    json.dump(info, open(os.path.join(root, "data", "dataset_info.json"), "w"))
    open(os.path.join(root, "Ftpipe"), "w").write(oracle.vl_export_pipeline(shape, TOKENIZE, EVALUATE))


def samples_with_pixels(root):
    """The tokenize output's samples: (ids, loss mask, pixel_values, grid_thw)."""
    rows = oracle.read_split(os.path.join(root, "tokens"))
    images, per_sample = oracle.read_image_store(os.path.join(root, "tokens", "train", "images.bin"))
    samples = [sample for row in rows for sample in row]
    out = []
    for (ids, mask), refs in zip(samples, per_sample):
        pixels = [np.frombuffer(images[r][1], dtype=np.float32).reshape(-1, 1176) for r in refs]
        grids = [images[r][0] for r in refs]
        out.append((ids, mask, torch.from_numpy(np.concatenate(pixels)).double(), torch.tensor(grids)))
    return out


def forward(model, ids, pixels, grids, image_token_id):
    tokens = torch.tensor([ids])
    types = (tokens == image_token_id).int()
    return model(input_ids=tokens, mm_token_type_ids=types, pixel_values=pixels, image_grid_thw=grids,
                 use_cache=False).logits[0]


def mean_loss(model, samples, image_token_id):
    """The mean cross-entropy over the trained tokens of the samples."""
    loss_sum, n_tokens = 0.0, 0
    with torch.no_grad():
        for ids, mask, pixels, grids in samples:
            logits = forward(model, ids, pixels, grids, image_token_id)
            targets = torch.tensor([ids[t + 1] if mask[t + 1] else -100 for t in range(len(ids) - 1)] + [-100])
            loss_sum += F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum").item()
            n_tokens += int((targets >= 0).sum())
    return loss_sum / n_tokens


def worst_logit_error(reference, other, samples, image_token_id):
    """The largest difference of other's logits from reference's, relative to reference's largest, over the samples."""
    worst = 0.0
    with torch.no_grad():
        for ids, _, pixels, grids in samples:
            a = forward(reference, ids, pixels, grids, image_token_id)
            b = forward(other, ids, pixels, grids, image_token_id)
            worst = max(worst, float((a - b).abs().max() / a.abs().max()))
    return worst


def check_full(cases, shape, model_class, root, base, samples, image_token_id):
    """The fully fine-tuned language model: loads whole, evaluates as transformers does, exports."""
    model, info = model_class.from_pretrained(os.path.join(root, "full"), attn_implementation="eager",
                                              output_loading_info=True)
    problems = ["%s: %s" % (kind, sorted(names)[:5]) for kind, names in info.items() if names]
    base_weights, weights = base.state_dict(), model.state_dict()
    changed = sorted(n for n in weights if not torch.equal(weights[n].double(), base_weights[n].double()))
    tower_changed = [n for n in changed if n.startswith("model.visual.") or ".visual." in n]
    cases.check("%s full fine-tune loads in transformers whole, the tower as the base's" % shape,
                not problems and changed and not tower_changed,
                "%d tensors, %d of the language model changed, the vision tower's as they were"
                % (len(weights), len(changed)), problems + tower_changed[:5])
    model = model.double().eval()
    reference = mean_loss(model, samples, image_token_id)
    measured = oracle.eval_loss(root, "report_full")
    relative = abs(measured - reference) / abs(reference)
    cases.check("%s full fine-tune's eval_loss is transformers'" % shape, relative < 1e-4,
                "%.6f against %.6f (relative %.2e)" % (measured, reference, relative))
    exported = model_class.from_pretrained(os.path.join(root, "export", "full"),
                                           attn_implementation="eager").double().eval()
    worst = worst_logit_error(model, exported, samples, image_token_id)
    cases.check("%s full fine-tune's merged export gives its logits" % shape, worst < 1e-6,
                "worst relative error %.2e" % worst)


def check_shape(cases, shape, model_class):
    root = oracle.scratch_folder("vl_exports")
    try:
        write_workspace(root, shape)
        if not oracle.pipeline_runs(cases, shape, root, ["report", "export/peft", "export/merged", "report_full",
                                                         "export/full"]):
            return
        base_dir = os.path.join(root, "models", "tiny")
        base = model_class.from_pretrained(base_dir, attn_implementation="eager")
        image_token_id = base.config.image_token_id
        model, saved, used = oracle.load_peft_export(base, root)
        cases.check("%s peft export loads on %s" % (shape, model_class.__name__),
                    saved == used and len(saved) == 28,
                    "%d adapter tensors, each on a module of the language model" % len(saved),
                    sorted(saved ^ used)[:10])
        model = model.double().eval()
        samples = samples_with_pixels(root)
        reference = mean_loss(model, samples, image_token_id)
        measured = oracle.eval_loss(root, "report")
        relative = abs(measured - reference) / abs(reference)
        cases.check("%s evaluate's eval_loss is PEFT's" % shape, relative < 1e-4,
                    "%.6f against %.6f over %d samples with %d images (relative %.2e)"
                    % (measured, reference, len(samples), sum(len(s[3]) for s in samples), relative))
        merged = model_class.from_pretrained(os.path.join(root, "export", "merged"),
                                             attn_implementation="eager").double().eval()
        worst = worst_logit_error(model, merged, samples, image_token_id)
        cases.check("%s merged export loads in transformers with PEFT's logits" % shape, worst < 1e-4,
                    "worst relative error %.2e" % worst)
        check_full(cases, shape, model_class, root, model_class.from_pretrained(base_dir), samples, image_token_id)
    finally:
        oracle.remove_scratch(root)


def main():
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration
    cases = oracle.Cases()
    check_shape(cases, "tiny-qwen2-vl", Qwen2VLForConditionalGeneration)
    check_shape(cases, "tiny-qwen2.5-vl", Qwen2_5_VLForConditionalGeneration)
    return cases.finish()


if __name__ == "__main__":
    sys.exit(main())
