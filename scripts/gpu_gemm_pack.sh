#!/usr/bin/env bash
# The fused GEMM1 + pack kernel, one call on a 2-GPU machine. GPU 0: every GPU test and the kernel
# tests on the GPU. GPU 1: the fused kernel's configuration sweep and the forward built on it.
# Usage: ACT24_COMMIT=<sha> scripts/gpu_gemm_pack.sh OUTDIR
set -uo pipefail
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
CUDA_VISIBLE_DEVICES=1 timeout 420 python3 scripts/tune_gemm_pack.py "$out" > "$out/tune_gemm_pack.log" 2>&1 &
export CUDA_VISIBLE_DEVICES=0
log="$out/gpu0.log"
timeout 300 python3 -m pytest tests/test_kernel_gemm_pack.py -q -p no:cacheprovider > "$log" 2>&1
timeout 300 python3 -m pytest -m gpu tests -q -p no:cacheprovider >> "$log" 2>&1
timeout 120 python3 -m pytest tests/test_kernel_backward_pack.py tests/test_kernel_sparsify_pack.py \
  tests/test_kernel_transpose.py -q -p no:cacheprovider >> "$log" 2>&1
wait
grep -E "passed|failed|error" "$log"; tail -n 30 "$out/tune_gemm_pack.log"
