#!/usr/bin/env bash
# FSDP2: `act24 train` on 1 GPU and on N GPUs with the same global batch, then OUTDIR/fsdp.json.
# Usage: ACT24_COMMIT=<sha> scripts/gpu_fsdp.sh OUTDIR [NGPUS] [STEPS]
set -uo pipefail
out=${1:?usage: $0 OUTDIR [NGPUS] [STEPS]}
n=${2:-2}
steps=${3:-300}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
args=(-m act24 train --preset 25m --steps "$steps" --batch-size 32 --dense-warmup-steps $((steps / 3)) --quiet)
work=$(mktemp -d)  # run folders (sharded checkpoints) stay here: only results go to OUTDIR
torchrun --standalone --nproc_per_node 1 "${args[@]}" --out "$work/gpus1" > "$out/gpus1.log" 2>&1
torchrun --standalone --nproc_per_node "$n" "${args[@]}" --out "$work/gpus$n" > "$out/gpus$n.log" 2>&1
tail -n 3 "$out/gpus1.log" "$out/gpus$n.log"
python3 scripts/fsdp_compare.py "$out" "$work/gpus1" "$work/gpus$n" "$n"
