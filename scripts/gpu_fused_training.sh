#!/usr/bin/env bash
# The fused GEMM1 in training (the counting epilogue) and the prefill's attention kernel, in one
# 10-minute call on one GPU: the fused kernel's GPU tests, the training step and the forward with and
# without it (alternated, scripts/ab_fused_gemm1.py), prefill at 16k and 32k tokens, the ~1B training
# throughput.
# Usage: ACT24_COMMIT=<sha> scripts/gpu_fused_training.sh OUTDIR
set -uo pipefail
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
log="$out/run.log"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv > "$out/gpu.txt" 2>&1
timeout -k 10 150 python3 -m pytest -m gpu tests/test_fused_gemm1.py -q -p no:cacheprovider > "$out/gpu_tests.log" 2>&1
tail -n 3 "$out/gpu_tests.log"
timeout -k 10 150 python3 scripts/ab_fused_gemm1.py "$out" --train 16384,4096,16384 16384,2048,8192 > "$log" 2>&1
timeout -k 10 60 python3 scripts/ab_fused_gemm1.py "$out" 16384,4096,16384 >> "$log" 2>&1
timeout -k 10 150 python3 -m act24 bench prefill --tokens 16384 32768 --out "$out" >> "$log" 2>&1
timeout -k 10 60 python3 scripts/train_throughput.py "$out" >> "$log" 2>&1
tail -n 30 "$log"
