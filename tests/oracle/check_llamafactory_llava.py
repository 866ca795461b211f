"""ftpipe's tokenize stage with LLaVA images against LLaMA-Factory's own encoding.

The data: LLaMA-Factory's mllm_demo entry and vision_edge (as
check_llamafactory_images.py). The model folders: the committed Llama 3
tokenizer with LLaVA's <image> added (tests/fixtures/models/llava-processor/
add_image_token.py, as XTuner's LLaVA-Llama-3 has it), and, as LLaVA-1.5 has
it, the SentencePiece-style tokenizer with <image> (tests/fixtures/tokenizer/
sentencepiece_legacy, Llama 2's legacy conversion), each with that folder's
llava-hf config.json (image_token_index set to the tokenizer's <image>),
preprocessor_config.json (CLIPImageProcessor, 336) and processor_config.json. ftpipe tokenizes with template llava (LLaVA-1.5) and
llama3 (LLaVA-Llama-3); LLaMA-Factory with its loader, template and supervised
processor, its LlavaPlugin (for llama3, which has no plugin of its own, the
template's plugin is set to LlavaPlugin with image token <image>) and
transformers' CLIPImageProcessor (the Pillow one; no torchvision here).

Compared, sample by sample: token ids (each <image> as 576 image tokens: 24 x 24
patches, CLS dropped by vision_feature_select_strategy "default"); labels,
ftpipe never training on an image token (as LLaMA-Factory without
train_on_prompt); and the stored pixel values (one 3 x 336 x 336 row per image)
against the processor's, within 1e-2.

With --write, the hashes of each sample's ids and labels go to
tests/fixtures/datasets/vision_edge/expected_llava.json, which
tests/e2e/test_tokenize_llava.sh holds ftpipe against in make test."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import types

import oracle
from check_llamafactory_images import compare_rows, digest

os.environ["DISABLE_VERSION_CHECK"] = "1"  # llamafactory 0.9.5 pins an older transformers (requirements.txt)

DATASETS = os.path.join(oracle.FIXTURES, "datasets")
PROCESSOR = os.path.join(oracle.FIXTURES, "models", "llava-processor")
EXPECTED = os.path.join(DATASETS, "vision_edge", "expected_llava.json")
IMAGE_TOKENS, PIXEL_TOLERANCE = 576, 1e-2

CONFIGS = {  # name: (ftpipe parameters, LLaMA-Factory DataArguments, its ModelArguments)
    "llava": ({"template": "llava", "cutoff_len": 4096}, {"template": "llava", "cutoff_len": 4096}, {}),
    "llama3": ({"template": "llama3", "cutoff_len": 4096}, {"template": "llama3", "cutoff_len": 4096}, {}),
    "llava,image_pixels": ({"template": "llava", "cutoff_len": 4096, "image_max_pixels": 65536,
                            "image_min_pixels": 4096},
                           {"template": "llava", "cutoff_len": 4096},
                           {"image_max_pixels": 65536, "image_min_pixels": 4096}),
}
STAGES = [("demo", "data", "mllm_demo", ["mllm_demo"]),
          ("edge", "edge", "edge_sharegpt, edge_alpaca", ["edge_sharegpt", "edge_alpaca"])]


# model folder: (tokenizer, the option sets it is tokenized with)
MODELS = {"model": ("llama3", list(CONFIGS)), "model-sentencepiece": ("sentencepiece_legacy", ["llava"])}


def make_model(folder, tokenizer_name):
    """The tokenizer with <image>, and the llava-hf configs; returns <image>'s id."""
    oracle.unpack_tokenizer(tokenizer_name, folder)
    tokenizer_path = os.path.join(folder, "tokenizer.json")
    if tokenizer_name == "llama3":
        subprocess.run([sys.executable, os.path.join(PROCESSOR, "add_image_token.py"), tokenizer_path], check=True)
    for name in ("preprocessor_config.json", "processor_config.json"):
        shutil.copy(os.path.join(PROCESSOR, name), folder)
    with open(tokenizer_path, encoding="utf-8") as f:
        image_id = next(t["id"] for t in json.load(f)["added_tokens"] if t["content"] == "<image>")
    with open(os.path.join(PROCESSOR, "config.json")) as f:
        config = json.load(f)
    config["image_token_index"] = image_id
    config["text_config"]["vocab_size"] = max(config["text_config"]["vocab_size"], image_id + 1)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return image_id


class LlamaFactory:
    def __init__(self, workspace):
        import datasets
        from llamafactory.data import loader
        from llamafactory.data.mm_plugin import get_mm_plugin
        from llamafactory.data.template import get_template_and_fix_tokenizer
        from llamafactory.hparams import DataArguments, ModelArguments
        from llamafactory.model import load_tokenizer
        from llamafactory.model.patcher import patch_processor
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        datasets.disable_progress_bars()
        self.workspace, self.loader, self.fix, self.get_mm_plugin = workspace, loader, get_template_and_fix_tokenizer, \
            get_mm_plugin
        self.DataArguments, self.ModelArguments = DataArguments, ModelArguments
        self.load_tokenizer, self.patch_processor = load_tokenizer, patch_processor
        self.image_processor = CLIPImageProcessorPil.from_pretrained(os.path.join(workspace, "model"))
        with open(os.path.join(workspace, "model", "processor_config.json")) as f:
            self.processor_config = json.load(f)
        self.training_args = types.SimpleNamespace(seed=42, local_process_index=0, dataloader_num_workers=0,
                                                   predict_with_generate=False, should_log=False)

    def encode(self, config, folder, names, model="model"):
        """(rows of (ids, labels) samples, each sample's pixel_values or None)."""
        _, data_options, model_options = CONFIGS[config]
        model_args = self.ModelArguments(model_name_or_path=os.path.join(self.workspace, model), **model_options)
        tokenizer = self.load_tokenizer(model_args)["tokenizer"]
        processor = types.SimpleNamespace(image_processor=self.image_processor, **{
            key: self.processor_config[key]
            for key in ("patch_size", "num_additional_image_tokens", "vision_feature_select_strategy")})
        self.patch_processor(processor, tokenizer, model_args)
        data_args = self.DataArguments(dataset=",".join(names), dataset_dir=os.path.join(self.workspace, folder),
                                       overwrite_cache=True, **data_options)
        chat_template = self.fix(tokenizer, data_args)
        if data_options["template"] == "llama3":  # LLaVA-Llama-3: llama3's turns, LlavaPlugin's images
            chat_template.mm_plugin = self.get_mm_plugin("llava", image_token="<image>")
        examples = self.loader._get_merged_dataset(data_args.dataset, model_args, data_args, self.training_args,
                                                   "sft").to_dict()
        encoded = self.loader._get_dataset_processor(data_args, "sft", chat_template, tokenizer,
                                                     processor).preprocess_dataset(examples)
        pixels = []
        for paths in examples["_images"]:
            mm = chat_template.mm_plugin._get_mm_inputs(paths, [], [], processor) if paths else {}
            pixels.append(mm["pixel_values"].numpy() if paths else None)
        return [[(ids, labels)] for ids, labels in zip(encoded["input_ids"], encoded["labels"])], pixels


def compare_pixels(ours, theirs):
    """Each sample's stored images against the processor's; (problem or None, largest difference)."""
    import numpy as np

    largest = 0.0
    for s, (pixels, our_images) in enumerate(zip(theirs, ours)):
        if pixels is None:
            if our_images:
                return "sample %d: ftpipe stored %d images, LLaMA-Factory none" % (s, len(our_images)), largest
            continue
        grids = [list(image[0]) for image in our_images]
        if grids != [[1, 336, 336]] * pixels.shape[0]:
            return "sample %d: images %s, LLaMA-Factory %d of 3 x 336 x 336" % (s, grids, pixels.shape[0]), largest
        mine = np.concatenate([np.frombuffer(image[1], dtype="<f4") for image in our_images])
        difference = float(np.abs(mine - pixels.reshape(-1)).max())
        largest = max(largest, difference)
        if difference > PIXEL_TOLERANCE:
            return "sample %d: pixel values differ by %.4g" % (s, difference), largest
    return None, largest


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write " + os.path.relpath(EXPECTED, oracle.ROOT))
    args = parser.parse_args()
    cases = oracle.Cases()
    workspace = oracle.scratch_folder("llamafactory-llava")
    os.environ["HF_DATASETS_CACHE"] = os.path.join(workspace, "datasets-cache")
    expected = {}
    try:
        os.makedirs(os.path.join(workspace, "sentencepiece"))
        image_ids = {model: make_model(os.path.join(workspace, model), tokenizer)
                     for model, (tokenizer, _) in MODELS.items()}
        os.symlink(os.path.join(workspace, "model-sentencepiece"), os.path.join(workspace, "sentencepiece", "model"))
        for where in (workspace, os.path.join(workspace, "sentencepiece")):
            os.symlink(os.path.join(DATASETS, "llamafactory_data"), os.path.join(where, "data"))
            os.symlink(os.path.join(DATASETS, "vision_edge"), os.path.join(where, "edge"))
        log = oracle.run_image_checks(workspace, CONFIGS, STAGES, {})
        log += oracle.run_image_checks(os.path.join(workspace, "sentencepiece"),
                                       {c: CONFIGS[c] for c in MODELS["model-sentencepiece"][1]}, STAGES, {})
        lf = LlamaFactory(workspace)
        for model, config in [(m, c) for m, (_, configs) in MODELS.items() for c in configs]:
            sentencepiece = model != "model"
            for stage, folder, _, names in STAGES:
                name = "llamafactory llava images %s, %s%s" % (stage, config,
                                                              ", SentencePiece tokenizer" if sentencepiece else "")
                try:
                    ours, our_images = oracle.image_check_split(
                        os.path.join(workspace, "sentencepiece") if sentencepiece else workspace, config, stage)
                except (OSError, ValueError) as error:
                    said = [line for line in log.splitlines() if oracle.image_check_target(config, stage) in line][-2:]
                    cases.fail(name, "ftpipe made no shards (%s)" % error, said)
                    continue
                theirs, their_pixels = lf.encode(config, folder, names, model)
                problem = compare_rows(ours, theirs)
                largest = 0.0
                if problem is None:
                    problem, largest = compare_pixels(our_images, their_pixels)
                n_image_tokens = sum(ids.count(image_ids[model]) for row in ours for ids, _ in row)
                n_images = sum(len(i) for i in our_images)
                if problem is None and n_image_tokens != IMAGE_TOKENS * n_images:
                    problem = "%d image tokens for %d images" % (n_image_tokens, n_images)
                cases.check(name, problem is None,
                            "%d samples, %d images as %d image tokens: ids, labels identical, pixels within %.2g" % (
                                sum(len(row) for row in ours), n_images, n_image_tokens, largest)
                            if problem is None else problem)
                if sentencepiece:
                    continue
                expected.setdefault(config, {})[stage] = {
                    "parameters": CONFIGS[config][0],
                    "rows": [[[len(ids), digest(ids, "I"), digest(labels, "i")] for ids, labels in row]
                             for row in theirs],
                    "images": [0 if pixels is None else int(pixels.shape[0]) for pixels in their_pixels]}
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
