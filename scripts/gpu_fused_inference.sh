#!/usr/bin/env bash
# The GPU tests with the fused kernels built, then the inference forward with and without the fused GEMM1
# against compiled dense, alternated (scripts/ab_fused_gemm1.py), at the shapes the per-GPU limits decide.
# CUTLASS's headers: ACT24_CUTLASS_DIR (default: .cutlass in the checkout).
# Usage: ACT24_COMMIT=<sha> scripts/gpu_fused_inference.sh OUTDIR
set -uo pipefail
status=0
keep() { local rc=$?; [ "$status" -ne 0 ] || status=$rc; }  # the first failing step's exit code
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
export ACT24_CUTLASS_DIR=${ACT24_CUTLASS_DIR:-$PWD/.cutlass}
export ACT24_CACHE_DIR=${ACT24_CACHE_DIR:-$PWD/build/act24-cache}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version --format=csv > "$out/gpu.txt" 2>&1
build() { python3 -c "import sys; from act24.kernels import cuda_build; cuda_build.load_library(sys.argv[1], tuple(sys.argv[2:]))" "$@"; }
for fp16 in 0 1; do
  build gemm_relu2_grad_pack "ACT24_FP16=$fp16" &
  for count in 0 1; do build gemm_relu2_pack "ACT24_FP16=$fp16" "ACT24_COUNT=$count" & done
done
wait
timeout -k 10 300 python3 -m pytest -m gpu tests -p no:cacheprovider -rfEs > "$out/gpu_tests.log" 2>&1; keep
tail -n 12 "$out/gpu_tests.log"
timeout -k 10 200 python3 scripts/ab_fused_gemm1.py "$out" 16384,4096,16384 2048,4096,16384 16384,2048,8192 \
  > "$out/ab.log" 2>&1; keep
grep -v "Warning" "$out/ab.log" | tail -n 8
exit "$status"
