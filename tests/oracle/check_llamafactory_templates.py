#!/usr/bin/env python3
"""Token-level parity of ftpipe's chat templates with LLaMA-Factory's own encoding.

Each case of tests/fixtures/llamafactory_templates/cases.json (constructed edge
cases and records of LLaMA-Factory's demo data) is encoded here by LLaMA-Factory's
SupervisedDatasetProcessor with the template of that name, on the committed Qwen3
or Llama 3 tokenizer, and compared, ids and loss masks, with:
  - expected.json, the fixture `make test` compares ftpipe against
    (tests/unit/text/test_template_parity.c); --write rewrites it instead;
  - ftpipe's own encoding (`ftpipe encode --template`) when --ftpipe names the
    binary (default: build/ftpipe when it exists).
Prints one "ok"/"not ok" line per case and ends with "N passed, N failed"; exits
1 on any difference. Runs with any python that has llamafactory installed.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "llamafactory_templates")
TOKENIZERS = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
IGNORE_INDEX = -100


def load_tokenizer(name, folder):
    """The committed tokenizer NAME (zstd tokenizer.json and its config) as transformers loads it."""
    from transformers import AutoTokenizer

    target = os.path.join(folder, name)
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, "tokenizer.json"), "wb") as out:
        subprocess.run(["zstd", "-qdc", os.path.join(TOKENIZERS, name, "tokenizer.json.zst")], stdout=out, check=True)
    with open(os.path.join(TOKENIZERS, name, "tokenizer_config.json")) as f:
        config = f.read()
    with open(os.path.join(target, "tokenizer_config.json"), "w") as f:
        f.write(config)
    return AutoTokenizer.from_pretrained(target)


def encode_with_llamafactory(case, tokenizer):
    """input_ids and labels as LLaMA-Factory's supervised preprocessing makes them."""
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
    from llamafactory.data.template import get_template_and_fix_tokenizer

    data_args = SimpleNamespace(
        template=case["template"],
        train_on_prompt=case.get("train_on_prompt", False),
        mask_history=case.get("mask_history", False),
        cutoff_len=case.get("cutoff_len", 2048),
        enable_thinking=case.get("enable_thinking", True),
        preserve_thinking=False,
        tool_format=None,
        default_system=None,
    )
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    # Vision-language templates (qwen2_vl) want a processor even for text; on a
    # record without images it is only asked for its merge size.
    processor = None
    if template.mm_plugin.image_token is not None:
        processor = SimpleNamespace(image_processor=SimpleNamespace(merge_size=2))
    processor = SupervisedDatasetProcessor(
        template=template, tokenizer=tokenizer, processor=processor, data_args=data_args
    )
    messages = case["messages"]
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    input_ids, labels = processor._encode_data_example(
        prompt=turns[:-1], response=turns[-1:], system=system, tools=None, images=[], videos=[], audios=[]
    )
    return list(input_ids), [0 if label == IGNORE_INDEX else 1 for label in labels], list(labels)


def encode_with_ftpipe(ftpipe, case, model_folder):
    """ids and loss mask from `ftpipe render`."""
    command = [ftpipe, "render", "--tokenizer", model_folder, "--template", case["template"]]
    if case.get("cutoff_len"):
        command += ["--cutoff-len", str(case["cutoff_len"])]
    for flag in ("mask_history", "train_on_prompt"):
        if case.get(flag):
            command.append("--" + flag.replace("_", "-"))
    if case.get("enable_thinking") is False:
        command.append("--no-thinking")
    result = subprocess.run(command, input=json.dumps(case["messages"]), capture_output=True, text=True)
    if result.returncode != 0:
        return None, None, result.stderr.strip()
    encoded = json.loads(result.stdout)
    return encoded["ids"], encoded["loss_mask"], None


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b)) if len(a) != len(b) else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite expected.json from LLaMA-Factory's encoding")
    parser.add_argument("--ftpipe", default=os.path.join(ROOT, "build", "ftpipe"), help="the ftpipe binary")
    args = parser.parse_args()
    try:
        import llamafactory
    except ImportError as error:
        print(f"not ok - llamafactory cannot be imported ({error}); run with the oracle environment's python")
        print("0 passed, 1 failed")
        return 1

    with open(os.path.join(FIXTURES, "cases.json")) as f:
        cases = json.load(f)["cases"]
    expected_path = os.path.join(FIXTURES, "expected.json")
    expected = {}
    if not args.write:
        with open(expected_path) as f:
            expected = {c["name"]: c for c in json.load(f)["cases"]}
    use_ftpipe = os.access(args.ftpipe, os.X_OK)
    if not use_ftpipe and not args.write:
        print(f"# {args.ftpipe} is not built: comparing LLaMA-Factory with the committed fixtures only")

    passed = failed = 0
    written = []
    with tempfile.TemporaryDirectory() as folder:
        tokenizers = {}
        for case in cases:
            name = case["tokenizer"]
            if name not in tokenizers:
                tokenizers[name] = load_tokenizer(name, folder)
            # each template fixes its tokenizer's special tokens in place: one copy per template
            if (name, case["template"]) not in tokenizers:
                tokenizers[name, case["template"]] = copy.deepcopy(tokenizers[name])
            ids, mask, labels = encode_with_llamafactory(case, tokenizers[name, case["template"]])
            if args.write:
                written.append({"name": case["name"], "input_ids": ids, "loss_mask": mask})
                continue
            problems = []
            fixture = expected.get(case["name"])
            if fixture is None:
                problems.append("no entry in expected.json (rerun with --write)")
            elif fixture["input_ids"] != ids or fixture["loss_mask"] != mask:
                at = first_difference(fixture["input_ids"], ids)
                at = at if at is not None else first_difference(fixture["loss_mask"], mask)
                problems.append(f"expected.json differs from llamafactory {llamafactory.__version__} at token {at}")
            if use_ftpipe:
                ft_ids, ft_mask, error = encode_with_ftpipe(args.ftpipe, case, os.path.join(folder, name))
                if error:
                    problems.append(f"ftpipe failed: {error}")
                elif ft_ids != ids or ft_mask != mask:
                    at = first_difference(ft_ids, ids)
                    at = at if at is not None else first_difference(ft_mask, mask)
                    problems.append(f"ftpipe differs at token {at}: ftpipe {ft_ids[at:at + 8]} mask "
                                    f"{ft_mask[at:at + 8]}, llamafactory {ids[at:at + 8]} mask {mask[at:at + 8]}")
            if problems:
                failed += 1
                print(f"not ok - {case['name']} ({case['template']}, {name}): " + "; ".join(problems))
            else:
                passed += 1
                print(f"ok - {case['name']} ({case['template']}, {name}, {len(ids)} tokens)")
    if args.write:
        with open(expected_path, "w") as f:
            json.dump({"llamafactory": llamafactory.__version__, "cases": written}, f, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {len(written)} cases to {expected_path}")
        return 0
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
