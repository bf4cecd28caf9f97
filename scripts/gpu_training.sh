#!/usr/bin/env bash
# Training-path measurements on a 2-GPU machine, in one 10-minute call.
# GPU 0: the GPU tests, compile metadata and hardware counters of the packers (when ncu can read
# them), the backward packer's launch sweep. GPU 1: the ~1B training throughput, then the FFN
# training-step grid, one JSON per (d, H).
# Usage: ACT24_COMMIT=<sha> scripts/gpu_training.sh OUTDIR
set -uo pipefail
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
(
  export CUDA_VISIBLE_DEVICES=1
  timeout 170 python3 scripts/train_throughput.py "$out" > "$out/grid.log" 2>&1
  timeout 170 python3 -m act24 bench ffn --backward --shape 4096 16384 --out "$out/grid_4096" >> "$out/grid.log" 2>&1
  timeout 110 python3 -m act24 bench ffn --backward --shape 2048 8192 --out "$out/grid_2048" >> "$out/grid.log" 2>&1
  timeout 100 python3 -m act24 bench ffn --backward --shape 8192 32768 --tokens 2048 8192 16384 \
    --out "$out/grid_8192" >> "$out/grid.log" 2>&1
) &
export CUDA_VISIBLE_DEVICES=0
log="$out/gpu0.log"
timeout 240 python3 -m pytest -m gpu tests -q -x -p no:cacheprovider > "$log" 2>&1
timeout 120 python3 -m pytest tests/test_kernel_backward_pack.py tests/test_kernel_sparsify_pack.py \
  tests/test_kernel_transpose.py -q -p no:cacheprovider >> "$log" 2>&1
tail -n 3 "$log"
timeout 40 python3 scripts/profile_packers.py >> "$log" 2>&1
timeout 120 ncu --clock-control none -k regex:_pack_kernel --launch-skip 2 --launch-count 2 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
  python3 scripts/profile_packers.py > "$out/ncu_packers.txt" 2>&1
timeout 170 python3 scripts/tune_backward_pack.py "$out" >> "$log" 2>&1
wait
tail -n 25 "$log" "$out/grid.log"
