#!/usr/bin/env bash
# The backward packer: GPU tests and launch sweep on GPU 0, Nsight Compute counters on GPU 1.
# Usage: ACT24_COMMIT=<sha> scripts/gpu_backward_pack.sh OUTDIR
set -uo pipefail
out=${1:?usage: $0 OUTDIR}; mkdir -p "$out"; export PYTHONPATH=src PYTHONUNBUFFERED=1
( export CUDA_VISIBLE_DEVICES=1
  timeout 200 ncu --clock-control none -k regex:_backward_pack_kernel --launch-skip 1 --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section MemoryWorkloadAnalysis python3 scripts/profile_packers.py > "$out/ncu_backward.txt" 2>&1 ) &
export CUDA_VISIBLE_DEVICES=0
timeout 200 python3 -m pytest tests/test_kernel_backward_pack.py tests/test_fast_training.py -q -x -p no:cacheprovider > "$out/tests.log" 2>&1
tail -n 2 "$out/tests.log"
timeout 330 python3 scripts/tune_backward_pack.py "$out" > "$out/tune.log" 2>&1
wait
tail -n 16 "$out/tune.log"; grep -E "regs=|pack ms|Duration|Registers|Achieved Occupancy|Memory Throughput|DRAM Throughput|Stall|Theoretical Occ" "$out/ncu_backward.txt" | head -20
