#!/usr/bin/env bash
# The GPU tests and the headline numbers on one GPU, in three parts of under 10 minutes each (for a GPU
# model the tables have not been measured on yet; timings alternated, two rounds a row).
#   tests:   the GPU tests, then the FFN forward at d=4096 and d=2048 around the dispatch threshold.
#   train:   the FFN training step at T=16384 (d=4096 and d=2048), then the ~1B training throughput.
#   prefill: prefill and decode of the Nemotron-like model at 16k and 32k tokens.
# CUTLASS's headers for the fused GEMM1: ACT24_CUTLASS_DIR (default: .cutlass in the checkout).
# Usage: ACT24_COMMIT=<sha> scripts/gpu_headline.sh OUTDIR {tests|train|prefill}
set -uo pipefail
status=0
keep() { local rc=$?; [ "$status" -ne 0 ] || status=$rc; }  # the first failing step's exit code
usage="usage: $0 OUTDIR {tests|train|prefill}"
out=${1:?$usage}
part=${2:?$usage}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
export ACT24_CUTLASS_DIR=${ACT24_CUTLASS_DIR:-$PWD/.cutlass}
export ACT24_CACHE_DIR=${ACT24_CACHE_DIR:-$PWD/build/act24-cache}  # kept while the machine stays up
log="$out/$part.log"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version --format=csv > "$out/gpu_$part.txt" 2>&1
case "$part" in
  tests)
    timeout -k 10 300 python3 -m pytest -m gpu tests -p no:cacheprovider -rfEs > "$out/gpu_tests.log" 2>&1; keep
    tail -n 12 "$out/gpu_tests.log"
    timeout -k 10 240 python3 -m act24 bench ffn --rounds 2 --shape 4096 16384 --shape 2048 8192 \
      --tokens 2048 8192 16384 --out "$out" > "$log" 2>&1; keep
    ;;
  train)
    timeout -k 10 150 python3 -m act24 bench ffn --backward --rounds 2 --shape 4096 16384 --tokens 16384 \
      --out "$out/train_4096" > "$log" 2>&1; keep
    timeout -k 10 120 python3 -m act24 bench ffn --backward --rounds 2 --shape 2048 8192 --tokens 16384 \
      --out "$out/train_2048" >> "$log" 2>&1; keep
    timeout -k 10 240 python3 scripts/train_throughput.py "$out" >> "$log" 2>&1; keep
    ;;
  prefill)
    timeout -k 10 500 python3 -m act24 bench prefill --rounds 2 --tokens 16384 32768 --out "$out" > "$log" 2>&1; keep
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
grep -v "Warning\|attn_output" "$log" | tail -n 30
exit "$status"
