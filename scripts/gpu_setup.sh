# Sourced by the GPU scripts: OUTDIR from $1, the environment, the GPU's description, the fused kernels' variants
# built at once (one nvcc each, in parallel) and `keep`, which records the first failing step's exit code.
# CUTLASS's headers: ACT24_CUTLASS_DIR (default: .cutlass in the checkout).
set -uo pipefail
status=0
keep() { local rc=$?; [ "$status" -ne 0 ] || status=$rc; }
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
export ACT24_CUTLASS_DIR=${ACT24_CUTLASS_DIR:-$PWD/.cutlass}
export ACT24_CACHE_DIR=${ACT24_CACHE_DIR:-$PWD/build/act24-cache}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version --format=csv > "$out/gpu.txt" 2>&1
build() { python3 -c "import sys; from act24.kernels import cuda_build; cuda_build.load_library(sys.argv[1], tuple(sys.argv[2:]))" "$@"; }
for fp16 in 0 1; do
  build gemm_relu2_grad_pack "ACT24_FP16=$fp16" &
  for count in 0 1; do build gemm_relu2_pack "ACT24_FP16=$fp16" "ACT24_COUNT=$count" & done
done
wait
