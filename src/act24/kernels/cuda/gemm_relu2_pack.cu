// GEMM1 of the sparse FFN forward with ReLU², the 2:4 selection and cuSPARSELt packing as its epilogue
// (relu2_pack_epilogue.cuh), for sm90: packed = pack(relu(round(x @ W1^T))**2). x [M, K] and W1 [N, K]
// row-major, fp32 accumulation. Built at first use by kernels/cuda_build.py, one library per variant,
// and called through ctypes by kernels/gemm_relu2_pack.py. Variants (preprocessor definitions):
//   ACT24_FP16=1   fp16 operands (default bf16)
//   ACT24_COUNT=1  also the per-column counts of the training forward (kernels/sparsify_pack.py's)
//
// The configuration is the fastest of scripts/probe_fused_gemm_pack.py's sweep on the H200 (bf16):
// CUTLASS's ping-pong schedule (the epilogue of one warp group overlaps the other's main loop),
// 128x128x64 tiles, 2x1 clusters, tiles grouped by 8 (fewer where that pads the grid) and rasterized
// along N.

#include "cutlass/epilogue/collective/detail.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"

#include "relu2_pack_epilogue.cuh"

namespace {

using namespace cute;

#if ACT24_FP16
using Element = cutlass::half_t;
#else
using Element = cutlass::bfloat16_t;
#endif
#ifndef ACT24_COUNT
#define ACT24_COUNT 0
#endif

using Tile = Shape<_128, _128, _64>;
using Cluster = Shape<_2, _1, _1>;
using StrideA = cutlass::gemm::TagToStrideA_t<cutlass::layout::RowMajor>;
using StrideB = cutlass::gemm::TagToStrideB_t<cutlass::layout::ColumnMajor>;

// Tiles are grouped by up to 8 (the fastest at T=16384), but CUTLASS's scheduler pads both tile counts to
// whole groups (along M to whole groups of clusters) and computes the padding from zero-filled operands:
// at T=1024 a group of 8 doubled the work. The largest group size with the least padded work.
int swizzle_size(int M, int N) {
  constexpr int64_t tile_m = size<0>(Tile{}), tile_n = size<1>(Tile{}), cluster_m = size<0>(Cluster{});
  static_assert(size<1>(Cluster{}) == 1, "padding along N counted without clusters");
  const int64_t tiles_m = (M + tile_m - 1) / tile_m, tiles_n = (N + tile_n - 1) / tile_n;
  auto round_up = [](int64_t a, int64_t b) { return (a + b - 1) / b * b; };
  int best = 8;
  int64_t least = round_up(tiles_m, cluster_m * 8) * round_up(tiles_n, 8);
  for (int group = 4; group >= 1; group /= 2) {
    const int64_t work = round_up(tiles_m, cluster_m * group) * round_up(tiles_n, group);
    if (work < least) best = group, least = work;
  }
  return best;
}

template <bool Count>
struct Fused {
  using Epilogue =
      cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<act24::Relu2PackEpilogue<Element, Count>>;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, cutlass::layout::RowMajor, 8, Element,
      cutlass::layout::ColumnMajor, 8, float, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedPingpong>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static int run(const void* x, const void* w1, void* packed, int* kept, int* nonzeros, int M, int N, int K,
                 void* stream) {
    cutlass::KernelHardwareInfo hw;
    cudaGetDevice(&hw.device_id);
    hw.sm_count = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(hw.device_id);
    typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                  make_tuple(M, N, K, 1),
                                  {static_cast<const Element*>(x), StrideA{int64_t(K), _1{}, int64_t(M) * K},
                                   static_cast<const Element*>(w1), StrideB{int64_t(K), _1{}, int64_t(N) * K}},
                                  {packed, kept, nonzeros},
                                  hw};
    args.scheduler.max_swizzle_size = swizzle_size(M, N);
    args.scheduler.raster_order = cutlass::gemm::kernel::detail::RasterOrderOptions::AlongN;
    Gemm gemm;
    if (Gemm::get_workspace_size(args) != 0) return 2;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) return 3;
    if (gemm.initialize(args, nullptr, static_cast<cudaStream_t>(stream)) != cutlass::Status::kSuccess) return 4;
    return gemm.run(static_cast<cudaStream_t>(stream)) == cutlass::Status::kSuccess ? 0 : 5;
  }
};

}  // namespace

extern "C" {

// 0 on success; 2: CUTLASS asks for a workspace (none is passed); 3: the problem is not implementable
// (M or N not a multiple of 64, K not of 8); 4: initialisation failed; 5: the launch failed. kept and
// nonzeros (int32 [N], added to) are used by the ACT24_COUNT variant only.
int act24_gemm_relu2_pack(const void* x, const void* w1, void* packed, int* kept, int* nonzeros, int M, int N, int K,
                          void* stream) {
  return Fused<ACT24_COUNT != 0>::run(x, w1, packed, kept, nonzeros, M, N, K, stream);
}
}
