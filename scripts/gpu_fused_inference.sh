#!/usr/bin/env bash
# The GPU tests with the fused kernels built, then the inference forward with and without the fused GEMM1
# against compiled dense, alternated (scripts/ab_fused_gemm1.py --force: the fused arm past the per-GPU size
# limits), at the shapes those limits decide.
# Usage: ACT24_COMMIT=<sha> scripts/gpu_fused_inference.sh OUTDIR
source "$(dirname "${BASH_SOURCE[0]}")/gpu_setup.sh" || exit 1
timeout -k 10 300 python3 -m pytest -m gpu tests -p no:cacheprovider -rfEs > "$out/gpu_tests.log" 2>&1; keep
tail -n 12 "$out/gpu_tests.log"
timeout -k 10 200 python3 scripts/ab_fused_gemm1.py "$out" --force 16384,4096,16384 2048,4096,16384 16384,2048,8192 \
  > "$out/ab.log" 2>&1; keep
grep -v "Warning" "$out/ab.log" | tail -n 8
exit "$status"
