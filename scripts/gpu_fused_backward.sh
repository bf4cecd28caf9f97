#!/usr/bin/env bash
# The fused dy2 GEMM on one GPU (opted in for the tests and the A/B): the fused kernels' variants built at once (one nvcc each, in parallel),
# the GPU tests, the training step with each combination of the two fused kernels against compiled dense
# (alternated, scripts/ab_fused_backward.py), then `act24 bench ffn --backward` at the target shape.
# Usage: ACT24_COMMIT=<sha> scripts/gpu_fused_backward.sh OUTDIR
source "$(dirname "${BASH_SOURCE[0]}")/gpu_setup.sh" || exit 1
timeout -k 10 280 python3 -m pytest -m gpu tests -p no:cacheprovider -rfEs > "$out/gpu_tests.log" 2>&1; keep
tail -n 15 "$out/gpu_tests.log"
ACT24_FUSED_DY2=1 timeout -k 10 200 python3 scripts/ab_fused_backward.py "$out" > "$out/ab.log" 2>&1; keep
grep -v "Warning" "$out/ab.log" | tail -n 8
timeout -k 10 100 python3 -m act24 bench ffn --backward --rounds 2 --shape 4096 16384 --tokens 16384 \
  --out "$out/train_4096" > "$out/bench.log" 2>&1; keep
grep -v "Warning" "$out/bench.log" | tail -n 6
exit "$status"
