#!/usr/bin/env bash
# The packing kernels, one 10-minute call on a 2-GPU machine. GPU 0: the GPU tests, compile metadata
# and hardware counters of both packers (when ncu can read them), the forward packer's launch
# sweep. GPU 1: the backward packer's launch sweep, then the training step with the fastest, then
# prefill and decode (the forward packer's main user).
# Usage: ACT24_COMMIT=<sha> scripts/gpu_tune.sh OUTDIR
set -uo pipefail
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
(
  export CUDA_VISIBLE_DEVICES=1
  timeout 330 python3 scripts/tune_backward_pack.py "$out" > "$out/tune_backward.log" 2>&1
  timeout 200 python3 -m act24 bench prefill --out "$out" >> "$out/tune_backward.log" 2>&1
) &
export CUDA_VISIBLE_DEVICES=0
log="$out/gpu0.log"
timeout 240 python3 -m pytest -m gpu tests -x -p no:cacheprovider -rfEs > "$log" 2>&1
timeout 120 python3 -m pytest tests/test_kernel_backward_pack.py tests/test_kernel_sparsify_pack.py \
  tests/test_kernel_transpose.py -q -p no:cacheprovider >> "$log" 2>&1
tail -n 3 "$log"
timeout 40 python3 scripts/profile_packers.py >> "$log" 2>&1
timeout 120 ncu --clock-control none -k regex:_pack_kernel --launch-skip 2 --launch-count 2 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
  python3 scripts/profile_packers.py > "$out/ncu_packers.txt" 2>&1
timeout 150 python3 scripts/tune_sparsify_pack.py "$out" > "$out/tune_forward.log" 2>&1
wait
tail -n 12 "$log" "$out/tune_forward.log" "$out/tune_backward.log"
