#!/usr/bin/env bash
# The packing kernels on a 2-GPU machine: GPU 0 runs the GPU tests, then sweeps the forward packer's
# launch parameters; GPU 1 sweeps the backward packer's and times the training step with the fastest.
# Usage: ACT24_COMMIT=<sha> scripts/gpu_kernels.sh OUTDIR   (fits one 10-minute call)
set -uo pipefail
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
(
  export CUDA_VISIBLE_DEVICES=1
  timeout 560 python3 scripts/tune_backward_pack.py "$out" > "$out/tune_backward.log" 2>&1
) &
export CUDA_VISIBLE_DEVICES=0
python3 -m act24 info --json > "$out/info.json"
timeout 300 python3 -m pytest -m gpu tests -q -x -p no:cacheprovider > "$out/gpu_tests.log" 2>&1
timeout 200 python3 -m pytest tests/test_kernel_backward_pack.py tests/test_kernel_sparsify_pack.py -q \
  -p no:cacheprovider >> "$out/gpu_tests.log" 2>&1
tail -n 5 "$out/gpu_tests.log"
timeout 200 python3 scripts/tune_sparsify_pack.py "$out" > "$out/tune_forward.log" 2>&1
wait
tail -n 12 "$out/tune_forward.log" "$out/tune_backward.log"
