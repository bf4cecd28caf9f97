// ReLU², 2:4 selection and cuSPARSELt packing as the epilogue of an sm90 CUTLASS GEMM:
// packed = pack(relu(round(acc))**2), rounded to bf16 or fp16, straight from the accumulator registers,
// so y1 = x @ W1^T never reaches memory. The output is the buffer torch._cslt_compress returns for the
// masked activation (values row-major [M, N/2], then 4-bit metadata in 64 x 32 blocks; see
// src/act24/reference/cusparselt_layout.py), byte for byte what kernels/sparsify_pack.py writes for
// the same y1 (selection and rounding of kernels/top2.py).
//
// No shared memory: shuffles bring each group of 4 to one lane and the packed output to whole 16-byte
// stores (packed_lanes.cuh). In CUTLASS's ping-pong schedule one warp group runs this while the other
// runs its next tile's main loop.
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

// relu(v)**2 of two accumulators, as the two 16-bit patterns of one uint32: both rounded to the element
// type first (what the unfused path's y1 holds), then relu and the square as act24's packer computes
// them (kernels/top2.py): max.NaN keeps NaN, one rounding of the exact product.
template <class Element>
__device__ __forceinline__ uint32_t relu2_x2(float a, float b);

template <>
__device__ __forceinline__ uint32_t relu2_x2<cutlass::bfloat16_t>(float a, float b) {
  __nv_bfloat162 pair = __floats2bfloat162_rn(a, b);
  uint32_t bits = *reinterpret_cast<uint32_t*>(&pair), sq;
  asm("{\n.reg .b32 zero;\nmov.b32 zero, 0;\nmax.NaN.bf16x2 %0, %1, zero;\nmul.rn.bf16x2 %0, %0, %0;\n}"
      : "=r"(sq) : "r"(bits));
  return sq;
}

template <>
__device__ __forceinline__ uint32_t relu2_x2<cutlass::half_t>(float a, float b) {
  __half2 pair = __floats2half2_rn(a, b);
  uint32_t bits = *reinterpret_cast<uint32_t*>(&pair), sq;
  asm("{\n.reg .b32 zero;\nmov.b32 zero, 0;\nmax.NaN.f16x2 %0, %1, zero;\nmul.rn.f16x2 %0, %0, %0;\n}"
      : "=r"(sq) : "r"(bits));
  return sq;
}

// The ranking keys of two squares (>= 0 or NaN): their bit patterns, NaN clamped to Inf.
template <class Element>
__device__ __forceinline__ uint32_t keys_x2(uint32_t squares) {
  constexpr uint32_t clamp = cute::is_same_v<Element, cutlass::half_t> ? 0x7C007C00u : 0x7F807F80u;
  uint32_t k;
  asm("min.u16x2 %0, %1, %2;" : "=r"(k) : "r"(squares), "r"(clamp));
  return k;
}

__device__ __forceinline__ uint32_t unique_key(uint32_t k, uint32_t p) { return k ? 4 * k + (3 - p) : p; }

// The two kept 16-bit values (lower position first) and the nibble idx0 | idx1 << 2 of a group whose
// squares are s01 (positions 0, 1) and s23 (the selection of kernels/top2.py). With Count, also the
// packer's counter flags, one byte a position: bit 0 kept and non-zero, bit 4 non-zero.
template <class Element, bool Count>
__device__ __forceinline__ uint32_t select_2_of_4(uint32_t s01, uint32_t s23, uint32_t* nibble, uint32_t* flags) {
  const uint32_t k01 = keys_x2<Element>(s01), k23 = keys_x2<Element>(s23);
  const uint32_t k0 = k01 & 0xFFFF, k1 = k01 >> 16, k2 = k23 & 0xFFFF, k3 = k23 >> 16;
  uint32_t u0 = unique_key(k0, 0), u1 = unique_key(k1, 1), u2 = unique_key(k2, 2), u3 = unique_key(k3, 3);
  uint32_t second = max(min(max(u0, u1), max(u2, u3)), max(min(u0, u1), min(u2, u3)));
  bool keep0 = u0 >= second, keep1 = u1 >= second, keep2 = u2 >= second, keep3 = u3 >= second;
  uint32_t e0 = s01 & 0xFFFF, e1 = s01 >> 16, e2 = s23 & 0xFFFF, e3 = s23 >> 16;
  uint32_t v0 = keep0 ? e0 : (keep1 ? e1 : e2);
  uint32_t v1 = keep3 ? e3 : (keep2 ? e2 : e1);
  *nibble = (keep0 ? 0u : (keep1 ? 1u : 2u)) | ((keep3 ? 3u : (keep2 ? 2u : 1u)) << 2);
  if constexpr (Count) {
    const bool nz0 = k0 != 0, nz1 = k1 != 0, nz2 = k2 != 0, nz3 = k3 != 0;
    const uint32_t nonzero = uint32_t(nz0) | uint32_t(nz1) << 8 | uint32_t(nz2) << 16 | uint32_t(nz3) << 24;
    const uint32_t kept = uint32_t(keep0) | uint32_t(keep1) << 8 | uint32_t(keep2) << 16 | uint32_t(keep3) << 24;
    *flags = (kept & nonzero) | nonzero << 4;
  }
  return v0 | (v1 << 16);
}

struct Relu2PackArguments {
  void* packed = nullptr;
  int* kept = nullptr;
  int* nonzeros = nullptr;
};

// The epilogue, run by Sm90TmaWarpSpecializedAdapter inside the warp-specialized kernels. With Count it also
// adds each column's kept-non-zero and non-zero counts to `kept` and `nonzeros` (int32 [N], zeroed by the
// caller), as kernels/sparsify_pack.py counts them. Element: bfloat16_t or half_t.
template <class Element, bool Count>
struct Relu2PackEpilogue : RegisterEpilogue<Element, Relu2PackArguments> {
  using Base = RegisterEpilogue<Element, Relu2PackArguments>;
  using typename Base::Params;
  using typename Base::SharedStorage;
  using Base::params;

  CUTLASS_HOST_DEVICE Relu2PackEpilogue(Params const& params_, SharedStorage const& = SharedStorage()) : Base(params_) {}

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
    // groups of 4 accumulators: (n, n+1) of row r, then of row r+8; 4 consecutive groups = 32 columns
    static_assert(kValues % 16 == 0, "the accumulator layout must hold whole 32-column blocks");
    // (MMA, MMA_M, MMA_N): block b covers the columns of block b % kColumnBlocks, in MMA_M row repeats
    static_assert(rank(FrgLayout{}) == 3 && size<2>(FrgLayout{}) == 1, "one MMA along N per tile");
    constexpr int kColumnBlocks = decltype(size<0>(FrgLayout{}))::value / 16;
    constexpr int kSlots = 4 * kColumnBlocks;  // groups of 4 columns a lane counts
    static_assert(!Count || (kSlots % 16 == 0 && decltype(size<1>(FrgLayout{}))::value < 16),
                  "counts: one slot per lane of a half warp, 8-bit fields");
    // 4-bit counters (kept, non-zero) in a byte a column: at most MMA_M rows a lane per slot
    uint32_t counts[Count ? kSlots : 1] = {};

    const bool odd = thread_idx & 1;
    uint32_t* values = static_cast<uint32_t*>(params.packed);
    uint16_t* meta = static_cast<uint16_t*>(params.packed) + int64_t(M) * N / 2;

    CUTLASS_PRAGMA_UNROLL
    for (int b = 0; b < kValues / 16; ++b) {  // a 32-column block of two rows (r, r+8)
      uint32_t nibbles[4], pairs[4];
      int row = 0, col = 0;
      CUTLASS_PRAGMA_UNROLL
      for (int c = 0; c < 4; ++c) {
        const int i = 16 * b + 4 * c;
        uint32_t sq_r = relu2_x2<Element>(accumulators(i), accumulators(i + 1));
        uint32_t sq_r8 = relu2_x2<Element>(accumulators(i + 2), accumulators(i + 3));
        // the even lane keeps row r (positions 0, 1 its own), the odd lane row r+8 (positions 2, 3 its own)
        uint32_t got_sq = __shfl_xor_sync(0xffffffff, odd ? sq_r : sq_r8, 1);
        uint32_t s01 = odd ? got_sq : sq_r, s23 = odd ? sq_r8 : got_sq;
        uint32_t flags;
        pairs[c] = select_2_of_4<Element, Count>(s01, s23, &nibbles[c], &flags);
        auto mn = coords(odd ? i + 2 : i);
        row = m0 + int(get<0>(mn));
        col = n0 + (int(get<1>(mn)) & ~3);  // the group's first column
        // rows past M are computed too (the tile scheduler pads the grid to whole clusters and swizzles),
        // from zero-filled x rows: zero, but NaN in a column whose w1 row holds NaN or Inf
        if constexpr (Count) counts[4 * (b % kColumnBlocks) + c] += row < M ? flags : 0u;
      }
      const PackedPlaces at(row, col, N, odd);
      const uint4 v = to_consecutive(pairs, at.h0);
      const uint16_t word = meta_word(nibbles, odd);
      if (row < M && col < N) {
        *reinterpret_cast<uint4*>(values + at.values) = v;
        meta[at.meta] = word;
      }
    }
    if constexpr (Count) {
      // the lanes sharing bit 1 (the same 4 columns in every slot, other rows) sum their counters; then
      // each of those 16 lanes adds one slot's columns to memory (a warp: 8 reductions a tile, all lanes
      // busy). Zero counts are skipped: most of a sparse activation's columns.
      uint32_t kept[kSlots], nonzero[kSlots];
      CUTLASS_PRAGMA_UNROLL
      for (int s = 0; s < kSlots; ++s) {
        kept[s] = counts[s] & 0x0F0F0F0F;  // 8-bit fields from here: 16 lanes x MMA_M rows
        nonzero[s] = (counts[s] >> 4) & 0x0F0F0F0F;
        CUTLASS_PRAGMA_UNROLL
        for (int j = 0; j < 4; ++j) {
          const int offset = j ? 2 << j : 1;  // 1, 4, 8, 16
          kept[s] += __shfl_xor_sync(0xffffffff, kept[s], offset);
          nonzero[s] += __shfl_xor_sync(0xffffffff, nonzero[s], offset);
        }
      }
      const int lane = thread_idx & 31, mine = (lane & 1) | ((lane >> 2) << 1);  // index among the 16
      CUTLASS_PRAGMA_UNROLL
      for (int s0 = 0; s0 < kSlots; s0 += 16) {
        uint32_t kept_fields = 0, nonzero_fields = 0;
        int col = N;
        CUTLASS_PRAGMA_UNROLL
        for (int s = 0; s < 16; ++s) {  // selects, not an indexed load: the arrays stay in registers
          if (s == mine) {
            kept_fields = kept[s0 + s];
            nonzero_fields = nonzero[s0 + s];
            col = n0 + (int(get<1>(coords(4 * (s0 + s)))) & ~3);  // slot s0 + s is that of block (s0 + s) / 4
          }
        }
        if (col < N) {
          CUTLASS_PRAGMA_UNROLL
          for (int p = 0; p < 4; ++p) {
            const int k = (kept_fields >> (8 * p)) & 0xFF, z = (nonzero_fields >> (8 * p)) & 0xFF;
            if (k) atomicAdd(params.kept + col + p, k);
            if (z) atomicAdd(params.nonzeros + col + p, z);
          }
        }
      }
    }
  }

};

}  // namespace act24
