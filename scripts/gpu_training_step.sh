#!/usr/bin/env bash
# On one GPU, each part under 10 minutes:
#   step:     the GPU tests, the dense-feature selection (scripts/ab_densest_features.py: the selection alone
#             and the FFN training step), `act24 bench ffn --backward` at d=2048 (its parts), and the ~1B
#             training throughput with the modes alternated.
#   compiled: the selection A/B again and the ~1B throughput with its blocks compiled, alternated.
# Usage: ACT24_COMMIT=<sha> scripts/gpu_training_step.sh OUTDIR {step|compiled}
set -uo pipefail
usage="usage: $0 OUTDIR {step|compiled}"
out=${1:?$usage}
part=${2:?$usage}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
log="$out/$part.log"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv > "$out/gpu_$part.txt" 2>&1
case "$part" in
  step)
    timeout -k 10 270 python3 -m pytest -m gpu tests -q -p no:cacheprovider -rs > "$out/gpu_tests.log" 2>&1
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
grep -v "Warning" "$log" | tail -n 30
