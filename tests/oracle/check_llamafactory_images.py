"""ftpipe's tokenize stage with images against LLaMA-Factory's own encoding.

The data: LLaMA-Factory's mllm_demo entry (tests/fixtures/datasets/
llamafactory_data, its images stand-ins made by make_vision_data.py) and
vision_edge (images over image_max_pixels, under image_min_pixels and 28 pixels
a side, very wide, PNG, WebP, one picture under two names, alpaca records with
images, a record without any). Each is tokenized by ftpipe with template
qwen2_vl and a small Qwen2-VL processor config (tests/fixtures/models/
qwen2-vl-processor) on the committed Qwen3 tokenizer, and by LLaMA-Factory's
loader, template and supervised processors with its Qwen2VLPlugin and
transformers' Qwen2VLImageProcessor (the Pillow one: the environment has no
torchvision, which the full processor's video part needs).

Compared, sample by sample (packed: row by row): token ids; labels, where
ftpipe never trains on an image pad token (LLaMA-Factory trains on them with
train_on_prompt, which only that option shows; the check masks them on its side
and says so); each sample's image grids (image_grid_thw) against the store
beside ftpipe's shards; and the stored pixel values against the processor's
(within 1e-2, as the vision preprocessing check). With a cutoff_len that cuts
images, LLaMA-Factory keeps samples whose image tokens are cut short (its model
would fail on them); ftpipe refuses them (on_error = skip here): the check
holds that exactly those are skipped and the rest equal.

With --write, the hashes of each sample's ids and labels and its grids go to
tests/fixtures/datasets/vision_edge/expected_llamafactory.json, which
tests/e2e/test_tokenize_images.sh holds ftpipe against in make test."""
import argparse
import hashlib
import json
import os
import struct
import sys
import types

import oracle

os.environ["DISABLE_VERSION_CHECK"] = "1"  # llamafactory 0.9.5 pins an older transformers (requirements.txt)

DATASETS = os.path.join(oracle.FIXTURES, "datasets")
PROCESSOR = os.path.join(oracle.FIXTURES, "models", "qwen2-vl-processor")
EXPECTED = os.path.join(DATASETS, "vision_edge", "expected_llamafactory.json")
IMAGE_PAD, PIXEL_TOLERANCE = 151655, 1e-2

CONFIGS = {  # name: (ftpipe parameters, LLaMA-Factory DataArguments, its ModelArguments)
    "defaults": ({"cutoff_len": 2048}, {"cutoff_len": 2048}, {}),
    "image_pixels": ({"cutoff_len": 2048, "image_max_pixels": 65536, "image_min_pixels": 4096},
                     {"cutoff_len": 2048}, {"image_max_pixels": 65536, "image_min_pixels": 4096}),
    "mask_history": ({"cutoff_len": 2048, "mask_history": "true"}, {"cutoff_len": 2048, "mask_history": True}, {}),
    "train_on_prompt": ({"cutoff_len": 2048, "train_on_prompt": "true"},
                        {"cutoff_len": 2048, "train_on_prompt": True}, {}),
    "packing,cutoff_len=1024": ({"cutoff_len": 1024, "packing": "true"}, {"cutoff_len": 1024, "neat_packing": True},
                                {}),
    "cutoff_len=160": ({"cutoff_len": 160, "on_error": "skip"}, {"cutoff_len": 160}, {}),
}
WRITTEN = ("defaults", "image_pixels", "packing,cutoff_len=1024")
STAGES = [("demo", "data", "mllm_demo", ["mllm_demo"]),
          ("edge", "edge", "edge_sharegpt, edge_alpaca", ["edge_sharegpt", "edge_alpaca"])]


class LlamaFactory:
    def __init__(self, workspace):
        import datasets
        from llamafactory.data import loader
        from llamafactory.data.template import get_template_and_fix_tokenizer
        from llamafactory.hparams import DataArguments, ModelArguments
        from llamafactory.model import load_tokenizer
        from llamafactory.model.patcher import patch_processor
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        datasets.disable_progress_bars()
        self.workspace, self.loader, self.fix = workspace, loader, get_template_and_fix_tokenizer
        self.DataArguments, self.ModelArguments = DataArguments, ModelArguments
        self.load_tokenizer, self.patch_processor = load_tokenizer, patch_processor
        self.image_processor = Qwen2VLImageProcessorPil.from_pretrained(os.path.join(workspace, "model"))
        self.training_args = types.SimpleNamespace(seed=42, local_process_index=0, dataloader_num_workers=0,
                                                   predict_with_generate=False, should_log=False)

    def encode(self, config, folder, names):
        """(rows of (ids, labels) samples, each unpacked sample's (grids, pixel_values)), as LLaMA-Factory makes them."""
        _, data_options, model_options = CONFIGS[config]
        model_args = self.ModelArguments(model_name_or_path=os.path.join(self.workspace, "model"), **model_options)
        tokenizer = self.load_tokenizer(model_args)["tokenizer"]
        processor = types.SimpleNamespace(image_processor=self.image_processor, video_processor=self.image_processor)
        self.patch_processor(processor, tokenizer, model_args)
        data_args = self.DataArguments(template="qwen2_vl", dataset=",".join(names),
                                       dataset_dir=os.path.join(self.workspace, folder), overwrite_cache=True,
                                       **data_options)
        chat_template = self.fix(tokenizer, data_args)
        examples = self.loader._get_merged_dataset(data_args.dataset, model_args, data_args, self.training_args,
                                                   "sft").to_dict()
        encoded = self.loader._get_dataset_processor(data_args, "sft", chat_template, tokenizer,
                                                     processor).preprocess_dataset(examples)
        plugin = chat_template.mm_plugin
        images = []
        for paths in examples["_images"]:
            mm = plugin._get_mm_inputs(paths or [], [], [], processor) if paths else {}
            grids = [tuple(int(v) for v in g) for g in mm.get("image_grid_thw", [])]
            images.append((grids, mm["pixel_values"].numpy() if paths else None))
        if not data_args.neat_packing:
            return [[(ids, labels)] for ids, labels in zip(encoded["input_ids"], encoded["labels"])], images
        return oracle.neat_packed_rows(encoded), images


def masked_pads(labels, ids):
    return [-100 if t == IMAGE_PAD else label for t, label in zip(ids, labels)]


def compare_rows(ours, theirs):
    """The first difference between two lists of rows, or None."""
    if len(ours) != len(theirs):
        return "ftpipe has %d rows, LLaMA-Factory %d" % (len(ours), len(theirs))
    for r, (a, b) in enumerate(zip(ours, theirs)):
        if [len(s[0]) for s in a] != [len(s[0]) for s in b]:
            return "row %d: samples of %s tokens, LLaMA-Factory %s" % (r, [len(s[0]) for s in a], [len(s[0]) for s in b])
        for s, ((ids_a, labels_a), (ids_b, labels_b)) in enumerate(zip(a, b)):
            if ids_a != ids_b:
                return "row %d sample %d: ids differ at token %d" % (r, s, oracle.first_difference(ids_a, ids_b))
            if labels_a != masked_pads(labels_b, ids_b):
                return "row %d sample %d: labels differ at token %d" % (
                    r, s, oracle.first_difference(labels_a, masked_pads(labels_b, ids_b)))
    return None


def compare_images(ours, theirs, kept):
    """Grids and pixels of each kept sample's images; returns (problem or None, largest pixel difference)."""
    import numpy as np

    largest = 0.0
    for s, ((grids, pixels), our_images) in enumerate(zip([theirs[i] for i in kept], ours)):
        if [image[0] for image in our_images] != grids:
            return "sample %d: grids %s, LLaMA-Factory %s" % (s, [i[0] for i in our_images], grids), largest
        if not grids:
            continue
        mine = np.concatenate([np.frombuffer(image[1], dtype="<f4") for image in our_images])
        difference = float(np.abs(mine - pixels.reshape(-1)).max())
        largest = max(largest, difference)
        if difference > PIXEL_TOLERANCE:
            return "sample %d: pixel values differ by %.4g" % (s, difference), largest
    return None, largest


def digest(values, code):
    return hashlib.sha256(struct.pack("<%d%s" % (len(values), code), *values)).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write " + os.path.relpath(EXPECTED, oracle.ROOT))
    args = parser.parse_args()
    cases = oracle.Cases()
    workspace = oracle.scratch_folder("llamafactory-images")
    os.environ["HF_DATASETS_CACHE"] = os.path.join(workspace, "datasets-cache")
    expected = {}
    try:
        model = oracle.unpack_tokenizer("qwen3", os.path.join(workspace, "model"))
        with open(os.path.join(PROCESSOR, "preprocessor_config.json")) as f, \
                open(os.path.join(model, "preprocessor_config.json"), "w") as out:
            out.write(f.read())
        os.symlink(os.path.join(DATASETS, "llamafactory_data"), os.path.join(workspace, "data"))
        os.symlink(os.path.join(DATASETS, "vision_edge"), os.path.join(workspace, "edge"))
        log = oracle.run_image_checks(workspace, CONFIGS, STAGES, {"template": "qwen2_vl"})
        lf = LlamaFactory(workspace)
        for config in CONFIGS:
            for stage, folder, _, names in STAGES:
                name = "llamafactory images %s, %s" % (stage, config)
                try:
                    ours, our_images = oracle.image_check_split(workspace, config, stage)
                except (OSError, ValueError) as error:
                    said = [line for line in log.splitlines() if oracle.image_check_target(config, stage) in line][-2:]
                    cases.fail(name, "ftpipe made no shards (%s)" % error, said)
                    continue
                theirs, their_images = lf.encode(config, folder, names)
                kept, skipped = list(range(len(theirs))), []
                if config.startswith("cutoff_len"):  # samples whose image tokens were cut: ftpipe skips them
                    whole = [sum(t * h * w // 4 for t, h, w in grids) for grids, _ in their_images]
                    kept = [i for i, row in enumerate(theirs) if row[0][0].count(IMAGE_PAD) == whole[i]]
                    skipped = [i for i in range(len(theirs)) if i not in kept]
                    theirs = [theirs[i] for i in kept]
                problem = compare_rows(ours, theirs)
                largest = 0.0
                if problem is None and "packing" not in config:
                    problem, largest = compare_images(our_images, their_images, kept)
                meta = json.load(open(os.path.join(workspace, oracle.image_check_target(config, stage), "meta.json")))
                if problem is None and meta["skipped_records"] != len(skipped):
                    problem = "LLaMA-Factory cut the images of samples %s; ftpipe skipped %d records" % (
                        skipped, meta["skipped_records"])
                n_samples = sum(len(row) for row in ours)
                n_pads = sum(ids.count(IMAGE_PAD) for row in ours for ids, _ in row)
                cases.check(name, problem is None,
                            "%d samples, %d image tokens, %d images: ids, labels%s identical%s%s" % (
                                n_samples, n_pads, sum(len(i) for i in our_images),
                                "" if "packing" in config else ", grids",
                                "" if "packing" in config else ", pixels within %.2g" % largest,
                                "; %d samples with images cut short skipped as LLaMA-Factory cannot train on them"
                                % len(skipped) if skipped else "") if problem is None else problem)
                if config in WRITTEN:
                    expected.setdefault(config, {})[stage] = {
                        "parameters": CONFIGS[config][0],
                        "rows": [[[len(ids), digest(ids, "I"), digest(masked_pads(labels, ids), "i")]
                                  for ids, labels in row] for row in theirs],
                        "grids": None if "packing" in config else [grids for grids, _ in their_images]}
        if args.write and not cases.failed:
            with open(EXPECTED, "w") as f:
                json.dump(expected, f, indent=1)
                f.write("\n")
            print("# wrote %s" % os.path.relpath(EXPECTED, oracle.ROOT))
    finally:
        oracle.remove_scratch(workspace)
    return cases.finish()


if __name__ == "__main__":
    sys.exit(main())
