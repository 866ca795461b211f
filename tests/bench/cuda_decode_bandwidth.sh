#!/bin/sh
# The cuda backend's decode attention at batch 32 (build/gpu/cuda_decode_bandwidth
# from `make gpu-tests`): microseconds per call and the KV-cache read rate, one
# run of 50 calls per shape after a warm-up call. Figures only, no peer and no
# claim. Without a GPU or the program it says why and exits 77 (skipped).
cd "$(dirname "$0")/../.."
PROGRAM=build/gpu/cuda_decode_bandwidth
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "cuda_decode_bandwidth: skipped (no GPU here)"; exit 77
fi
if [ ! -x "$PROGRAM" ]; then
  echo "cuda_decode_bandwidth: skipped ($PROGRAM is missing: make gpu-tests)"; exit 77
fi
[ -d build/gpu/lib ] && export LD_LIBRARY_PATH="$(pwd)/build/gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$PROGRAM"
