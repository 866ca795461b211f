"""Training the multi-modal projector against transformers + PEFT, on this CPU.

The fixtures: make_projector.py, run again here, makes tests/fixtures/projector
as committed (safetensors tensor by tensor within 1e-6 of each tensor's
largest value, JSON as values, other files byte for byte), so that
test_projector.c's references stay transformers' and PEFT's.

End to end, for tiny-qwen2-vl and tiny-qwen2.5-vl on LLaMA-Factory-style
records with images (check_vl_exports.py's):
  - LoRA with lora_target = all,mlp.0,mlp.2 and freeze_multi_modal_projector =
    false: PEFT loads the peft export on the transformers model with every
    adapter tensor used, the merger's four among them; evaluate's eval_loss is
    PEFT's loss; transformers loads the merged export with PEFT's logits;
  - train_mm_proj_only = true (full): transformers loads the train output whole,
    only the merger's weights changed; evaluate's eval_loss is that model's
    loss.
For tiny-llava on LLaMA-Factory's mllm_demo (check_llava_exports.py's), the same
with lora_target = all,linear_1,linear_2 and multi_modal_projector's layers."""
import os
import shutil
import sys

import torch

import check_llava_exports as llava
import check_vl_exports as vl
import oracle
from check_parity_fixtures import check_remade

FIXTURES = os.path.join(oracle.FIXTURES, "projector")
SCRIPT = "make_projector.py"


def pipeline(shape, tokenize, evaluate, lora_target):
    """init, tokenize; LoRA on the projector and the language model, evaluated
    and exported; the projector trained alone, evaluated."""
    params = lambda values: "".join("\t%s = %s\n" % item for item in values.items())
    evaluated = params(dict(evaluate, max_new_tokens=4, backend="cpu"))
    steps = "\tbackend = cpu\n\tmax_steps = 3\n\tper_device_train_batch_size = 2\n"
    return ("models/tiny: init\n\tshape = %s\n\tdtype = f32\n\n" % shape
            + "tokens: tokenize models/tiny data\n" + params(tokenize)
            + "\nadapter: train models/tiny tokens\n" + steps + "\tlearning_rate = 5e-3\n\tlora_rank = 4\n"
              "\tlora_target = %s\n\tfreeze_multi_modal_projector = false\n" % lora_target
            + "\nreport: evaluate models/tiny adapter data\n" + evaluated
            + "\nexport/peft: export adapter\n\nexport/merged: export adapter models/tiny\n\tformat = merged\n"
            + "\nmerger: train models/tiny tokens\n" + steps + "\tfinetuning_type = full\n\tlearning_rate = 1e-2\n"
              "\ttrain_mm_proj_only = true\n"
            + "\nreport_merger: evaluate models/tiny merger data\n" + evaluated)


def check_only_projector_trained(cases, name, model_class, root, base_dir, part, what):
    """train_mm_proj_only's output (root/merger) loads in transformers with no
    tensor missing or unexpected, and only tensors named with `part` differ
    from the base's; returns the loaded model."""
    trained, info = model_class.from_pretrained(os.path.join(root, "merger"), attn_implementation="eager",
                                                output_loading_info=True)
    problems = ["%s: %s" % (kind, sorted(names)[:5]) for kind, names in info.items() if names]
    before, after = model_class.from_pretrained(base_dir).state_dict(), trained.state_dict()
    changed = sorted(n for n in after if not torch.equal(after[n].double(), before[n].double()))
    outside = [n for n in changed if part not in n]
    cases.check("%s train_mm_proj_only: transformers loads it whole, only the %s changed" % (name, what),
                not problems and changed and not outside,
                "%d tensors, %d changed: %s" % (len(after), len(changed), ", ".join(changed)),
                problems + outside[:5])
    return trained


def check_shape(cases, shape, model_class):
    root = oracle.scratch_folder("projector_exports")
    try:
        vl.write_workspace(root, shape)
        open(os.path.join(root, "Ftpipe"), "w").write(pipeline(shape, vl.TOKENIZE, vl.EVALUATE, "all,mlp.0,mlp.2"))
        if not oracle.pipeline_runs(cases, shape, root, ["report", "export/peft", "export/merged", "report_merger"]):
            return
        base_dir = os.path.join(root, "models", "tiny")
        base = model_class.from_pretrained(base_dir, attn_implementation="eager")
        image_token_id = base.config.image_token_id
        model, saved, used = oracle.load_peft_export(base, root)
        merger = sorted(name for name in used if ".visual.merger." in name)
        cases.check("%s peft export with the merger's adapters loads on %s" % (shape, model_class.__name__),
                    saved == used and len(saved) == 32 and len(merger) == 4,
                    "%d adapter tensors, %d of them on visual.merger.mlp.0 and mlp.2" % (len(saved), len(merger)),
                    sorted(saved ^ used)[:10])
        model = model.double().eval()
        samples = vl.samples_with_pixels(root)
        reference = vl.mean_loss(model, samples, image_token_id)
        measured = oracle.eval_loss(root, "report")
        relative = abs(measured - reference) / abs(reference)
        cases.check("%s evaluate's eval_loss with the merger's adapters is PEFT's" % shape, relative < 1e-4,
                    "%.6f against %.6f (relative %.2e)" % (measured, reference, relative))
        merged = model_class.from_pretrained(os.path.join(root, "export", "merged"),
                                             attn_implementation="eager").double().eval()
        worst = vl.worst_logit_error(model, merged, samples, image_token_id)
        cases.check("%s merged export (the merger's adapters merged) gives PEFT's logits" % shape, worst < 1e-4,
                    "worst relative error %.2e" % worst)

        trained = check_only_projector_trained(cases, shape, model_class, root, base_dir, ".visual.merger.", "merger")
        reference = vl.mean_loss(trained.double().eval(), samples, image_token_id)
        measured = oracle.eval_loss(root, "report_merger")
        relative = abs(measured - reference) / abs(reference)
        cases.check("%s train_mm_proj_only's eval_loss is transformers'" % shape, relative < 1e-4,
                    "%.6f against %.6f (relative %.2e)" % (measured, reference, relative))
    finally:
        oracle.remove_scratch(root)


def check_llava(cases):
    """tiny-llava: LoRA on multi_modal_projector's layers, and the projector alone."""
    from transformers import LlavaForConditionalGeneration
    root = oracle.scratch_folder("projector_llava")
    try:
        shutil.copytree(os.path.join(oracle.FIXTURES, "datasets", "llamafactory_data"), os.path.join(root, "data"))
        open(os.path.join(root, "Ftpipe"), "w").write(
            pipeline("tiny-llava", llava.TOKENIZE, llava.EVALUATE, "all,linear_1,linear_2"))
        if not oracle.pipeline_runs(cases, "tiny-llava", root, ["report", "export/peft", "report_merger"]):
            return
        base_dir = os.path.join(root, "models", "tiny")
        base = LlavaForConditionalGeneration.from_pretrained(base_dir, attn_implementation="eager")
        image_size = base.config.vision_config.image_size
        model, saved, used = oracle.load_peft_export(base, root)
        projector = sorted(name for name in used if ".multi_modal_projector." in name)
        cases.check("tiny-llava peft export with the projector's adapters loads on LlavaForConditionalGeneration",
                    saved == used and len(saved) == 32 and len(projector) == 4,
                    "%d adapter tensors, %d of them on linear_1 and linear_2" % (len(saved), len(projector)),
                    sorted(saved ^ used)[:10])
        samples = llava.samples_with_pixels(root, image_size)
        reference, n_images = llava.mean_loss(model.double().eval(), samples)
        measured = oracle.eval_loss(root, "report")
        relative = abs(measured - reference) / abs(reference)
        cases.check("tiny-llava evaluate's eval_loss with the projector's adapters is PEFT's", relative < 1e-4,
                    "%.6f against %.6f over %d images (relative %.2e)" % (measured, reference, n_images, relative))
        trained = check_only_projector_trained(cases, "tiny-llava", LlavaForConditionalGeneration, root, base_dir,
                                               ".multi_modal_projector.", "projector")
        reference, _ = llava.mean_loss(trained.double().eval(), samples)
        measured = oracle.eval_loss(root, "report_merger")
        relative = abs(measured - reference) / abs(reference)
        cases.check("tiny-llava train_mm_proj_only's eval_loss is transformers'", relative < 1e-4,
                    "%.6f against %.6f (relative %.2e)" % (measured, reference, relative))
    finally:
        oracle.remove_scratch(root)


def main():
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration
    cases = oracle.Cases()
    check_remade(cases, "projector fixtures", FIXTURES, SCRIPT)
    check_shape(cases, "tiny-qwen2-vl", Qwen2VLForConditionalGeneration)
    check_shape(cases, "tiny-qwen2.5-vl", Qwen2_5_VLForConditionalGeneration)
    check_llava(cases)
    return cases.finish()


if __name__ == "__main__":
    sys.exit(main())
