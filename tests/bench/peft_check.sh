#!/bin/sh
# Do ftpipe's exports load in PEFT and transformers as they mean? On a machine
# with python3, torch, transformers and peft (no network needed), after
# `make gpu-tests` (which builds build/ftpipe, build/gpu/ftpipe_logits and the
# libraries they need into build/gpu/lib):
#   sh tests/bench/peft_check.sh
# A pipeline inits a tiny Qwen2-shaped f32 model (built-in tokenizer), makes the
# quickstart's addition data, tokenizes it, and trains two LoRA adapters for a
# few steps at a learning rate that makes B clearly non-zero: one on every
# target, one with rsLoRA scaling on q_proj,v_proj only. Each is exported as
# format = peft and format = merged. ftpipe_logits gives the base + adapter
# logits on the cpu backend for fixed token ids; peft_check.py compares them
# with from_pretrained(base) + PeftModel.from_pretrained(peft export) and with
# from_pretrained(merged export), and the merged export's weights with PEFT's
# own merge_and_unload(). Exit 0: every max relative error < 1e-4 (the weights
# < 1e-5); 77: skipped, because this machine lacks torch, transformers, peft or
# the programs (make bench runs it everywhere and counts it apart); 1: a
# mismatch or a failed step.
# PEFT_CHECK_DIR keeps the workspace there (default: a temporary folder, removed).
# The oracle suite (make check-oracles) runs it on any machine, with the oracle
# environment's python3 (tests/oracle/check_peft_exports.py).
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
if ! python3 -c "import torch, transformers, peft" 2>/dev/null; then
  echo "peft_check: skipped (python3 here lacks torch, transformers or peft; run it where they are)"; exit 77
fi
for program in build/ftpipe build/gpu/ftpipe_logits; do
  [ -x "$program" ] || { echo "peft_check: skipped ($program is missing: make gpu-tests)"; exit 77; }
done
[ -d build/gpu/lib ] && export LD_LIBRARY_PATH="$ROOT/build/gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
W=${PEFT_CHECK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/ftpipe-peft-check.XXXXXX")}
[ -n "$PEFT_CHECK_DIR" ] || trap 'rm -rf "$W"' EXIT
mkdir -p "$W" && cp examples/quickstart/make_addition_data.sh "$W/"
cat > "$W/Ftpipe" <<'P'
models/tiny: init
	shape = tiny
	architecture = qwen2
	dtype = f32

data/train.json: shell make_addition_data.sh
	run = sh $< train 64 > $@

data/train_set: tokenize models/tiny data/train.json
	template = plain
	cutoff_len = 40

adapters/all: train models/tiny data/train_set
	backend = cpu
	lora_rank = 8
	lora_alpha = 16
	learning_rate = 2e-2
	per_device_train_batch_size = 8
	max_steps = 8

adapters/rslora_qv: train models/tiny data/train_set
	backend = cpu
	lora_rank = 8
	lora_alpha = 16
	use_rslora = true
	lora_target = q_proj,v_proj
	learning_rate = 2e-2
	per_device_train_batch_size = 8
	max_steps = 8

export/all/peft: export adapters/all

export/all/merged: export adapters/all models/tiny
	format = merged

export/rslora_qv/peft: export adapters/rslora_qv

export/rslora_qv/merged: export adapters/rslora_qv models/tiny
	format = merged
P
build/ftpipe -C "$W" || { echo "peft_check: the pipeline failed"; exit 1; }
TOKENS="257 49 50 43 51 52 61 258 10 72 101 108 108 111 256"
set --
for adapter in all rslora_qv; do
  build/gpu/ftpipe_logits "$W/models/tiny" "$W/export/$adapter/peft" "$W/$adapter.f32" $TOKENS ||
    { echo "peft_check: ftpipe_logits failed on $adapter"; exit 1; }
  set -- "$@" "$W/export/$adapter/peft" "$W/export/$adapter/merged" "$W/$adapter.f32"
done
python3 tests/bench/peft_check.py "$W/models/tiny" "$(echo $TOKENS | tr ' ' ,)" "$@"
