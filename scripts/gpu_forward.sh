#!/usr/bin/env bash
# GPU run for the sparse forward: tests, packer tuning, the forward benchmark.
# Usage: ACT24_COMMIT=<sha> scripts/gpu_forward.sh OUTDIR   (the copy on the GPU machine has no .git)
set -uo pipefail
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
python3 -m act24 info --json > "$out/info.json"; cat "$out/info.json"
python3 -m pytest -m gpu tests -q 2>&1 | tail -n 40 | tee "$out/gpu_tests.log"
python3 scripts/tune_sparsify_pack.py "$out" 2>&1 | tail -n 15
python3 -m act24 bench ffn --out "$out" 2>&1 | tee "$out/bench_forward.log" | tail -n 25
