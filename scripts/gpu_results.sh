#!/usr/bin/env bash
# Every published benchmark table in one 10-minute call on a 2-GPU machine.
# GPU 0: the GPU tests, the FFN forward grid. GPU 1: the ~1B training throughput, then the FFN
# training-step grid, one JSON per (d, H). Then, alone on the host, prefill and decode: decode is
# host-bound, and a second benchmark process slowed its steps up to 13x. (Loss parity takes longer:
# scripts/loss_parity.py.)
# Usage: ACT24_COMMIT=<sha> scripts/gpu_results.sh OUTDIR
set -uo pipefail
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
(
  export CUDA_VISIBLE_DEVICES=1
  log="$out/gpu1.log"
  timeout 150 python3 scripts/train_throughput.py "$out" > "$log" 2>&1
  timeout 150 python3 -m act24 bench ffn --backward --shape 4096 16384 --out "$out/train_4096" >> "$log" 2>&1
  timeout 110 python3 -m act24 bench ffn --backward --shape 2048 8192 --out "$out/train_2048" >> "$log" 2>&1
  timeout 130 python3 -m act24 bench ffn --backward --shape 8192 32768 --out "$out/train_8192" >> "$log" 2>&1
) &
export CUDA_VISIBLE_DEVICES=0
log="$out/gpu0.log"
timeout 150 python3 -m pytest -m gpu tests -q -x -p no:cacheprovider > "$log" 2>&1
tail -n 3 "$log"
timeout 260 python3 -m act24 bench ffn --out "$out" >> "$log" 2>&1
wait
timeout 150 python3 -m act24 bench prefill --out "$out" >> "$log" 2>&1
tail -n 30 "$log" "$out/gpu1.log"
