// GEMM1 of the sparse FFN forward with ReLU², the 2:4 selection and cuSPARSELt packing as its epilogue
// (relu2_pack_epilogue.cuh), for sm90: packed = pack(relu(round(x @ W1^T))**2). x [M, K] and W1 [N, K]
// row-major, fp32 accumulation (sm90_pingpong_gemm.cuh). Built at first use by kernels/cuda_build.py, one
// library per variant, and called through ctypes by kernels/gemm_relu2_pack.py. Variants (preprocessor
// definitions):
//   ACT24_FP16=1   fp16 operands (default bf16)
//   ACT24_COUNT=1  also the per-column counts of the training forward (kernels/sparsify_pack.py's)

#include "relu2_pack_epilogue.cuh"
#include "sm90_pingpong_gemm.cuh"

namespace {

#if ACT24_FP16
using Element = cutlass::half_t;
#else
using Element = cutlass::bfloat16_t;
#endif
#ifndef ACT24_COUNT
#define ACT24_COUNT 0
#endif

using Gemm = act24::PingpongGemm<Element, cutlass::layout::ColumnMajor, act24::Relu2PackEpilogue<Element, ACT24_COUNT != 0>>;

}  // namespace

extern "C" {

// 0 on success, else a status of act24::PingpongGemm::run (3: M or N not a multiple of 64, K not of 8).
// kept and nonzeros (int32 [N], added to) are used by the ACT24_COUNT variant only.
int act24_gemm_relu2_pack(const void* x, const void* w1, void* packed, int* kept, int* nonzeros, int M, int N, int K,
                          void* stream) {
  return Gemm::run(x, w1, {packed, kept, nonzeros}, M, N, K, stream);
}
}
