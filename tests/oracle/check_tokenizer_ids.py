"""`ftpipe encode` against Hugging Face `tokenizers`, run here and now.

Every tokenizer the tests use (the committed Qwen3 and Llama 3 files, the
SentencePiece-style ones of make_sentencepiece.py, the tokenizer tests' tiny one, the tokenize tests' byte model, and the one the init
stage writes) encodes the tokenizer corpus (tests/fixtures/tokenizer/
make_corpus.py) and every text of the datasets the tests use: each string of
tests/fixtures/datasets, the quickstart's addition data, and the chat-template
cases (tests/fixtures/tokenizer/chat_templates.json: messages and renderings).
ftpipe's ids must equal tokenizers' encode_batch (add_special_tokens=False, as
the fixtures were made) line for line, and for the SentencePiece-style ones
`ftpipe decode` of those ids must equal tokenizers' decode. Also: tokenizers' ids today equal the
committed expected_*.ids.zst that `make test` holds ftpipe to."""
import glob
import json
import os
import subprocess
import sys

import oracle


def strings_in(value):
    """Every string inside a JSON value (keys excluded)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)


def dataset_texts():
    """(name, texts) of the datasets the tests use."""
    found = []
    datasets = os.path.join(oracle.FIXTURES, "datasets")
    for path in sorted(glob.glob(os.path.join(datasets, "**", "*.json*"), recursive=True)):
        if os.path.basename(path) in ("tokenizer.json", "tokenizer_config.json", "dataset_info.json"):
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        values = [json.loads(line) for line in text.splitlines() if line.strip()] if path.endswith(".jsonl") \
            else [json.loads(text)]
        found.append((os.path.relpath(path, oracle.ROOT), [s for v in values for s in strings_in(v)]))
    addition = subprocess.run(["sh", os.path.join(oracle.ROOT, "examples", "quickstart", "make_addition_data.sh"),
                               "train", "200"], stdout=subprocess.PIPE, check=True).stdout
    found.append(("the quickstart's addition data", list(strings_in(json.loads(addition)))))
    templates = json.load(open(os.path.join(oracle.TOKENIZER_FIXTURES, "chat_templates.json"), encoding="utf-8"))
    found.append(("chat_templates.json", [s for case in templates["cases"]
                                          for s in list(strings_in(case["messages"])) + [case["text"]]]))
    return found


def init_tokenizer(folder):
    """The tokenizer the init stage writes (the quickstart's)."""
    with open(os.path.join(folder, "Ftpipe"), "w") as f:
        f.write("models/tiny: init\n\tshape = tiny\n\tdtype = f32\n")
    status, output = oracle.run([oracle.FTPIPE, "-C", folder])
    if status != 0:
        raise RuntimeError("the init stage failed: " + output.strip())
    return os.path.join(folder, "models", "tiny", "tokenizer.json")


def compare(cases, name, tokenizer_path, texts_by_source):
    from tokenizers import Tokenizer
    reference = Tokenizer.from_file(tokenizer_path)
    problems, n_texts, n_tokens = [], 0, 0
    for source, texts in texts_by_source:
        theirs = [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
        try:
            ours = oracle.ftpipe_encode(tokenizer_path, texts)
        except RuntimeError as error:
            problems.append("%s: %s" % (source, error))
            continue
        n_texts += len(texts)
        n_tokens += sum(len(ids) for ids in theirs)
        bad = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
        if bad:
            i = bad[0]
            at = oracle.first_difference(ours[i], theirs[i])
            problems += ["%s: %d of %d texts differ; the first, text %d, at token %d: %r" % (
                             source, len(bad), len(texts), i + 1, at, texts[i][:120]),
                         "ftpipe:     %s" % ours[i][max(0, at - 3):at + 8],
                         "tokenizers: %s" % theirs[i][max(0, at - 3):at + 8]]
    cases.check("tokenizer ids %s" % name, not problems,
                "%d texts from %d sources, %d tokens, all identical" % (n_texts, len(texts_by_source), n_tokens)
                if not problems else "ids differ from tokenizers'", problems)
    return reference


def compare_decoding(cases, name, tokenizer_path, reference, texts):
    """ftpipe's decoding of tokenizers' ids against tokenizers' own."""
    ids = [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
    theirs = reference.decode_batch(ids, skip_special_tokens=False)
    try:
        ours = oracle.ftpipe_decode(tokenizer_path, ids)
    except RuntimeError as error:
        cases.fail("tokenizer decoding %s" % name, str(error))
        return
    bad = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    cases.check("tokenizer decoding %s" % name, not bad and len(ours) == len(theirs),
                "%d texts decoded as tokenizers decodes them" % len(texts) if not bad else
                "%d of %d decodings differ" % (len(bad), len(texts)),
                ["first at text %d: ftpipe %r, tokenizers %r" % (bad[0] + 1, ours[bad[0]][:80], theirs[bad[0]][:80])]
                if bad else [])


def main():
    cases = oracle.Cases()
    folder = oracle.scratch_folder("tokenizer-ids")
    try:
        corpus = oracle.corpus_lines()
        datasets = dataset_texts()
        tokenizers = []
        for name in ("qwen3", "llama3", "sentencepiece_legacy", "sentencepiece_metaspace"):
            tokenizers.append((name, os.path.join(oracle.unpack_tokenizer(name, os.path.join(folder, name)),
                                                  "tokenizer.json")))
        tokenizers += [("sentencepiece_small/" + name, os.path.join(oracle.TOKENIZER_FIXTURES, "sentencepiece_small",
                                                                    name + ".json"))
                       for name in ("legacy", "first", "always_split")]
        tokenizers += [("tiny", os.path.join(oracle.TOKENIZER_FIXTURES, "tiny", "tokenizer.json")),
                       ("byte_model", os.path.join(oracle.FIXTURES, "datasets", "byte_model", "tokenizer.json")),
                       ("init (built in)", init_tokenizer(folder))]
        for name, path in tokenizers:
            reference = compare(cases, name, path, [("the corpus", corpus)] + datasets)
            if name.startswith("sentencepiece"):
                compare_decoding(cases, name, path, reference, corpus)
            expected = os.path.join(oracle.TOKENIZER_FIXTURES, "expected_%s.ids.zst" % name)
            if not os.path.exists(expected):
                continue
            committed = subprocess.run(["zstd", "-qdc", expected], stdout=subprocess.PIPE, check=True).stdout
            committed = [[int(t) for t in line.split()] for line in committed.decode("ascii").splitlines()]
            today = [e.ids for e in reference.encode_batch(corpus, add_special_tokens=False)]
            bad = [i + 1 for i, (a, b) in enumerate(zip(committed, today)) if a != b]
            cases.check("tokenizer fixture expected_%s.ids" % name, not bad and len(committed) == len(today),
                        "tokenizers %s gives the committed ids on all %d corpus lines" % (
                            __import__("tokenizers").__version__, len(today)) if not bad else
                        "tokenizers gives other ids than the committed ones on %d lines, from line %d" % (
                            len(bad), bad[0]))
    finally:
        oracle.remove_scratch(folder)
    return cases.finish()


if __name__ == "__main__":
    sys.exit(main())
