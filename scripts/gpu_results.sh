#!/usr/bin/env bash
# Every published benchmark table in two 10-minute calls on a 2-GPU machine (timings alternated,
# two rounds a row).
#   ffn:    GPU 0: the GPU tests, then the FFN forward grid. GPU 1: the FFN training-step grid, one
#           JSON per (d, H).
#   models: GPU 1: the ~1B training throughput. Then, alone on the host, prefill and decode on
#           GPU 0: decode is host-bound, and a second benchmark process slowed its steps up to 13x.
# (Loss parity takes longer: scripts/loss_parity.py.)
# Usage: ACT24_COMMIT=<sha> scripts/gpu_results.sh OUTDIR {ffn|models}
set -uo pipefail
usage="usage: $0 OUTDIR {ffn|models}"
out=${1:?$usage}
part=${2:?$usage}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
case "$part" in
  ffn)
    (
      export CUDA_VISIBLE_DEVICES=1
      log="$out/gpu1.log"
      timeout -k 10 190 python3 -m act24 bench ffn --backward --rounds 2 --shape 4096 16384 --out "$out/train_4096" > "$log" 2>&1
      timeout -k 10 130 python3 -m act24 bench ffn --backward --rounds 2 --shape 2048 8192 --out "$out/train_2048" >> "$log" 2>&1
      timeout -k 10 250 python3 -m act24 bench ffn --backward --rounds 2 --shape 8192 32768 --out "$out/train_8192" >> "$log" 2>&1
    ) &
    export CUDA_VISIBLE_DEVICES=0
    log="$out/gpu0.log"
    timeout -k 10 200 python3 -m pytest -m gpu tests -x -p no:cacheprovider -rfEs > "$log" 2>&1
    tail -n 3 "$log"
    timeout -k 10 360 python3 -m act24 bench ffn --rounds 2 --out "$out" >> "$log" 2>&1
    wait
    tail -n 20 "$log" "$out/gpu1.log"
    ;;
  models)
    log="$out/models.log"
    CUDA_VISIBLE_DEVICES=1 timeout -k 10 200 python3 scripts/train_throughput.py "$out" > "$log" 2>&1
    CUDA_VISIBLE_DEVICES=0 timeout -k 10 300 python3 -m act24 bench prefill --rounds 2 --out "$out" >> "$log" 2>&1
    tail -n 20 "$log"
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
