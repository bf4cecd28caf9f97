// The token-wise stage of the sparse FFN's backward as the epilogue of dy2 = dy @ W2 (sm90 CUTLASS GEMM):
// dy1 = round(dy2) * 2*sqrt(a) at the kept positions of the forward's packed a = relu(y1)**2 * m, written in
// a's layout (a's metadata, copied, and dy1's value pairs), so dy2 never reaches memory. Byte for byte what
// kernels/backward_pack.py writes as dy1_tokenwise for the same dy2 (its _token_rows and _grad): the
// rounding of each step to the element type as the reference rounds.
//
// Each lane gathers its row's group of 4 dy2 values with one shuffle, loads a's value pairs (one 16-byte
// load a lane) and metadata word where the forward epilogue stored them (packed_lanes.cuh), picks dy2 at the
// two kept positions and stores dy1's pairs as the forward stores its own. No shared memory.
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cutlass/cutlass.h"
#include "cute/tensor.hpp"

#include "packed_lanes.cuh"
#include "sm90_pingpong_gemm.cuh"

namespace act24 {

using namespace cute;

// sqrt.approx (relative error below 2**-22): the correctly rounded sqrtf has a slow path behind a branch,
// 64 of them in this epilogue. The instruction may flush fp32 subnormals (bf16 has them): those are scaled
// by 4**12 first (exact) and their roots by 2**-12, as backward_pack.py does
__device__ __forceinline__ float sqrt_approx(float a) {
  const bool tiny = a < 1.1754943508222875e-38f;
  float r;
  asm("sqrt.approx.f32 %0, %1;" : "=f"(r) : "f"(tiny ? a * 16777216.0f : a));
  return tiny ? r * 0.000244140625f : r;
}

template <class Element>
struct Bits16;

template <>
struct Bits16<cutlass::bfloat16_t> {
  static __device__ __forceinline__ float to_float(uint32_t bits) { return __uint_as_float(bits << 16); }
  static __device__ __forceinline__ uint32_t round(float v) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  }
  static __device__ __forceinline__ uint32_t round_x2(float a, float b) {
    __nv_bfloat162 pair = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&pair);
  }
  // The root rounded to bf16: a bf16 number's root is at least 2**-19 (relative) away from a midpoint of
  // bf16 numbers, so the approximation rounds like the exact root (a GPU test checks every pattern)
  static __device__ __forceinline__ float sqrt_rounded(float a) { return to_float(round(sqrt_approx(a))); }
};

template <>
struct Bits16<cutlass::half_t> {
  static __device__ __forceinline__ float to_float(uint32_t bits) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
  }
  static __device__ __forceinline__ uint32_t round(float v) { return __half_as_ushort(__float2half_rn(v)); }
  static __device__ __forceinline__ uint32_t round_x2(float a, float b) {
    __half2 pair = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&pair);
  }
  // fp16's finer grid: the approximation rounded to fp16 is the answer or a neighbour, decided exactly by
  // comparing a with the squares of the midpoints (12 significant bits: exact in fp32), as backward_pack.py
  static __device__ __forceinline__ float sqrt_rounded(float a) {
    const uint32_t near_bits = round(sqrt_approx(a));
    const float near = to_float(near_bits), up = to_float(near_bits + 1), down = to_float(near_bits - 1);
    const float mid_up = __fmul_rn(__fadd_rn(near, up), 0.5f), mid_down = __fmul_rn(__fadd_rn(near, down), 0.5f);
    return a > __fmul_rn(mid_up, mid_up) ? up : (a < __fmul_rn(mid_down, mid_down) ? down : near);
  }
};

// dy2 * 2*sqrt(a) as backward_pack.py's _grad rounds it (each step to the element type), 0 where a == 0.
template <class Element>
__device__ __forceinline__ uint32_t relu2_grad(uint32_t g, uint32_t a) {
  using B = Bits16<Element>;
  const float af = B::to_float(a);
  const float twice = B::to_float(B::round(__fmul_rn(B::to_float(g), 2.0f)));
  const uint32_t d = B::round(__fmul_rn(twice, B::sqrt_rounded(af)));
  return af != 0.0f ? d : 0u;  // a select, not a branch
}

struct Relu2GradPackArguments {
  const void* packed_a = nullptr;  // [M, N*9/16]: the forward's packed activation
  void* packed_dy1 = nullptr;      // [M, N*9/16]: written, dy1 in a's positions
};

template <class Element>
struct Relu2GradPackEpilogue : RegisterEpilogue<Element, Relu2GradPackArguments> {
  using Base = RegisterEpilogue<Element, Relu2GradPackArguments>;
  using typename Base::Params;
  using typename Base::SharedStorage;
  using Base::params;

  CUTLASS_HOST_DEVICE Relu2GradPackEpilogue(Params const& params_, SharedStorage const& = SharedStorage())
      : Base(params_) {}

  template <class ProblemShapeMNKL, class BlockShapeMNK, class BlockCoordMNKL, class FrgEngine, class FrgLayout,
            class TiledMma, class ResidueMNK>
  CUTLASS_DEVICE void operator()(ProblemShapeMNKL problem_shape_mnkl, BlockShapeMNK blk_shape_MNK,
                                 BlockCoordMNKL blk_coord_mnkl, cute::Tensor<FrgEngine, FrgLayout> const& accumulators,
                                 TiledMma tiled_mma, ResidueMNK, int thread_idx, char*) {
    const int M = get<0>(problem_shape_mnkl);
    const int N = get<1>(problem_shape_mnkl);
    const int m0 = get<0>(blk_coord_mnkl) * int(size<0>(blk_shape_MNK));
    const int n0 = get<1>(blk_coord_mnkl) * int(size<1>(blk_shape_MNK));
    auto thr_mma = tiled_mma.get_thread_slice(thread_idx);
    Tensor coords = thr_mma.partition_C(make_identity_tensor(take<0, 2>(blk_shape_MNK)));  // (m, n) in the tile
    constexpr int kValues = decltype(size(accumulators))::value;
    static_assert(kValues % 16 == 0, "the accumulator layout must hold whole 32-column blocks");
    static_assert(rank(FrgLayout{}) == 3 && size<2>(FrgLayout{}) == 1, "one MMA along N per tile");

    const bool odd = thread_idx & 1;
    const int64_t values_size = int64_t(M) * N / 4;  // uint32 value pairs before the metadata
    const uint32_t* a_values = static_cast<const uint32_t*>(params.packed_a);
    const uint16_t* a_meta = reinterpret_cast<const uint16_t*>(a_values + values_size);
    uint32_t* d_values = static_cast<uint32_t*>(params.packed_dy1);
    uint16_t* d_meta = reinterpret_cast<uint16_t*>(d_values + values_size);

    CUTLASS_PRAGMA_UNROLL
    for (int b = 0; b < kValues / 16; ++b) {  // a 32-column block of two rows (r, r+8)
      uint32_t g01[4], g23[4];  // this lane's row, groups c = 0..3: dy2 at positions (0, 1) and (2, 3)
      int row = 0, col = 0;
      CUTLASS_PRAGMA_UNROLL
      for (int c = 0; c < 4; ++c) {
        const int i = 16 * b + 4 * c;
        const uint32_t g_r = Bits16<Element>::round_x2(accumulators(i), accumulators(i + 1));
        const uint32_t g_r8 = Bits16<Element>::round_x2(accumulators(i + 2), accumulators(i + 3));
        // the even lane takes row r (positions 0, 1 its own), the odd lane row r+8 (positions 2, 3 its own)
        const uint32_t got = __shfl_xor_sync(0xffffffff, odd ? g_r : g_r8, 1);
        g01[c] = odd ? got : g_r;
        g23[c] = odd ? g_r8 : got;
        auto mn = coords(odd ? i + 2 : i);
        row = m0 + int(get<0>(mn));
        col = n0 + (int(get<1>(mn)) & ~3);
      }
      // rows past M are computed too (the tile scheduler pads the grid): nothing is loaded or stored there
      const bool inside = row < M && col < N;
      const PackedPlaces at(row, col, N, odd);
      const uint4 a_word = inside ? *reinterpret_cast<const uint4*>(a_values + at.values) : make_uint4(0, 0, 0, 0);
      const uint16_t meta = inside ? a_meta[at.meta] : uint16_t(0);
      uint32_t a_pairs[4], nibbles[4], d_pairs[4];
      from_consecutive(a_word, at.h0, a_pairs);
      nibbles_of(meta, odd, nibbles);
      CUTLASS_PRAGMA_UNROLL
      for (int c = 0; c < 4; ++c) {
        const uint32_t i0 = nibbles[c] & 3, i1 = nibbles[c] >> 2;
        const uint32_t e0 = g01[c] & 0xFFFF, e1 = g01[c] >> 16, e2 = g23[c] & 0xFFFF, e3 = g23[c] >> 16;
        const uint32_t first = i0 == 0 ? e0 : (i0 == 1 ? e1 : e2);
        const uint32_t second = i1 == 3 ? e3 : (i1 == 2 ? e2 : e1);
        d_pairs[c] = relu2_grad<Element>(first, a_pairs[c] & 0xFFFF) |
                     (relu2_grad<Element>(second, a_pairs[c] >> 16) << 16);
      }
      const uint4 d_word = to_consecutive(d_pairs, at.h0);
      if (inside) {
        *reinterpret_cast<uint4*>(d_values + at.values) = d_word;
        d_meta[at.meta] = meta;  // dy1 is non-zero only where a is: a's positions
      }
    }
  }
};

}  // namespace act24
