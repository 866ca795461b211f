#!/usr/bin/env python3
"""Parity of `tokenize` with `stage = pt` against LLaMA-Factory's pretraining preprocessing.

LLaMA-Factory's demo pretraining data (c4_demo.jsonl and wiki_demo.txt, the
committed excerpts under tests/fixtures/datasets/llamafactory_data) is read with
Hugging Face `datasets` as LLaMA-Factory reads it and turned into blocks by its
PretrainDatasetProcessor (packing on, as for stage pt); ftpipe tokenizes the same
files through a pipeline and its token shards are compared block by block, for
the qwen3_nothink template on the Qwen3 tokenizer and llama3 on the Llama 3 one.
With --write, each case's block count, the SHA-256 of all its ids (uint32,
little-endian, block after block) and its first block are written to
expected_pretraining.json there instead, for tests/e2e/test_pretraining.sh. Prints "ok"/"not ok" per case and
"N passed, N failed"; exits 1 on any difference.
"""
import argparse
import copy
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_llamafactory_templates import ROOT, load_tokenizer  # noqa: E402

DATA = os.path.join(ROOT, "tests", "fixtures", "datasets", "llamafactory_data")
CASES = [  # (name, template, tokenizer, dataset_info entry, cutoff_len)
    ("c4_qwen3", "qwen3_nothink", "qwen3", "c4_demo", 256),
    ("wiki_qwen3", "qwen3_nothink", "qwen3", "wiki_demo", 512),
    ("c4_llama3", "llama3", "llama3", "c4_demo", 256),
    ("wiki_llama3", "llama3", "llama3", "wiki_demo", 128),
]


def llamafactory_blocks(template_name, tokenizer, entry, cutoff_len):
    import datasets
    from llamafactory.data.processor.pretrain import PretrainDatasetProcessor
    from llamafactory.data.template import get_template_and_fix_tokenizer

    info = json.load(open(os.path.join(DATA, "dataset_info.json")))[entry]
    path = os.path.join(DATA, info["file_name"])
    builder = "text" if path.endswith(".txt") else "json"
    rows = datasets.load_dataset(builder, data_files=path, split="train")
    column = info.get("columns", {}).get("prompt", "instruction")
    data_args = SimpleNamespace(template=template_name, cutoff_len=cutoff_len, packing=True, train_on_prompt=False,
                                tool_format=None, default_system=None, enable_thinking=True, preserve_thinking=False)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    processor = PretrainDatasetProcessor(template=template, tokenizer=tokenizer, processor=None, data_args=data_args)
    # LLaMA-Factory's alpaca converter: the prompt column is the user message
    prompts = [[{"role": "user", "content": row[column] or ""}] for row in rows]
    return [list(block) for block in processor.preprocess_dataset({"_prompt": prompts})["input_ids"]]


def read_shards(split_dir):
    """Every row's ids and loss mask from ftpipe's token shards."""
    rows = []
    for name in sorted(os.listdir(split_dir)):
        data = open(os.path.join(split_dir, name), "rb").read()
        n_tokens, n_samples, n_rows = struct.unpack_from("<QQQ", data, 16)

        def section(offset, size):
            return (offset + size + 63) // 64 * 64

        samples_at = 64
        rows_at = section(samples_at, 8 * (n_samples + 1))
        ids_at = section(rows_at, 8 * (n_rows + 1))
        mask_at = section(ids_at, 4 * n_tokens)
        offsets = struct.unpack_from(f"<{n_samples + 1}Q", data, samples_at)
        ids = struct.unpack_from(f"<{n_tokens}I", data, ids_at)
        mask = data[mask_at:mask_at + n_tokens]
        for i in range(n_samples):
            rows.append((list(ids[offsets[i]:offsets[i + 1]]), list(mask[offsets[i]:offsets[i + 1]])))
    return rows


def ftpipe_blocks(ftpipe, workspace, model_folder, template_name, entry, cutoff_len):
    target = f"pt_{entry}_{template_name}_{cutoff_len}"
    with open(os.path.join(workspace, "Ftpipe"), "w") as f:
        f.write(f"{target}: tokenize {model_folder} {DATA}\n\tstage = pt\n\ttemplate = {template_name}\n"
                f"\tdataset = {entry}\n\tcutoff_len = {cutoff_len}\n")
    result = subprocess.run([ftpipe, "-C", workspace, target], capture_output=True, text=True)
    if result.returncode != 0:
        return None, (result.stdout + result.stderr).strip()[-800:]
    return read_shards(os.path.join(workspace, target, "train")), None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="write expected_pretraining.json")
    parser.add_argument("--ftpipe", default=os.path.join(ROOT, "build", "ftpipe"))
    args = parser.parse_args()
    passed = failed = 0
    expected = {}
    with tempfile.TemporaryDirectory() as folder:
        tokenizers = {}
        for name, template_name, tokenizer_name, entry, cutoff_len in CASES:
            if tokenizer_name not in tokenizers:
                tokenizers[tokenizer_name] = load_tokenizer(tokenizer_name, folder)
            blocks = llamafactory_blocks(template_name, copy.deepcopy(tokenizers[tokenizer_name]), entry, cutoff_len)
            if args.write:
                all_ids = struct.pack(f"<{sum(map(len, blocks))}I", *[i for block in blocks for i in block])
                expected[name] = {"template": template_name, "tokenizer": tokenizer_name, "dataset": entry,
                                  "cutoff_len": cutoff_len, "n_blocks": len(blocks),
                                  "ids_sha256": hashlib.sha256(all_ids).hexdigest(), "first_block": blocks[0]}
                continue
            workspace = os.path.join(folder, "ws-" + name)
            os.makedirs(workspace)
            rows, error = ftpipe_blocks(args.ftpipe, workspace, os.path.join(folder, tokenizer_name), template_name,
                                        entry, cutoff_len)
            problem = None
            if error:
                problem = f"ftpipe failed: {error}"
            elif len(rows) != len(blocks):
                problem = f"ftpipe made {len(rows)} blocks, LLaMA-Factory {len(blocks)}"
            else:
                for i, ((ids, mask), block) in enumerate(zip(rows, blocks)):
                    if ids != block or set(mask) != {1}:
                        at = next((j for j, (a, b) in enumerate(zip(ids, block)) if a != b), None)
                        problem = f"block {i} differs at token {at}"
                        break
            if problem:
                failed += 1
                print(f"not ok - {name}: {problem}")
            else:
                passed += 1
                print(f"ok - {name} ({len(blocks)} blocks of {cutoff_len})")
    if args.write:
        path = os.path.join(DATA, "expected_pretraining.json")
        with open(path, "w") as f:
            json.dump(expected, f, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {path}")
        return 0
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
