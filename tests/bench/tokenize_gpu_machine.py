#!/usr/bin/env python3
"""Tokenizer benchmark: `ftpipe encode --jsonl` against Hugging Face `tokenizers`
(encode_batch, all cores) on the same corpus, side by side, with the ids compared.

Runs where Python has `tokenizers` (the GPU machine; not part of `make bench`):

    tokenize_gpu_machine.py --ftpipe build/ftpipe --models DIR [--megabytes 200]

DIR/qwen3 and DIR/llama3 hold the tokenizer.json files (see
tests/e2e/test_tokenizer_parity.sh for where they come from). The corpus is made
by tests/fixtures/tokenizer/make_corpus.py, in parallel, one seed per part.
ftpipe's time is the whole process (loading the tokenizer, reading and parsing
the JSON lines, writing the ids); tokenizers' is encode_batch alone.
"""
import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MAKE_CORPUS = os.path.join(HERE, "..", "fixtures", "tokenizer", "make_corpus.py")


def corpus_part(arguments):
    seed, n_bytes = arguments
    return subprocess.run([sys.executable, MAKE_CORPUS, "--bytes", str(n_bytes), "--seed", str(seed)],
                          check=True, stdout=subprocess.PIPE).stdout


def make_corpus(path, megabytes, n_parts):
    part_bytes = megabytes * 1_000_000 // n_parts
    with multiprocessing.Pool(n_parts) as pool:
        parts = pool.map(corpus_part, [(1000 + i, part_bytes) for i in range(n_parts)])
    with open(path, "wb") as f:
        for part in parts:
            f.write(part)


def run_ftpipe(ftpipe, model_dir, corpus, out_path):
    with open(corpus, "rb") as stdin, open(out_path, "wb") as stdout:
        start = time.perf_counter()
        subprocess.run([ftpipe, "encode", "--tokenizer", model_dir, "--jsonl"], stdin=stdin, stdout=stdout,
                       check=True)
        return time.perf_counter() - start


def load_seconds(ftpipe, model_dir):
    start = time.perf_counter()
    subprocess.run([ftpipe, "encode", "--tokenizer", model_dir, "--jsonl"], input=b"", check=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ftpipe", required=True)
    parser.add_argument("--models", required=True)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--work", default="/tmp/ftpipe-tokenize-bench")
    args = parser.parse_args()
    from tokenizers import Tokenizer, __version__ as tokenizers_version

    os.makedirs(args.work, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    corpus = os.path.join(args.work, "corpus.jsonl")
    start = time.perf_counter()
    make_corpus(corpus, args.megabytes, cores)
    with open(corpus, encoding="utf-8") as f:
        texts = [json.loads(line) for line in f]
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    print("corpus: %d documents, %.1f MB of text, made in %.1f s; %d cores; tokenizers %s"
          % (len(texts), text_bytes / 1e6, time.perf_counter() - start, cores, tokenizers_version))
    failed = False
    for name in ("qwen3", "llama3"):
        model_dir = os.path.join(args.models, name)
        tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        start = time.perf_counter()
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        hf_seconds = time.perf_counter() - start
        out_path = os.path.join(args.work, name + ".ids")
        ftpipe_seconds = min(run_ftpipe(args.ftpipe, model_dir, corpus, out_path) for _ in range(2))
        ftpipe_load = load_seconds(args.ftpipe, model_dir)
        mismatches = []
        n_tokens = 0
        with open(out_path) as f:
            lines = f.read().split("\n")
        for i, encoding in enumerate(encodings):
            n_tokens += len(encoding.ids)
            if lines[i] != " ".join(map(str, encoding.ids)):
                mismatches.append(i + 1)
        if len(lines) != len(encodings) + 1:
            mismatches.append("line count %d != %d" % (len(lines) - 1, len(encodings)))
        failed = failed or bool(mismatches)
        print("%-6s %d tokens | tokenizers encode_batch %.2f s (%.1f MB/s) | ftpipe encode --jsonl %.2f s "
              "(%.1f MB/s; %.2f s of it loading) | ftpipe is %.2fx faster | ids %s"
              % (name, n_tokens, hf_seconds, text_bytes / 1e6 / hf_seconds, ftpipe_seconds,
                 text_bytes / 1e6 / ftpipe_seconds, ftpipe_load, hf_seconds / ftpipe_seconds,
                 "identical" if not mismatches else "DIFFER on lines %s" % mismatches[:5]))
        del encodings
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
