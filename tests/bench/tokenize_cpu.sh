#!/bin/sh
# Tokenizing on this machine's CPU: `ftpipe encode --jsonl` against a
# `tokenizers` process doing the same job, whole processes both, ids compared
# (tests/bench/tokenize_cpu.py says how). Uses the oracle environment's Python
# (make oracles); skipped without it. Arguments go to tokenize_cpu.py
# (--megabytes N, --runs N).
cd "$(dirname "$0")/../.."
[ -x build/ftpipe ] || { echo "tokenize_cpu: skipped (build/ftpipe is missing: make)"; exit 0; }
[ -x build/oracles/bin/python ] ||
  { echo "tokenize_cpu: skipped (no oracle environment: make oracles)"; exit 0; }
exec build/oracles/bin/python tests/bench/tokenize_cpu.py --ftpipe build/ftpipe "$@"
