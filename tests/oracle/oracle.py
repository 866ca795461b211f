"""What the oracle checks (tests/oracle/check_*.py) share: where things are,
how a case is reported, running ftpipe, and reading its token shards.

A check prints one line per case, which tests/oracle/run.py counts:
    ok NAME: what was measured
    not ok NAME: why          (then indented lines with the evidence)
    skip NAME: why            (counted apart: never a pass)
and exits 1 when a case failed."""
import glob
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FTPIPE = os.path.join(ROOT, "build", "ftpipe")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TOKENIZER_FIXTURES = os.path.join(FIXTURES, "tokenizer")

# The references read only what is here: no hub, no telemetry, quiet logs.
for variable, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                        ("HF_HUB_DISABLE_TELEMETRY", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                        ("LLAMAFACTORY_VERBOSITY", "ERROR"), ("TOKENIZERS_PARALLELISM", "true")):
    os.environ.setdefault(variable, value)


class Cases:
    """Reports cases as run.py counts them; finish() gives the exit status."""

    def __init__(self):
        self.failed = 0

    def ok(self, name, detail=""):
        print("ok %s%s" % (name, ": " + detail if detail else ""), flush=True)

    def fail(self, name, why, evidence=()):
        self.failed += 1
        print("not ok %s: %s" % (name, why), flush=True)
        for line in evidence:
            print("  " + str(line)[:400], flush=True)

    def skip(self, name, why):
        print("skip %s: %s" % (name, why), flush=True)

    def check(self, name, passed, detail, evidence=()):
        if passed:
            self.ok(name, detail)
        else:
            self.fail(name, detail, evidence)
        return passed

    def finish(self):
        return 1 if self.failed else 0


def scratch_folder(prefix):
    """A temporary folder, kept when ORACLE_KEEP is set (to look at after a failure)."""
    folder = tempfile.mkdtemp(prefix="ftpipe-oracle-%s." % prefix)
    if os.environ.get("ORACLE_KEEP"):
        print("# %s keeps its files in %s" % (prefix, folder), flush=True)
    return folder


def remove_scratch(folder):
    if not os.environ.get("ORACLE_KEEP"):
        subprocess.run(["rm", "-rf", folder], check=False)


def run(command, **kwargs):
    """Runs a command; returns (exit status, stdout + stderr as text)."""
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)
    return done.returncode, done.stdout.decode("utf-8", "replace")


def unpack_tokenizer(name, folder):
    """The committed tokenizer NAME (tests/fixtures/tokenizer/NAME) as a model folder."""
    os.makedirs(folder, exist_ok=True)
    source = os.path.join(TOKENIZER_FIXTURES, name)
    with open(os.path.join(folder, "tokenizer.json"), "wb") as out:
        subprocess.run(["zstd", "-qdc", os.path.join(source, "tokenizer.json.zst")], stdout=out, check=True)
    with open(os.path.join(source, "tokenizer_config.json"), "rb") as f, \
            open(os.path.join(folder, "tokenizer_config.json"), "wb") as out:
        out.write(f.read())
    return folder


def corpus_lines():
    """The tokenizer test corpus (make_corpus.py's default) as texts, checked to be
    the one the committed expected ids were made from."""
    made = subprocess.run([sys.executable, os.path.join(TOKENIZER_FIXTURES, "make_corpus.py")],
                          stdout=subprocess.PIPE, check=True).stdout
    facts = json.load(open(os.path.join(TOKENIZER_FIXTURES, "fixtures.json")))
    if hashlib.sha256(made).hexdigest() != facts["corpus_sha256"]:
        raise RuntimeError("make_corpus.py no longer makes the corpus of fixtures.json")
    # only "\n" ends a line: a text may hold other line separators
    return [json.loads(line) for line in made.decode("utf-8").split("\n") if line]


def ftpipe_encode(tokenizer_path, texts):
    """`ftpipe encode --jsonl` of texts: one list of ids per text."""
    lines = "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts).encode("utf-8")
    done = subprocess.run([FTPIPE, "encode", "--tokenizer", tokenizer_path, "--jsonl"], input=lines,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise RuntimeError("ftpipe encode failed: " + done.stderr.decode("utf-8", "replace").strip())
    return [[int(t) for t in line.split()] for line in done.stdout.decode("ascii").split("\n")[:len(texts)]]


def ftpipe_decode(tokenizer_path, ids_lists):
    """`ftpipe decode --jsonl` of lists of ids: one text per list."""
    lines = "".join(" ".join(map(str, ids)) + "\n" for ids in ids_lists).encode("ascii")
    done = subprocess.run([FTPIPE, "decode", "--tokenizer", tokenizer_path, "--jsonl"], input=lines,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise RuntimeError("ftpipe decode failed: " + done.stderr.decode("utf-8", "replace").strip())
    return [json.loads(line) for line in done.stdout.decode("utf-8").split("\n")[:len(ids_lists)]]


def vl_export_pipeline(shape, tokenize, evaluate):
    """A vision-language model's whole round as the export checks run it: init
    (shape, f32), tokenize `data` (tokenize: its parameters), LoRA and full
    fine-tuning for 3 steps, each evaluated on `data` (evaluate: the parameters
    beside max_new_tokens and the backend), the adapter exported as peft and
    merged, the full fine-tune merged."""
    params = lambda values: "".join("\t%s = %s\n" % item for item in values.items())
    evaluated = params(dict(evaluate, max_new_tokens=4, backend="cpu"))
    return ("models/tiny: init\n\tshape = %s\n\tdtype = f32\n\n" % shape
            + "tokens: tokenize models/tiny data\n" + params(tokenize)
            + "\nadapter: train models/tiny tokens\n\tbackend = cpu\n\tlearning_rate = 5e-3\n\tmax_steps = 3\n"
              "\tper_device_train_batch_size = 2\n\tlora_rank = 4\n"
            + "\nreport: evaluate models/tiny adapter data\n" + evaluated
            + "\nexport/peft: export adapter\n\nexport/merged: export adapter models/tiny\n\tformat = merged\n"
            + "\nfull: train models/tiny tokens\n\tbackend = cpu\n\tfinetuning_type = full\n\tlearning_rate = 1e-3\n"
              "\tmax_steps = 3\n\tper_device_train_batch_size = 2\n"
            + "\nreport_full: evaluate models/tiny full data\n" + evaluated
            + "\nexport/full: export full\n\tformat = merged\n")


def pipeline_runs(cases, name, root, targets):
    """Runs ftpipe for `targets` in the workspace at root: the case "NAME
    pipeline runs"; False when it failed."""
    status, output = run([FTPIPE, "-C", root] + targets)
    return cases.check("%s pipeline runs" % name, status == 0, "init, tokenize, train, evaluate, export",
                       output.splitlines()[-15:])


def load_peft_export(base, root):
    """PEFT's model of the adapter root/export/peft on `base`, the names of the
    adapter tensors the file holds, and those PEFT put on the model's modules
    (the two sets are equal when every saved tensor loads)."""
    from peft import PeftModel
    from peft.utils import load_peft_weights
    folder = os.path.join(root, "export", "peft")
    model = PeftModel.from_pretrained(base, folder)
    saved = set(load_peft_weights(folder))
    used = {name.replace(".default", "") for name, _ in model.named_parameters() if "lora_" in name}
    return model, saved, used


def eval_loss(root, report):
    """The eval_loss of the evaluate stage whose output is root/report."""
    metrics = json.load(open(os.path.join(root, report, "metrics.json")))
    return metrics["eval_loss"] if "eval_loss" in metrics else metrics["models"][0]["eval_loss"]


def first_difference(a, b):
    """Index of the first element where the sequences differ (or the shorter's length)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


# ---- token shards (include/ftpipe/token_shards.h has the format) ----
SHARD_HEADER = struct.Struct("<8sIIQQQI")
SHARD_MAGIC = b"FTTOKENS"


def _aligned(offset):
    return (offset + 63) // 64 * 64


def read_shard(path):
    """One shard: (packed, row_length, rows), a row being a list of samples and a
    sample a pair (ids, loss_mask) of lists."""
    with open(path, "rb") as f:
        data = f.read()
    magic, version, flags, n_tokens, n_samples, n_rows, row_length = SHARD_HEADER.unpack_from(data, 0)
    if magic != SHARD_MAGIC or version != 1:
        raise ValueError("%s: not a version 1 token shard" % path)
    sample_offsets_at = 64
    row_offsets_at = _aligned(sample_offsets_at + 8 * (n_samples + 1))
    ids_at = _aligned(row_offsets_at + 8 * (n_rows + 1))
    mask_at = _aligned(ids_at + 4 * n_tokens)
    if len(data) != mask_at + n_tokens:
        raise ValueError("%s: %d bytes, the header says %d" % (path, len(data), mask_at + n_tokens))
    sample_offsets = struct.unpack_from("<%dQ" % (n_samples + 1), data, sample_offsets_at)
    row_offsets = struct.unpack_from("<%dQ" % (n_rows + 1), data, row_offsets_at)
    ids = struct.unpack_from("<%dI" % n_tokens, data, ids_at)
    mask = data[mask_at:mask_at + n_tokens]
    rows = []
    for r in range(n_rows):
        row = []
        for s in range(row_offsets[r], row_offsets[r + 1]):
            start, end = sample_offsets[s], sample_offsets[s + 1]
            row.append((list(ids[start:end]), list(mask[start:end])))
        rows.append(row)
    return bool(flags & 1), row_length, rows


def read_split(dataset_dir, split="train"):
    """Every row of a split of a tokenized dataset, shard after shard."""
    rows = []
    shards = sorted(glob.glob(os.path.join(dataset_dir, split, "shard-*.bin")))
    if not shards:
        raise ValueError("%s/%s has no shards" % (dataset_dir, split))
    for shard in shards:
        rows += read_shard(shard)[2]
    return rows


# ---- image stores (include/ftpipe/formats/image_store.h has the format) ----
IMAGE_STORE_HEADER = struct.Struct("<8sIIQQQQI")
IMAGE_LAYOUT_CLIP = 1
IMAGE_ENTRY = struct.Struct("<QQIIIIQ")


def read_image_store(path):
    """A split's images.bin: (images, samples): images a list of (grid (t, h, w),
    pixels as bytes of float32 rows), samples a list of image index lists, in the
    order the split's shards hold the samples."""
    with open(path, "rb") as f:
        data = f.read()
    magic, version, row_length, n_images, n_rows, n_samples, n_refs, layout = IMAGE_STORE_HEADER.unpack_from(data, 0)
    if magic != b"FTIMAGES" or version not in (1, 2):
        raise ValueError("%s: not a version 1 or 2 image store" % path)
    images_at = _aligned(64 + 4 * n_rows * row_length)
    offsets_at = _aligned(images_at + IMAGE_ENTRY.size * n_images)
    refs_at = _aligned(offsets_at + 8 * (n_samples + 1))
    images = []
    for i in range(n_images):
        _, _, t, h, w, _, first_row = IMAGE_ENTRY.unpack_from(data, images_at + IMAGE_ENTRY.size * i)
        start = 64 + 4 * first_row * row_length
        rows = 1 if layout == IMAGE_LAYOUT_CLIP else t * h * w
        images.append(((t, h, w), data[start:start + 4 * rows * row_length]))
    offsets = struct.unpack_from("<%dQ" % (n_samples + 1), data, offsets_at)
    refs = struct.unpack_from("<%dI" % n_refs, data, refs_at)
    return images, [list(refs[offsets[s]:offsets[s + 1]]) for s in range(n_samples)]


def neat_packed_rows(encoded):
    """LLaMA-Factory's neat-packed rows as lists of (ids, labels) per sample: its
    attention_mask numbers a row's samples from 1, and 0 is padding."""
    rows = []
    for ids, labels, segments in zip(encoded["input_ids"], encoded["labels"], encoded["attention_mask"]):
        row = []
        for i, segment in enumerate(segments):
            if segment == 0:
                continue
            if len(row) < segment:
                row.append(([], []))
            row[-1][0].append(ids[i])
            row[-1][1].append(labels[i])
        rows.append(row)
    return rows


# --- the LLaMA-Factory image checks' pipelines (check_llamafactory_images.py, _llava.py) ---

def image_check_target(config, stage):
    """The tokenize stage's target for an option set and a dataset stage."""
    return "out/%s__%s" % (config.replace(",", "_").replace("=", "_"), stage)


def run_image_checks(workspace, configs, stages, extra):
    """One tokenize stage per (option set, dataset stage) with extra parameters
    (a dict) added, all run; returns ftpipe's output."""
    lines = []
    for config, (parameters, _, _) in configs.items():
        for stage, folder, datasets, _ in stages:
            lines.append("%s: tokenize model %s" % (image_check_target(config, stage), folder))
            lines += ["\t%s = %s" % item for item in dict(parameters, **extra, dataset=datasets).items()]
            lines.append("")
    with open(os.path.join(workspace, "Ftpipe"), "w") as f:
        f.write("\n".join(lines))
    return run([FTPIPE, "-C", workspace, "-k", "-j", "2"])[1]


def image_check_split(workspace, config, stage):
    """(rows of (ids, labels) samples, labels -100 where not trained; each
    sample's images as read_image_store gives them)."""
    folder = os.path.join(workspace, image_check_target(config, stage))
    rows = [[(ids, [t if m else -100 for t, m in zip(ids, mask)]) for ids, mask in row]
            for row in read_split(folder)]
    images, samples = read_image_store(os.path.join(folder, "train", "images.bin"))
    return rows, [[images[i] for i in refs] for refs in samples]
