// GEMM1 with ReLU², 2:4 selection and cuSPARSELt packing as its epilogue, on CUTLASS's sm90 main loops:
// packed = pack(relu(bf16(x @ W1^T))**2), y1 never written. x [M, K] and W1 [N, K] row-major bf16,
// fp32 accumulation; the output is the buffer torch._cslt_compress returns for the masked [M, N]
// activation (values row-major [M, N/2], then 4-bit metadata in 64 x 32 blocks; see
// src/act24/reference/cusparselt_layout.py). Timed against cuBLAS + act24's packer by
// scripts/probe_fused_gemm_pack.py.
//
// The epilogue works from the accumulator registers (no shared memory): in the wgmma accumulator
// layout a thread holds columns (n, n+1) of rows r and r+8, its neighbour lane (n+2, n+3). One
// shuffle gives the even lane row r's group of 4 and the odd lane row r+8's; after the selection, a
// second shuffle joins the two lanes' nibbles into whole metadata words. In the ping-pong schedule
// one warp group runs this while the other runs its next tile's main loop.
//
// Build (CUTLASS headers only; without -DNDEBUG CUTLASS's kernels run up to 1.5x slower):
//   nvcc -std=c++17 -O3 -DNDEBUG -arch=sm_90a --expt-relaxed-constexpr -Xcompiler -fPIC -shared \
//        -I $CUTLASS/include -I $CUTLASS/tools/util/include gemm_relu2_pack.cu -o libgemm_relu2_pack.so

#include <cstdint>
#include <cuda_bf16.h>

#include "cutlass/cutlass.h"
#include "cute/tensor.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/collective/detail.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"

using namespace cute;

namespace {

using Element = cutlass::bfloat16_t;
using ProblemShape = Shape<int, int, int, int>;
using StrideOut = cute::Stride<int64_t, _1, int64_t>;

__device__ __forceinline__ uint32_t relu2_bf16x2(float a, float b, uint32_t* key) {
  // both accumulators rounded to bf16 first (what the unfused path's y1 holds), then relu and the
  // square as act24's packer computes them: max.NaN keeps NaN, one rounding of the exact product
  __nv_bfloat162 pair = __floats2bfloat162_rn(a, b);
  uint32_t bits = *reinterpret_cast<uint32_t*>(&pair);
  uint32_t sq, k;
  asm("{\n.reg .b32 zero, clamp;\nmov.b32 zero, 0;\nmov.b32 clamp, 0x7F807F80;\nmax.NaN.bf16x2 %0, %2, zero;\n"
      "mul.rn.bf16x2 %0, %0, %0;\nmin.u16x2 %1, %0, clamp;\n}"
      : "=r"(sq), "=r"(k) : "r"(bits));
  *key = k;
  return sq;
}

__device__ __forceinline__ uint32_t unique_key(uint32_t k, uint32_t p) { return k ? 4 * k + (3 - p) : p; }

// The two kept 16-bit values (lower position first) and the nibble idx0 | idx1 << 2 of a group whose
// squares are s01 (positions 0, 1) and s23, keys k01 and k23 (the selection of kernels/top2.py).
__device__ __forceinline__ uint32_t select_2_of_4(uint32_t s01, uint32_t s23, uint32_t k01, uint32_t k23,
                                                  uint32_t* nibble) {
  uint32_t u0 = unique_key(k01 & 0xFFFF, 0), u1 = unique_key(k01 >> 16, 1);
  uint32_t u2 = unique_key(k23 & 0xFFFF, 2), u3 = unique_key(k23 >> 16, 3);
  uint32_t second = max(min(max(u0, u1), max(u2, u3)), max(min(u0, u1), min(u2, u3)));
  bool keep0 = u0 >= second, keep1 = u1 >= second, keep2 = u2 >= second, keep3 = u3 >= second;
  uint32_t e0 = s01 & 0xFFFF, e1 = s01 >> 16, e2 = s23 & 0xFFFF, e3 = s23 >> 16;
  uint32_t v0 = keep0 ? e0 : (keep1 ? e1 : e2);
  uint32_t v1 = keep3 ? e3 : (keep2 ? e2 : e1);
  *nibble = (keep0 ? 0u : (keep1 ? 1u : 2u)) | ((keep3 ? 3u : (keep2 ? 2u : 1u)) << 2);
  return v0 | (v1 << 16);
}

// An operator-style epilogue (the interface of CUTLASS's DefaultEpilogue) run by
// Sm90TmaWarpSpecializedAdapter inside the warp-specialized kernels.
template <bool WideStores>
struct Relu2PackEpilogue {
  using ElementC = void;
  using ElementD = Element;
  using StrideC = StrideOut;
  using StrideD = StrideOut;
  using GmemTiledCopyC = void;
  using GmemTiledCopyD = void;
  using ThreadEpilogueOp = void;  // named by GemmUniversalAdapter, unused
  struct SharedStorage {};
  using TensorStorage = SharedStorage;
  struct Arguments {
    void* packed = nullptr;
  };
  using Params = Arguments;

  template <class ProblemShapeT>
  static constexpr Params to_underlying_arguments(ProblemShapeT const&, Arguments const& args, void*) { return args; }
  template <class ProblemShapeT>
  static size_t get_workspace_size(ProblemShapeT const&, Arguments const&) { return 0; }
  template <class ProblemShapeT>
  static cutlass::Status initialize_workspace(ProblemShapeT const&, Arguments const&, void*, cudaStream_t,
                                              cutlass::CudaHostAdapter* = nullptr) {
    return cutlass::Status::kSuccess;
  }
  template <class ProblemShapeT>
  static bool can_implement(ProblemShapeT const& problem, Arguments const&) {
    return get<0>(problem) % 64 == 0 && get<1>(problem) % 64 == 0;
  }

  CUTLASS_HOST_DEVICE Relu2PackEpilogue(Params const& params_, SharedStorage const& = SharedStorage()) : params(params_) {}
  CUTLASS_DEVICE bool is_source_needed() { return false; }

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
        uint32_t key_r, key_r8;
        uint32_t sq_r = relu2_bf16x2(accumulators(i), accumulators(i + 1), &key_r);
        uint32_t sq_r8 = relu2_bf16x2(accumulators(i + 2), accumulators(i + 3), &key_r8);
        // the even lane keeps row r (positions 0, 1 its own), the odd lane row r+8 (positions 2, 3 its own)
        uint32_t sent_sq = odd ? sq_r : sq_r8, sent_key = odd ? key_r : key_r8;
        uint32_t got_sq = __shfl_xor_sync(0xffffffff, sent_sq, 1);
        uint32_t got_key = __shfl_xor_sync(0xffffffff, sent_key, 1);
        uint32_t s01 = odd ? got_sq : sq_r, k01 = odd ? got_key : key_r;
        uint32_t s23 = odd ? sq_r8 : got_sq, k23 = odd ? key_r8 : got_key;
        pairs[c] = select_2_of_4(s01, s23, k01, k23, &nibbles[c]);
        auto mn = coords(odd ? i + 2 : i);
        row = m0 + int(get<0>(mn));
        col = n0 + (int(get<1>(mn)) & ~3);  // the group's first column
      }
      const int h0 = (col & 7) >> 2;  // which group of each 8 columns this lane holds
      if constexpr (WideStores) {
        // lanes l and l^2 hold the 8 groups of this block's row alternately (h0 = 0, 1); after two
        // shuffles the h0 = 0 lane has groups 0-3 and the other 4-7: one 16-byte store each
        uint32_t send0 = h0 ? pairs[0] : pairs[2], send1 = h0 ? pairs[1] : pairs[3];
        uint32_t got0 = __shfl_xor_sync(0xffffffff, send0, 2), got1 = __shfl_xor_sync(0xffffffff, send1, 2);
        uint4 v = h0 ? make_uint4(got0, pairs[2], got1, pairs[3]) : make_uint4(pairs[0], got0, pairs[1], got1);
        const int first_group = ((col >> 5) << 3) + 4 * h0;
        if (row < M && col < N) *reinterpret_cast<uint4*>(values + int64_t(row) * (N / 4) + first_group) = v;
      } else {
        CUTLASS_PRAGMA_UNROLL
        for (int c = 0; c < 4; ++c) {
          const int group = ((col >> 5) << 3) + 2 * c + h0;
          if (row < M && col < N) values[int64_t(row) * (N / 4) + group] = pairs[c];
        }
      }
      // nibble 2j + h of word 32s + 4i + q, for local row 16s + 8h + i and group 4j + q of the block;
      // c = 0, 2 are groups q = h0, h0 + 4 (j = 0, 1); c = 1, 3 are q = 2 + h0, 6 + h0
      const uint32_t h = odd;
      uint32_t mine = (nibbles[0] << (4 * h)) | (nibbles[2] << (8 + 4 * h)) |
                      (((nibbles[1] << (4 * h)) | (nibbles[3] << (8 + 4 * h))) << 16);
      uint32_t words = mine | __shfl_xor_sync(0xffffffff, mine, 1);
      const int local_row = row & 63;
      const int base_row = row - 8 * int(h);  // row r of the pair
      if (base_row < M && col < N) {
        const int s = local_row >> 4, i8 = local_row & 7;
        int64_t block = int64_t(row >> 6) * (N / 32) + (col >> 5);
        int word = 32 * s + 4 * i8 + (odd ? 2 + h0 : h0);
        meta[block * 128 + word] = static_cast<uint16_t>(odd ? words >> 16 : words & 0xFFFF);
      }
    }
  }

  Params params;
};

template <class Tile, class Cluster, class Schedule, bool Fused, bool WideStores = false>
struct FusedGemm {
  using PlainSchedule = cute::conditional_t<cute::is_same_v<Schedule, cutlass::gemm::KernelTmaWarpSpecializedPingpong>,
                                            cutlass::epilogue::TmaWarpSpecialized,
                                            cutlass::epilogue::TmaWarpSpecializedCooperative>;
  using PlainEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster, cutlass::epilogue::collective::EpilogueTileAuto,
      float, float, void, cutlass::layout::RowMajor, 8, Element, cutlass::layout::RowMajor, 8,
      PlainSchedule>::CollectiveOp;
  using Epilogue = cute::conditional_t<
      Fused, cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<Relu2PackEpilogue<WideStores>>, PlainEpilogue>;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, cutlass::layout::RowMajor, 8, Element,
      cutlass::layout::ColumnMajor, 8, float, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      Schedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
  using StrideA = cutlass::gemm::TagToStrideA_t<cutlass::layout::RowMajor>;
  using StrideB = cutlass::gemm::TagToStrideB_t<cutlass::layout::ColumnMajor>;

  static int run(const void* x, const void* w1, void* out, int M, int N, int K, int swizzle, cudaStream_t stream) {
    static int sm_count = 0;
    cutlass::KernelHardwareInfo hw;
    cudaGetDevice(&hw.device_id);
    if (!sm_count) sm_count = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(hw.device_id);
    hw.sm_count = sm_count;
    auto stride_a = cutlass::make_cute_packed_stride(StrideA{}, make_shape(M, K, 1));
    auto stride_b = cutlass::make_cute_packed_stride(StrideB{}, make_shape(N, K, 1));
    typename Epilogue::Arguments epilogue_args{};
    if constexpr (Fused) {
      epilogue_args.packed = out;
    } else {
      epilogue_args.thread.alpha = 1.0f;
      epilogue_args.thread.beta = 0.0f;
      epilogue_args.dD = cutlass::make_cute_packed_stride(typename Epilogue::StrideD{}, make_shape(M, N, 1));
      epilogue_args.ptr_D = static_cast<Element*>(out);
    }
    typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                  make_tuple(M, N, K, 1),
                                  {static_cast<const Element*>(x), stride_a, static_cast<const Element*>(w1), stride_b},
                                  epilogue_args,
                                  hw};
    args.scheduler.max_swizzle_size = swizzle & 0xFF;  // the tile scheduler's grouping, and its raster order:
    args.scheduler.raster_order = static_cast<cutlass::gemm::kernel::detail::RasterOrderOptions>(swizzle >> 8);
    Gemm gemm;
    if (Gemm::get_workspace_size(args) != 0) return 2;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) return 3;
    if (gemm.initialize(args, nullptr, stream) != cutlass::Status::kSuccess) return 4;
    return gemm.run(stream) == cutlass::Status::kSuccess ? 0 : 5;
  }
};

using PingPong = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
using Cooperative = cutlass::gemm::KernelTmaWarpSpecializedCooperative;

}  // namespace

extern "C" {

// Configurations: "plain" writes y1 as bf16 (CUTLASS's TMA epilogue); "fused-wide" stores 16 bytes a thread.
const char* act24_fused_config_name(int config) {
  switch (config) {
    case 0: return "plain pingpong 128x128x64 cluster 1x1";
    case 1: return "plain cooperative 128x256x64 cluster 1x2";
    case 2: return "fused pingpong 128x128x64 cluster 1x1";
    case 3: return "fused pingpong 128x128x64 cluster 2x1";
    case 4: return "fused pingpong 128x128x64 cluster 1x2";
    case 5: return "fused pingpong 64x256x64 cluster 1x1";
    case 6: return "fused cooperative 128x256x64 cluster 1x2";
    case 7: return "plain cooperative 256x128x64 cluster 2x1";
    case 8: return "fused cooperative 256x128x64 cluster 2x1";
    case 9: return "fused-wide pingpong 128x128x64 cluster 1x1";
    case 10: return "fused-wide pingpong 128x128x64 cluster 2x1";
    case 11: return "fused-wide pingpong 128x128x64 cluster 1x2";
    case 12: return "fused-wide pingpong 64x256x64 cluster 1x1";
    default: return nullptr;
  }
}

// swizzle: the tile scheduler's max_swizzle_size | RasterOrderOptions (0 heuristic, 1 along M, 2 along N) << 8
int act24_fused_gemm(int config, const void* x, const void* w1, void* out, int M, int N, int K, int swizzle,
                     void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (config) {
    case 0: return FusedGemm<Shape<_128, _128, _64>, Shape<_1, _1, _1>, PingPong, false>::run(x, w1, out, M, N, K, swizzle, s);
    case 1: return FusedGemm<Shape<_128, _256, _64>, Shape<_1, _2, _1>, Cooperative, false>::run(x, w1, out, M, N, K, swizzle, s);
    case 2: return FusedGemm<Shape<_128, _128, _64>, Shape<_1, _1, _1>, PingPong, true>::run(x, w1, out, M, N, K, swizzle, s);
    case 3: return FusedGemm<Shape<_128, _128, _64>, Shape<_2, _1, _1>, PingPong, true>::run(x, w1, out, M, N, K, swizzle, s);
    case 4: return FusedGemm<Shape<_128, _128, _64>, Shape<_1, _2, _1>, PingPong, true>::run(x, w1, out, M, N, K, swizzle, s);
    case 5: return FusedGemm<Shape<_64, _256, _64>, Shape<_1, _1, _1>, PingPong, true>::run(x, w1, out, M, N, K, swizzle, s);
    case 6: return FusedGemm<Shape<_128, _256, _64>, Shape<_1, _2, _1>, Cooperative, true>::run(x, w1, out, M, N, K, swizzle, s);
    case 7: return FusedGemm<Shape<_256, _128, _64>, Shape<_2, _1, _1>, Cooperative, false>::run(x, w1, out, M, N, K, swizzle, s);
    case 8: return FusedGemm<Shape<_256, _128, _64>, Shape<_2, _1, _1>, Cooperative, true>::run(x, w1, out, M, N, K, swizzle, s);
    case 9: return FusedGemm<Shape<_128, _128, _64>, Shape<_1, _1, _1>, PingPong, true, true>::run(x, w1, out, M, N, K, swizzle, s);
    case 10: return FusedGemm<Shape<_128, _128, _64>, Shape<_2, _1, _1>, PingPong, true, true>::run(x, w1, out, M, N, K, swizzle, s);
    case 11: return FusedGemm<Shape<_128, _128, _64>, Shape<_1, _2, _1>, PingPong, true, true>::run(x, w1, out, M, N, K, swizzle, s);
    case 12: return FusedGemm<Shape<_64, _256, _64>, Shape<_1, _1, _1>, PingPong, true, true>::run(x, w1, out, M, N, K, swizzle, s);
    default: return 1;
  }
}
}
