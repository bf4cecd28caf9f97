// The sm90 GEMM both fused kernels run, with a register epilogue of theirs (relu2_pack_epilogue.cuh,
// relu2_grad_pack_epilogue.cuh): A [M, K] row-major times B, fp32 accumulation, no output matrix (the
// epilogue writes what it writes). LayoutB: ColumnMajor for B stored [N, K] row-major (x @ W1^T),
// RowMajor for B stored [K, N] row-major (dy @ W2).
//
// The configuration is the fastest of scripts/probe_fused_gemm_pack.py's sweep on the H200 (bf16, GEMM1):
// CUTLASS's ping-pong schedule (the epilogue of one warp group overlaps the other's main loop),
// 128x128x64 tiles, 2x1 clusters, tiles grouped by 8 (fewer where that pads the grid) and rasterized
// along N.
#pragma once

#include "cutlass/epilogue/collective/detail.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"

namespace act24 {

using namespace cute;

using PingpongTile = Shape<_128, _128, _64>;
using PingpongCluster = Shape<_2, _1, _1>;

// Tiles are grouped by up to 8 (the fastest at T=16384), but CUTLASS's scheduler pads both tile counts to
// whole groups (along M to whole groups of clusters) and computes the padding from zero-filled operands:
// at T=1024 a group of 8 doubled the work. The largest group size with the least padded work.
inline int swizzle_size(int M, int N) {
  constexpr int64_t tile_m = size<0>(PingpongTile{}), tile_n = size<1>(PingpongTile{});
  constexpr int64_t cluster_m = size<0>(PingpongCluster{});
  static_assert(size<1>(PingpongCluster{}) == 1, "padding along N counted without clusters");
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

// Status codes of run(), returned through the C interfaces: 0 success; 2 CUTLASS asks for a workspace
// (none is passed); 3 the problem is not implementable; 4 initialisation failed; 5 the launch failed.
template <class Element, class LayoutB, class EpilogueOp>
struct PingpongGemm {
  using Epilogue = cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<EpilogueOp>;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, cutlass::layout::RowMajor, 8, Element, LayoutB, 8,
      float, PingpongTile, PingpongCluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedPingpong>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
  using StrideA = cutlass::gemm::TagToStrideA_t<cutlass::layout::RowMajor>;
  using StrideB = cutlass::gemm::TagToStrideB_t<LayoutB>;

  static StrideB stride_b(int N, int K) {
    if constexpr (cute::is_same_v<LayoutB, cutlass::layout::RowMajor>) {
      return StrideB{_1{}, int64_t(N), int64_t(N) * K};
    } else {
      return StrideB{int64_t(K), _1{}, int64_t(N) * K};
    }
  }

  static int run(const void* a, const void* b, typename EpilogueOp::Arguments epilogue, int M, int N, int K,
                 void* stream) {
    cutlass::KernelHardwareInfo hw;
    cudaGetDevice(&hw.device_id);
    hw.sm_count = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(hw.device_id);
    typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                  make_tuple(M, N, K, 1),
                                  {static_cast<const Element*>(a), StrideA{int64_t(K), _1{}, int64_t(M) * K},
                                   static_cast<const Element*>(b), stride_b(N, K)},
                                  epilogue,
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

// The interface of CUTLASS's DefaultEpilogue that Sm90TmaWarpSpecializedAdapter needs, for epilogues that
// work on the accumulator registers alone (no source matrix, no shared memory, no workspace). Derived
// epilogues add their Arguments' pointers and operator(); M and N must be multiples of 64 (the packed
// layout's metadata blocks).
template <class Element, class ArgumentsT>
struct RegisterEpilogue {
  using StrideOut = cute::Stride<int64_t, _1, int64_t>;
  using ElementC = void;
  using ElementD = Element;
  using StrideC = StrideOut;
  using StrideD = StrideOut;
  using GmemTiledCopyC = void;
  using GmemTiledCopyD = void;
  using ThreadEpilogueOp = void;  // named by GemmUniversalAdapter, unused
  struct SharedStorage {};
  using TensorStorage = SharedStorage;
  using Arguments = ArgumentsT;
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

  CUTLASS_HOST_DEVICE RegisterEpilogue(Params const& params_) : params(params_) {}
  CUTLASS_DEVICE bool is_source_needed() { return false; }

  Params params;
};

}  // namespace act24
