#!/bin/sh
# Vision-language fine-tuning on the cuda backend end to end: examples/vl-lora's
# tiny variants (tiny-qwen2.5-vl, tiny-qwen2-vl) with BACKEND=cuda run init ->
# shm -> tokenize -> LoRA train -> evaluate -> export, the vision tower on the
# GPU, the loss logged; a rerun is a no-op. Run on a GPU machine by
# tests/gpu/run.sh, with build/ftpipe.
. "$(dirname "$0")/gpu_lib.sh"

if ! nvidia-smi >/dev/null 2>&1; then
  echo "ok examples/vl-lora on the GPU # SKIP no GPU here"
  exit 0
fi

for shape in tiny-qwen2.5-vl tiny-qwen2-vl; do
  t_case "examples/vl-lora ($shape, BACKEND=cuda): init, shm, tokenize, LoRA train, evaluate, export; a rerun is a no-op"
  W=$(t_workspace)
  cp "$ROOT/examples/vl-lora/Ftpipe" "$ROOT/examples/vl-lora/make_vl_data.py" "$W/"
  mkdir "$W/shm"
  VARS="SHAPE=$shape DTYPE=f32 RECORDS=9 EPOCHS=2 SHM_DIR=$W/shm BACKEND=cuda"
  t_run "$FTPIPE" -C "$W" $VARS
  t_expect_status 0
  t_expect_contains "done     adapter"
  t_expect_contains "eval_loss"
  t_expect_contains "done     export/peft"
  echo "$T_OUT" | grep -E "loss" | head -4 | sed 's/^/# /'
  t_run "$FTPIPE" -C "$W" $VARS
  t_expect_status 0
  t_expect_contains "nothing to do"
  t_end
done
