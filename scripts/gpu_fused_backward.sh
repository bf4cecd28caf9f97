#!/usr/bin/env bash
# The fused dy2 GEMM on one GPU (opted in for the tests and the A/B): the fused kernels' variants built at once (one nvcc each, in parallel),
# the GPU tests, the training step with each combination of the two fused kernels against compiled dense
# (alternated, scripts/ab_fused_backward.py), then `act24 bench ffn --backward` at the target shape.
# CUTLASS's headers: ACT24_CUTLASS_DIR (default: .cutlass in the checkout).
# Usage: ACT24_COMMIT=<sha> scripts/gpu_fused_backward.sh OUTDIR
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
timeout -k 10 280 python3 -m pytest -m gpu tests -p no:cacheprovider -rfEs > "$out/gpu_tests.log" 2>&1; keep
tail -n 15 "$out/gpu_tests.log"
ACT24_FUSED_DY2=1 timeout -k 10 200 python3 scripts/ab_fused_backward.py "$out" > "$out/ab.log" 2>&1; keep
grep -v "Warning" "$out/ab.log" | tail -n 8
timeout -k 10 100 python3 -m act24 bench ffn --backward --rounds 2 --shape 4096 16384 --tokens 16384 \
  --out "$out/train_4096" > "$out/bench.log" 2>&1; keep
grep -v "Warning" "$out/bench.log" | tail -n 6
exit "$status"
