#!/usr/bin/env python3
"""Tokenizer benchmark on this machine's CPU: `ftpipe encode --jsonl` against a
process of Hugging Face `tokenizers` doing the same job (load tokenizer.json,
read the JSON lines, encode_batch on all cores, write one line of ids per text),
both timed as whole processes, the ids compared byte for byte.

    tokenize_cpu.py --ftpipe build/ftpipe [--megabytes 20] [--runs 5]

(tests/bench/tokenize_cpu.sh runs it with the oracle environment's Python.) The
corpus is tests/fixtures/tokenizer/make_corpus.py's, one seed per core; the
tokenizers are the committed Qwen3 and Llama 3 ones. Prints the date, the CPU,
the versions and, per tokenizer, the median of the runs (ftpipe and the peer
alternate) and the ratio. Exit 1 when the ids differ.

    tokenize_cpu.py --peer TOKENIZER_JSON < corpus.jsonl > ids     (the peer process)"""
import argparse
import datetime
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures", "tokenizer")


def peer(tokenizer_json):
    """The peer process: what `ftpipe encode --jsonl` does, with tokenizers."""
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(tokenizer_json)
    texts = [json.loads(line) for line in sys.stdin.buffer.read().decode("utf-8").split("\n") if line]
    out = sys.stdout.buffer
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        out.write((" ".join(map(str, encoding.ids)) + "\n").encode("ascii"))
    return 0


def corpus_part(arguments):
    seed, n_bytes = arguments
    return subprocess.run([sys.executable, os.path.join(FIXTURES, "make_corpus.py"), "--bytes", str(n_bytes),
                           "--seed", str(seed)], check=True, stdout=subprocess.PIPE).stdout


def make_corpus(path, megabytes, n_parts):
    part_bytes = megabytes * 1_000_000 // n_parts
    with multiprocessing.Pool(n_parts) as pool:
        parts = pool.map(corpus_part, [(1000 + i, part_bytes) for i in range(n_parts)])
    with open(path, "wb") as f:
        for part in parts:
            f.write(part)


def timed(command, corpus, out_path):
    with open(corpus, "rb") as stdin, open(out_path, "wb") as stdout:
        start = time.perf_counter()
        subprocess.run(command, stdin=stdin, stdout=stdout, check=True)
        return time.perf_counter() - start


def cpu_model():
    """/proc/cpuinfo's model name, with family, model and stepping (a VM's name can be generic)."""
    fields = {}
    for line in open("/proc/cpuinfo"):
        if ":" in line:
            key, value = (part.strip() for part in line.split(":", 1))
            fields.setdefault(key, value)
    return "%s (family %s, model %s, stepping %s)" % (fields.get("model name", platform.processor() or "unknown"),
                                                      fields.get("cpu family", "?"), fields.get("model", "?"),
                                                      fields.get("stepping", "?"))


def unpack(name, folder):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tokenizer.json"), "wb") as out:
        subprocess.run(["zstd", "-qdc", os.path.join(FIXTURES, name, "tokenizer.json.zst")], stdout=out, check=True)
    with open(os.path.join(FIXTURES, name, "tokenizer_config.json"), "rb") as f, \
            open(os.path.join(folder, "tokenizer_config.json"), "wb") as out:
        out.write(f.read())
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ftpipe")
    parser.add_argument("--peer", metavar="TOKENIZER_JSON")
    parser.add_argument("--megabytes", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", default="/tmp/ftpipe-tokenize-cpu-bench")
    args = parser.parse_args()
    if args.peer:
        return peer(args.peer)
    if not args.ftpipe:
        parser.error("--ftpipe PATH is required")
    import tokenizers

    os.makedirs(args.work, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    corpus = os.path.join(args.work, "corpus.jsonl")
    make_corpus(corpus, args.megabytes, cores)
    text_bytes = sum(len(json.loads(line).encode("utf-8")) for line in open(corpus, encoding="utf-8"))
    print("%s | %s, %d cores | load average %.1f | Python %s, tokenizers %s" % (
        datetime.date.today().isoformat(), cpu_model(), cores, os.getloadavg()[0], platform.python_version(),
        tokenizers.__version__))
    print("corpus: %.1f MB of text (make_corpus.py, %d seeds); median of %d runs each, alternating"
          % (text_bytes / 1e6, cores, args.runs))
    failed = False
    for name in ("qwen3", "llama3"):
        model = unpack(name, os.path.join(args.work, name))
        ours_out, theirs_out = os.path.join(args.work, name + ".ftpipe.ids"), os.path.join(args.work, name + ".peer.ids")
        ftpipe_command = [args.ftpipe, "encode", "--tokenizer", model, "--jsonl"]
        peer_command = [sys.executable, os.path.abspath(__file__), "--peer", os.path.join(model, "tokenizer.json")]
        ours, theirs = [], []
        for _ in range(args.runs):
            ours.append(timed(ftpipe_command, corpus, ours_out))
            theirs.append(timed(peer_command, corpus, theirs_out))
        empty = os.path.join(args.work, "empty.jsonl")
        open(empty, "w").close()
        ours_load = statistics.median(timed(ftpipe_command, empty, os.devnull) for _ in range(3))
        theirs_load = statistics.median(timed(peer_command, empty, os.devnull) for _ in range(3))
        identical = open(ours_out, "rb").read() == open(theirs_out, "rb").read()
        n_tokens = sum(len(line.split()) for line in open(ours_out))
        failed = failed or not identical
        ftpipe_s, peer_s = statistics.median(ours), statistics.median(theirs)
        print("%-6s %d tokens | tokenizers process %.2f s (%.1f MB/s; %.2f s starting and loading) | "
              "ftpipe encode --jsonl %.2f s (%.1f MB/s; %.2f s loading) | ftpipe is %.2fx faster | ids %s"
              % (name, n_tokens, peer_s, text_bytes / 1e6 / peer_s, theirs_load, ftpipe_s, text_bytes / 1e6 / ftpipe_s,
                 ours_load, peer_s / ftpipe_s, "identical" if identical else "DIFFER"))
        print("       runs: ftpipe %s s; tokenizers %s s" % (" ".join("%.2f" % t for t in ours),
                                                             " ".join("%.2f" % t for t in theirs)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
