"""ftpipe's tokenize stage against LLaMA-Factory's own encoding.

For every chat template ftpipe names after one of LLaMA-Factory's, the datasets
are encoded twice: by ftpipe's tokenize stage (its token shards read back here)
and by LLaMA-Factory's loader, template and supervised processor, imported
from the installed llamafactory package, with the same tokenizer and the same
options. Token ids and loss masks (LLaMA-Factory's labels, -100 where no loss
is taken) must be identical, sample by sample; packed, row by row.

The datasets: LLaMA-Factory's demo data (tests/fixtures/datasets/llamafactory,
through its dataset_info.json), the tokenize tests' alpaca.json and
sharegpt.jsonl, and edge cases written below (system prompts present, absent
and empty; several turns; white space at the edges; CJK, emoji and text that
NFC changes; special tokens inside content; reasoning blocks; turns long
enough that cutoff_len cuts the prompt, the answer, both, or whole turns).
The options: the defaults, a small cutoff_len, train_on_prompt, mask_history
(alone and with a small cutoff_len), and packing (LLaMA-Factory's
neat_packing: attention stays inside each sample, as in ftpipe), with a
cutoff_len that cuts no sample and with one that does."""
import copy
import json
import os
import re
import shutil
import sys
import time
import types

import oracle

# llamafactory 0.9.5 declares transformers<=5.6.0; the environment has the
# transformers the other references need (requirements.txt says why).
os.environ["DISABLE_VERSION_CHECK"] = "1"

# Which committed tokenizers a template is checked with (default: both). A template
# whose special tokens a tokenizer lacks is refused by ftpipe by design (ChatML on
# Llama 3's tokenizer), where LLaMA-Factory would encode them as text.
TOKENIZERS = {"qwen": ["qwen3"], "qwen3": ["qwen3"], "qwen3_nothink": ["qwen3"], "qwen2_vl": ["qwen3"],
              "llama3": ["llama3"]}
# Templates whose LLaMA-Factory loader wants an image processor even for text records
# (qwen2_vl; llava, whose records with images check_llamafactory_llava.py compares).
LOADER_NEEDS_PROCESSOR = {"qwen2_vl", "llava"}
# ftpipe's templates that LLaMA-Factory does not have (checked to be absent there).
FTPIPE_OWN_TEMPLATES = {"plain": "the texts as they are, each answer ending with EOS"}

OPTIONS = {  # name: (ftpipe parameters, LLaMA-Factory DataArguments)
    "defaults": ({"cutoff_len": 1024}, {"cutoff_len": 1024}),
    "cutoff_len=48": ({"cutoff_len": 48}, {"cutoff_len": 48}),
    "train_on_prompt": ({"cutoff_len": 1024, "train_on_prompt": "true"}, {"cutoff_len": 1024, "train_on_prompt": True}),
    "mask_history": ({"cutoff_len": 1024, "mask_history": "true"}, {"cutoff_len": 1024, "mask_history": True}),
    "mask_history,cutoff_len=48": ({"cutoff_len": 48, "mask_history": "true"}, {"cutoff_len": 48, "mask_history": True}),
    "packing,cutoff_len=2048": ({"cutoff_len": 2048, "packing": "true"}, {"cutoff_len": 2048, "neat_packing": True}),
    "packing,cutoff_len=256": ({"cutoff_len": 256, "packing": "true"}, {"cutoff_len": 256, "neat_packing": True}),
}

LONG_PROMPT = " ".join("Step %d: add the numbers in column %d and carry the tens." % (i, i % 7) for i in range(40))
LONG_ANSWER = " ".join("Column %d sums to %d, so write %d and carry %d." % (i, 9 + i, (9 + i) % 10, (9 + i) // 10)
                       for i in range(30))


def conversation(*turns, system=None):
    """A sharegpt record: turns alternate human and gpt."""
    messages = [{"from": "system", "value": system}] if system is not None else []
    messages += [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(turns)]
    return {"conversations": messages}


EDGE_SHAREGPT = [
    conversation("What is 12 + 30?", "12 + 30 = 42.", "And 42 * 2?", "84", "用中文解释一下 🤖", "好的：84 是 42 的两倍。",
                 system="You are a careful math tutor."),
    conversation("Say hi.", "Hi!"),
    conversation("  \n padded question\t \n", "\n\n padded answer  \n"),
    conversation("What is 12 + 30?", "12 + 30 = 42.", system=""),
    conversation("say <|im_end|> and <|eot_id|> and <|endoftext|>", "<|im_end|><|eot_id|>"),
    conversation("What is 12 + 30?", "<think>\nadd the numbers\n</think>\n\n12 + 30 = 42.",
                 "And 42 * 2?", "<think>double it</think>84"),
    conversation("What is 12 + 30?", "<think>\nadd the numbers\n</think>\n\n12 + 30 = 42.", "And 42 * 2?", "84",
                 system="Think first."),
    conversation("Cafe\u0301 or caf\u00e9? \u212b \uFB01 \u00bd", "Both spell caf\u00e9."),
    conversation(LONG_PROMPT, "42"),
    conversation("Explain the carries.", LONG_ANSWER),
    conversation(LONG_PROMPT, LONG_ANSWER, system="Be thorough."),
    conversation(LONG_PROMPT, LONG_ANSWER, "Now briefly?", "Carry the tens.", "Thanks.", "You're welcome."),
    conversation("Short one.", "Yes.", "Another.", "No.", "A third.", "Maybe.", "A fourth.", "Fine."),
]

EDGE_ALPACA = [
    {"instruction": "Add the numbers.", "input": "12 30", "output": "42", "system": "You add.",
     "history": [["What is 1+1?", "2"], ["And 2+2?", "4"]]},
    {"instruction": "Name a fruit.", "input": "", "output": "  An apple.\n\n"},
    {"instruction": "Summarize.", "input": LONG_PROMPT, "output": LONG_ANSWER},
    {"instruction": "Translate to French", "input": "cat", "output": "chat", "system": ""},
]


def write_json(path, value, lines=False):
    with open(path, "w", encoding="utf-8") as f:
        if lines:
            for record in value:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            json.dump(value, f, ensure_ascii=False, indent=1)


def make_datasets(data):
    """Writes the data both sides read. Returns the stages of each configuration:
    (name, ftpipe's inputs and parameters, the datasets as LLaMA-Factory names
    them, in ftpipe's order, each with a label)."""
    fixtures = os.path.join(oracle.FIXTURES, "datasets")
    shutil.copytree(os.path.join(fixtures, "llamafactory"), os.path.join(data, "lf"))
    for name in ("alpaca.json", "sharegpt.jsonl"):
        shutil.copy(os.path.join(fixtures, name), data)
    write_json(os.path.join(data, "edge_sharegpt.jsonl"), EDGE_SHAREGPT, lines=True)
    write_json(os.path.join(data, "edge_alpaca.json"), EDGE_ALPACA)

    # LLaMA-Factory reads everything through a dataset_info.json of its own: the
    # demo entries as they are, the other files as the formats ftpipe detects.
    lf = os.path.join(data, "for_llamafactory")
    shutil.copytree(os.path.join(data, "lf"), lf)
    info = json.load(open(os.path.join(lf, "dataset_info.json")))
    # It lists a folder's files in no set order (and refuses parts/ for its
    # README.txt): ftpipe reads them in name order, so each file is an entry here.
    for part in ("a", "b"):
        info["parts_" + part] = dict(info["parts"], file_name="parts/%s.jsonl" % part)
    sharegpt_records = [json.loads(line) for line in open(os.path.join(data, "sharegpt.jsonl")) if line.strip()]
    write_json(os.path.join(lf, "sharegpt_conversations.jsonl"), [r for r in sharegpt_records if "conversations" in r],
               lines=True)
    write_json(os.path.join(lf, "sharegpt_messages.jsonl"), [r for r in sharegpt_records if "messages" in r], lines=True)
    for name in ("alpaca.json", "edge_sharegpt.jsonl", "edge_alpaca.json"):
        shutil.copy(os.path.join(data, name), lf)
    # A file given to ftpipe directly has its system and history fields read:
    # LLaMA-Factory reads them when its columns name them.
    alpaca_columns = {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                      "history": "history"}
    info.update({
        "alpaca_file": {"file_name": "alpaca.json", "columns": alpaca_columns},
        "sharegpt_conversations": {"file_name": "sharegpt_conversations.jsonl", "formatting": "sharegpt"},
        "sharegpt_messages": dict(info["openai"], file_name="sharegpt_messages.jsonl"),
        "edge_sharegpt": {"file_name": "edge_sharegpt.jsonl", "formatting": "sharegpt"},
        "edge_alpaca": {"file_name": "edge_alpaca.json", "columns": alpaca_columns},
    })
    write_json(os.path.join(lf, "dataset_info.json"), info)
    return [
        ("demo", "data/lf", {"dataset": "alpaca_demo,renamed,openai,parts"},
         [("alpaca_demo", "alpaca_demo"), ("renamed", "renamed"), ("openai", "openai"), ("parts/a.jsonl", "parts_a"),
          ("parts/b.jsonl", "parts_b")]),
        ("files", "data/alpaca.json data/sharegpt.jsonl data/edge_sharegpt.jsonl data/edge_alpaca.json", {},
         [("alpaca.json", "alpaca_file"), ("sharegpt.jsonl", "sharegpt_conversations"),
          ("sharegpt.jsonl", "sharegpt_messages"), ("edge_sharegpt.jsonl", "edge_sharegpt"),
          ("edge_alpaca.json", "edge_alpaca")]),
    ]


def ftpipe_templates(workspace):
    """The template names ftpipe knows, from its refusal of an unknown one."""
    with open(os.path.join(workspace, "Ftpipe"), "w") as f:
        f.write("probe: tokenize models/qwen3 data/alpaca.json\n\ttemplate = no-such-template\n")
    _, output = oracle.run([oracle.FTPIPE, "-C", workspace, "probe"])
    found = re.search(r"known: ([a-z0-9_, ]+)", output)
    if not found:
        raise RuntimeError("ftpipe did not list its templates: " + output.strip())
    return [name.strip() for name in found.group(1).split(",")]


def config_name(template, tokenizer, option):
    return "%s,%s,%s" % (template, tokenizer, option)


def target_folder(config, stage):
    return "out/" + re.sub(r"[^A-Za-z0-9_.-]+", "_", config + "__" + stage)


def run_ftpipe(workspace, configs, stages):
    """One pipeline with a tokenize stage per configuration and stage; returns
    the log of the run (the stages that failed are missing afterwards)."""
    lines = []
    for template, tokenizer, option in configs:
        config = config_name(template, tokenizer, option)
        for name, inputs, parameters, _ in stages:
            lines.append("%s: tokenize models/%s %s" % (target_folder(config, name), tokenizer, inputs))
            every = dict(parameters, template=template, **OPTIONS[option][0])
            lines += ["\t%s = %s" % item for item in every.items()]
            lines.append("")
    with open(os.path.join(workspace, "Ftpipe"), "w") as f:
        f.write("\n".join(lines))
    return oracle.run([oracle.FTPIPE, "-C", workspace, "-k", "-j", "2"])[1]


def ftpipe_rows(workspace, config, stage):
    """ftpipe's rows as lists of (ids, labels) samples, labels -100 where the mask is 0."""
    folder = os.path.join(workspace, target_folder(config, stage))
    return [[(ids, [t if m else -100 for t, m in zip(ids, mask)]) for ids, mask in row]
            for row in oracle.read_split(folder)]


class LlamaFactory:
    """LLaMA-Factory's data path, from its package: the loader and converters
    (dataset_info.json), the template (with its fix of the tokenizer), and the
    supervised processors."""

    def __init__(self, dataset_dir, models):
        import datasets
        from llamafactory.data import loader
        from llamafactory.data.template import TEMPLATES, get_template_and_fix_tokenizer
        from llamafactory.hparams import DataArguments, ModelArguments
        from llamafactory.model import load_tokenizer

        datasets.disable_progress_bars()
        self.loader, self.templates, self.fix = loader, TEMPLATES, get_template_and_fix_tokenizer
        self.DataArguments, self.ModelArguments, self.load_tokenizer = DataArguments, ModelArguments, load_tokenizer
        self.dataset_dir, self.models = dataset_dir, models
        self.training_args = types.SimpleNamespace(seed=42, local_process_index=0, dataloader_num_workers=0,
                                                   predict_with_generate=False, should_log=False)
        self.aligned = {}
        self.tokenizers = {}

    def tokenizer(self, template, name):
        """A tokenizer as LLaMA-Factory loads it; the template fixes it in place, so one per template."""
        if (template, name) not in self.tokenizers:
            arguments = self.ModelArguments(model_name_or_path=os.path.join(self.models, name))
            self.tokenizers[(template, name)] = self.load_tokenizer(arguments)["tokenizer"]
        return self.tokenizers[(template, name)]

    def examples(self, names):
        """The datasets in LLaMA-Factory's aligned form (_prompt, _response, ...), as columns."""
        key = tuple(names)
        if key not in self.aligned:
            data_args = self.DataArguments(dataset=",".join(names), dataset_dir=self.dataset_dir, overwrite_cache=True)
            model_args = self.ModelArguments(model_name_or_path=self.models)
            merged = self.loader._get_merged_dataset(data_args.dataset, model_args, data_args, self.training_args, "sft")
            self.aligned[key] = merged.to_dict()
        return copy.deepcopy(self.aligned[key])

    def rows(self, template, tokenizer_name, option, names):
        """LLaMA-Factory's rows as lists of (ids, labels) samples."""
        data_args = self.DataArguments(template=template, **OPTIONS[option][1])
        tokenizer = self.tokenizer(template, tokenizer_name)
        chat_template = self.fix(tokenizer, data_args)
        processor = self.loader._get_dataset_processor(data_args, "sft", chat_template, tokenizer, None)
        encoded = processor.preprocess_dataset(self.examples(names))
        if not data_args.packing:
            return [[(ids, labels)] for ids, labels in zip(encoded["input_ids"], encoded["labels"])]
        return oracle.neat_packed_rows(encoded)


def describe_difference(ours, theirs, tokenizer):
    """Where two lists of rows first differ, decoded, for the failure's evidence."""
    if len(ours) != len(theirs):
        return ["ftpipe has %d rows, LLaMA-Factory %d" % (len(ours), len(theirs))]
    for r, (row_a, row_b) in enumerate(zip(ours, theirs)):
        if len(row_a) != len(row_b):
            return ["row %d: ftpipe packs %d samples (%s tokens), LLaMA-Factory %d (%s)" % (
                r, len(row_a), [len(s[0]) for s in row_a], len(row_b), [len(s[0]) for s in row_b])]
        for s, ((ids_a, labels_a), (ids_b, labels_b)) in enumerate(zip(row_a, row_b)):
            if ids_a != ids_b:
                at = oracle.first_difference(ids_a, ids_b)
                return ["row %d sample %d: ids differ at token %d of %d/%d" % (r, s, at, len(ids_a), len(ids_b)),
                        "ftpipe:         %r" % tokenizer.decode(ids_a[max(0, at - 8):at + 12]),
                        "LLaMA-Factory:  %r" % tokenizer.decode(ids_b[max(0, at - 8):at + 12])]
            if labels_a != labels_b:
                at = oracle.first_difference(labels_a, labels_b)
                trained = lambda labels: tokenizer.decode([t for t in labels if t != -100])
                return ["row %d sample %d: loss masks differ at token %d (%r)" % (
                            r, s, at, tokenizer.decode(ids_a[max(0, at - 4):at + 8])),
                        "ftpipe trains on:         %r" % trained(labels_a)[:300],
                        "LLaMA-Factory trains on:  %r" % trained(labels_b)[:300]]
    return []


def main():
    cases = oracle.Cases()
    workspace = oracle.scratch_folder("llamafactory")
    os.environ["HF_DATASETS_CACHE"] = os.path.join(workspace, "datasets-cache")
    try:
        models = os.path.join(workspace, "models")
        for name in ("qwen3", "llama3"):
            oracle.unpack_tokenizer(name, os.path.join(models, name))
        data = os.path.join(workspace, "data")
        os.makedirs(data)
        stages = make_datasets(data)
        lf = LlamaFactory(os.path.join(data, "for_llamafactory"), models)

        ours = ftpipe_templates(workspace)
        compared = [t for t in ours if t not in FTPIPE_OWN_TEMPLATES]
        unknown = [t for t in compared if t not in lf.templates]
        wrongly_own = [t for t in ours if t in FTPIPE_OWN_TEMPLATES and t in lf.templates]
        cases.check("llamafactory templates", not unknown and not wrongly_own,
                    "ftpipe's %s are LLaMA-Factory's and compared below; %s" % (
                        ", ".join(compared), "; ".join("%s is ftpipe's own (%s; LLaMA-Factory has none by that name)"
                                                       % item for item in FTPIPE_OWN_TEMPLATES.items()))
                    if not unknown and not wrongly_own else
                    "templates LLaMA-Factory lacks: %s; LLaMA-Factory has a template by the name of ftpipe's own: %s"
                    % (", ".join(unknown) or "none", ", ".join(wrongly_own) or "none"))
        # qwen2_vl's loader path needs a model's image processor even for text;
        # check_llamafactory_templates.py compares it through the template itself
        compared = [t for t in compared if t in lf.templates and t not in LOADER_NEEDS_PROCESSOR]

        configs = [(t, k, o) for t in compared for k in TOKENIZERS.get(t, ["qwen3", "llama3"]) for o in OPTIONS]
        started = time.time()
        log = run_ftpipe(workspace, configs, stages)
        print("# ftpipe: %d tokenize stages in %.1f s" % (len(configs) * len(stages), time.time() - started))
        started = time.time()
        for template, tokenizer_name, option in configs:
            config = config_name(template, tokenizer_name, option)
            tokenizer = lf.tokenizer(template, tokenizer_name)
            problems, differing, n_datasets, n_samples, n_tokens, n_trained = [], [], 0, 0, 0, 0
            for stage, _, _, sources in stages:
                n_datasets += len(sources)
                try:
                    ours = ftpipe_rows(workspace, config, stage)
                except (OSError, ValueError) as error:
                    folder = target_folder(config, stage)
                    said = [line for line in log.splitlines() if folder in line][-3:] or log.splitlines()[-3:]
                    problems += ["%s: ftpipe made no shards (%s); it said:" % (stage, error)] + said
                    differing.append(stage)
                    continue
                n_samples += sum(len(row) for row in ours)
                n_tokens += sum(len(ids) for row in ours for ids, _ in row)
                n_trained += sum(sum(1 for t in labels if t != -100) for row in ours for _, labels in row)
                if OPTIONS[option][1].get("neat_packing"):  # rows hold samples of every dataset
                    theirs = lf.rows(template, tokenizer_name, option, [name for _, name in sources])
                    difference = describe_difference(ours, theirs, tokenizer)
                    if difference:
                        differing.append("%s (packed together)" % stage)
                        problems += ["%s: %s" % (differing[-1], difference[0])] + difference[1:]
                    continue
                theirs = [lf.rows(template, tokenizer_name, option, [name]) for _, name in sources]
                if len(ours) != sum(len(rows) for rows in theirs):
                    differing.append(stage)
                    problems.append("%s: ftpipe has %d samples, LLaMA-Factory %s" % (
                        stage, len(ours), " + ".join("%d (%s)" % (len(rows), label)
                                                     for rows, (label, _) in zip(theirs, sources))))
                    continue
                for rows, (label, _) in zip(theirs, sources):
                    difference = describe_difference(ours[:len(rows)], rows, tokenizer)
                    if difference:
                        differing.append(label)
                        problems += ["%s: %s" % (label, difference[0])] + difference[1:]
                    ours = ours[len(rows):]
            cases.check("llamafactory %s, %s tokenizer, %s" % (template, tokenizer_name, option), not problems,
                        "%d datasets, %d samples, %d tokens (%d trained on): ids and labels identical"
                        % (n_datasets, n_samples, n_tokens, n_trained) if not problems else
                        "differs on %s" % "; ".join(differing), problems)
        print("# LLaMA-Factory: %d configurations in %.1f s" % (len(configs), time.time() - started))
    finally:
        oracle.remove_scratch(workspace)
    return cases.finish()


if __name__ == "__main__":
    sys.exit(main())
