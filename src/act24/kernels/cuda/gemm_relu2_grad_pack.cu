// dy2 = dy @ W2 of the sparse FFN's backward with the token-wise stage as its epilogue
// (relu2_grad_pack_epilogue.cuh), for sm90: packed dy1 = pack_like_a(round(dy @ W2) * 2*sqrt(a)). dy [M, K]
// and W2 [K, N] row-major, fp32 accumulation (sm90_pingpong_gemm.cuh). Built at first use by
// kernels/cuda_build.py and called through ctypes by kernels/gemm_relu2_grad_pack.py. Variant:
//   ACT24_FP16=1   fp16 operands (default bf16)

#include "relu2_grad_pack_epilogue.cuh"
#include "sm90_pingpong_gemm.cuh"

namespace {

#if ACT24_FP16
using Element = cutlass::half_t;
#else
using Element = cutlass::bfloat16_t;
#endif

using Gemm = act24::PingpongGemm<Element, cutlass::layout::RowMajor, act24::Relu2GradPackEpilogue<Element>>;

}  // namespace

extern "C" {

// 0 on success, else a status of act24::PingpongGemm::run (3: M or N not a multiple of 64, K or N not of 8).
int act24_gemm_relu2_grad_pack(const void* dy, const void* w2, const void* packed_a, void* packed_dy1, int M, int N,
                               int K, void* stream) {
  return Gemm::run(dy, w2, {packed_a, packed_dy1}, M, N, K, stream);
}
}
