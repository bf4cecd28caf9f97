#!/usr/bin/env bash
# One call on a 2-GPU machine: GPU 0 runs the tests and the FFN/prefill benchmarks while GPU 1 runs
# the loss-parity trainings and the ~1B throughput measurement.
# Usage: ACT24_COMMIT=<sha> scripts/gpu_session.sh OUTDIR   (the copy on the GPU machine has no .git)
# Budget: ~12 min on an H200 pair; the first use of the backward kernel compiles for ~1.5 min per
# (dtype, launch configuration), so the GPU tests alone take several minutes on a fresh machine.
set -uo pipefail
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
work=$(mktemp -d)  # run folders (checkpoints, metrics) stay here: only results go to OUTDIR
(
  export CUDA_VISIBLE_DEVICES=1
  python3 scripts/loss_parity.py "$work/parity" > "$out/parity.log" 2>&1
  cp "$work/parity/loss_parity.json" "$work/parity/loss_parity.png" "$out/"
  python3 scripts/train_throughput.py "$out" > "$out/throughput.log" 2>&1
) &
export CUDA_VISIBLE_DEVICES=0
python3 -m act24 info --json > "$out/info.json"
python3 -m pytest -m gpu tests -q -x 2>&1 | tail -n 30 > "$out/gpu_tests.log"
python3 -m pytest tests/test_kernel_backward_pack.py tests/test_kernel_sparsify_pack.py -q 2>&1 | tail -n 5 >> "$out/gpu_tests.log"
cat "$out/gpu_tests.log"
python3 -m act24 bench ffn --backward --tokens 16384 --shape 4096 16384 --out "$out/target" 2>&1 | tail -n 6
python3 -m act24 bench prefill --out "$out" 2>&1 | tail -n 10
python3 -m act24 bench ffn --backward --out "$out" 2>&1 | tail -n 20
wait
tail -n 5 "$out/parity.log" "$out/throughput.log"
