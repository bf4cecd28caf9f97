#!/usr/bin/env bash
# The GPU tests, the dense-feature selection (scripts/ab_densest_features.py: the selection alone and
# the FFN training step), `act24 bench ffn --backward` at d=2048 (its parts), and the ~1B training
# throughput with the modes alternated, on one GPU (under 10 minutes).
# Usage: ACT24_COMMIT=<sha> scripts/gpu_training_step.sh OUTDIR
set -uo pipefail
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
log="$out/run.log"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv > "$out/gpu.txt" 2>&1
timeout -k 10 270 python3 -m pytest -m gpu tests -q -p no:cacheprovider -rs > "$out/gpu_tests.log" 2>&1
tail -n 3 "$out/gpu_tests.log"
timeout -k 10 150 python3 scripts/ab_densest_features.py "$out" > "$log" 2>&1
timeout -k 10 120 python3 -m act24 bench ffn --backward --shape 2048 8192 --tokens 16384 --out "$out" >> "$log" 2>&1
timeout -k 10 140 python3 scripts/train_throughput.py "$out" >> "$log" 2>&1
grep -v "Warning" "$log" | tail -n 30
