#!/usr/bin/env bash
# The GPU tests with the fused kernels built, then the benchmarks at the sizes where the per-GPU size limit of the
# fused GEMM1 decides (ffn/backend.py: FUSED_GEMM1_MAX_WORK): the inference forward and the training step at
# T=16384 and 8192, d=4096, and the A/B without --force at T=16384: on an H100, which turns the fused GEMM1 off at
# that size, both arms run unfused (the spread between identical arms; on an H200 they differ).
# Usage: ACT24_COMMIT=<sha> scripts/gpu_fused_gate.sh OUTDIR
source "$(dirname "${BASH_SOURCE[0]}")/gpu_setup.sh" || exit 1
timeout -k 10 300 python3 -m pytest -m gpu tests -p no:cacheprovider -rfEs > "$out/gpu_tests.log" 2>&1; keep
tail -n 6 "$out/gpu_tests.log"
timeout -k 10 60 python3 -m act24 info > "$out/info.txt" 2>&1; keep
grep fused "$out/info.txt"
for T in 16384 8192; do
  timeout -k 10 100 python3 -m act24 bench ffn --rounds 2 --shape 4096 16384 --tokens $T \
    --out "$out/forward_$T" > "$out/forward_$T.log" 2>&1; keep
  grep -v "Warning" "$out/forward_$T.log" | tail -n 3
done
timeout -k 10 100 python3 -m act24 bench ffn --backward --rounds 2 --shape 4096 16384 --tokens 8192 \
  --out "$out/train_8192" > "$out/train_8192.log" 2>&1; keep
grep -v "Warning" "$out/train_8192.log" | tail -n 3
timeout -k 10 100 python3 scripts/ab_fused_gemm1.py "$out/same_arms" 16384,4096,16384 > "$out/same_arms.log" 2>&1; keep
grep "^{" "$out/same_arms.log"
exit "$status"
