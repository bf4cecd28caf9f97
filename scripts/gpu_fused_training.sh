#!/usr/bin/env bash
# The training step's GPU runs — the fused GEMM1 in training (the counting epilogue), the dense-feature
# selection, the ~1B throughput — and the prefill's attention kernel, in parts on one GPU (each under
# 10 minutes).
#   kernels: the GPU tests, the training step and the forward with and without the fused GEMM1
#            (alternated, scripts/ab_fused_gemm1.py), bf16.
#   fp16:    the GPU tests, then the same two A/B timings in fp16; the ~1B training throughput with
#            its blocks compiled.
#   models:  prefill at 16k and 32k tokens; the ~1B training throughput.
#   profile: the GPU timeline of the training step at d=4096 and d=2048 (scripts/profile_train_step.py).
#   step:    the GPU tests, the timelines, the training-step A/B and `act24 bench ffn --backward` at
#            the target shape.
#   selection: the GPU tests, the dense-feature selection (scripts/ab_densest_features.py: alone and in
#            the training step), `act24 bench ffn --backward` at d=2048, the ~1B throughput (alternated).
#   compiled: the selection A/B and the ~1B throughput with its blocks compiled.
# Usage: ACT24_COMMIT=<sha> scripts/gpu_fused_training.sh OUTDIR {kernels|fp16|models|profile|step|selection|compiled}
set -uo pipefail
usage="usage: $0 OUTDIR {kernels|fp16|models|profile|step|selection|compiled}"
out=${1:?$usage}
part=${2:?$usage}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
log="$out/$part.log"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv > "$out/gpu_$part.txt" 2>&1
case "$part" in
  kernels)
    timeout -k 10 260 python3 -m pytest -m gpu tests -p no:cacheprovider -rfEs > "$out/gpu_tests.log" 2>&1
    tail -n 3 "$out/gpu_tests.log"
    timeout -k 10 180 python3 scripts/ab_fused_gemm1.py "$out" --train 16384,4096,16384 16384,2048,8192 > "$log" 2>&1
    timeout -k 10 60 python3 scripts/ab_fused_gemm1.py "$out" 16384,4096,16384 >> "$log" 2>&1
    ;;
  fp16)
    timeout -k 10 260 python3 -m pytest -m gpu tests -p no:cacheprovider -rfEs > "$out/gpu_tests.log" 2>&1
    tail -n 3 "$out/gpu_tests.log"
    timeout -k 10 120 python3 scripts/ab_fused_gemm1.py "$out" --dtype float16 --train 16384,4096,16384 > "$log" 2>&1
    timeout -k 10 60 python3 scripts/ab_fused_gemm1.py "$out" --dtype float16 16384,4096,16384 >> "$log" 2>&1
    timeout -k 10 200 python3 scripts/train_throughput.py "$out" --compile >> "$log" 2>&1
    ;;
  models)
    timeout -k 10 360 python3 -m act24 bench prefill --tokens 16384 32768 --out "$out" > "$log" 2>&1
    timeout -k 10 100 python3 scripts/train_throughput.py "$out" >> "$log" 2>&1
    ;;
  profile)
    timeout -k 10 120 python3 scripts/profile_train_step.py "$out/d4096" 16384,4096,16384 > "$log" 2>&1
    timeout -k 10 120 python3 scripts/profile_train_step.py "$out/d2048" 16384,2048,8192 >> "$log" 2>&1
    ;;
  step)
    timeout -k 10 200 python3 -m pytest -m gpu tests -p no:cacheprovider -rfEs > "$out/gpu_tests.log" 2>&1
    tail -n 3 "$out/gpu_tests.log"
    timeout -k 10 90 python3 scripts/profile_train_step.py "$out/d4096" 16384,4096,16384 > "$log" 2>&1
    timeout -k 10 90 python3 scripts/profile_train_step.py "$out/d2048" 16384,2048,8192 >> "$log" 2>&1
    timeout -k 10 120 python3 scripts/ab_fused_gemm1.py "$out" --train 16384,4096,16384 16384,2048,8192 >> "$log" 2>&1
    timeout -k 10 120 python3 -m act24 bench ffn --backward --shape 4096 16384 --tokens 16384 --out "$out" >> "$log" 2>&1
    ;;
  selection)
    timeout -k 10 270 python3 -m pytest -m gpu tests -p no:cacheprovider -rfEs > "$out/gpu_tests.log" 2>&1
    tail -n 3 "$out/gpu_tests.log"
    timeout -k 10 150 python3 scripts/ab_densest_features.py "$out" > "$log" 2>&1
    timeout -k 10 120 python3 -m act24 bench ffn --backward --shape 2048 8192 --tokens 16384 --out "$out" >> "$log" 2>&1
    timeout -k 10 140 python3 scripts/train_throughput.py "$out" >> "$log" 2>&1
    ;;
  compiled)
    timeout -k 10 150 python3 scripts/ab_densest_features.py "$out" > "$log" 2>&1
    timeout -k 10 400 python3 scripts/train_throughput.py "$out" --compile >> "$log" 2>&1
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
grep -v "Warning\|attn_output" "$log" | tail -n 30
