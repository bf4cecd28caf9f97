// CUTLASS sm90 GEMM1 configurations behind a C interface, timed by scripts/probe_fused_gemm_pack.py
// against cuBLAS + act24's packer: "plain" ones write y1 as bf16 (CUTLASS's TMA epilogue), "fused" ones
// take act24's ReLU²/2:4/pack epilogue (src/act24/kernels/cuda/relu2_pack_epilogue.cuh) and write the
// packed operand. The package ships the fastest (src/act24/kernels/cuda/gemm_relu2_pack.cu).
//
// Build (CUTLASS headers only; without -DNDEBUG CUTLASS's kernels run up to 1.5x slower):
//   nvcc -std=c++17 -O3 -DNDEBUG -arch=sm_90a --expt-relaxed-constexpr -Xcompiler -fPIC -shared \
//        -I $CUTLASS/include -I $CUTLASS/tools/util/include -I src/act24/kernels/cuda \
//        scripts/fused_gemm_pack_probe/gemm_relu2_pack.cu -o libgemm_relu2_pack.so

#include <cstdint>

#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/collective/detail.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"

#include "relu2_pack_epilogue.cuh"

using namespace cute;

namespace {

using Element = cutlass::bfloat16_t;  // the probe measures bf16
using ProblemShape = Shape<int, int, int, int>;

template <class Tile, class Cluster, class Schedule, bool Fused>
struct FusedGemm {
  using PlainSchedule = cute::conditional_t<cute::is_same_v<Schedule, cutlass::gemm::KernelTmaWarpSpecializedPingpong>,
                                            cutlass::epilogue::TmaWarpSpecialized,
                                            cutlass::epilogue::TmaWarpSpecializedCooperative>;
  using PlainEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster, cutlass::epilogue::collective::EpilogueTileAuto,
      float, float, void, cutlass::layout::RowMajor, 8, Element, cutlass::layout::RowMajor, 8,
      PlainSchedule>::CollectiveOp;
  using Epilogue = cute::conditional_t<
      Fused, cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<act24::Relu2PackEpilogue<Element, false>>, PlainEpilogue>;
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

const char* act24_fused_config_name(int config) {
  switch (config) {
    case 0: return "plain pingpong 128x128x64 cluster 1x1";
    case 1: return "plain cooperative 128x256x64 cluster 1x2";
    case 2: return "plain cooperative 256x128x64 cluster 2x1";
    case 3: return "fused pingpong 128x128x64 cluster 1x1";
    case 4: return "fused pingpong 128x128x64 cluster 2x1";
    case 5: return "fused pingpong 128x128x64 cluster 1x2";
    case 6: return "fused pingpong 64x256x64 cluster 1x1";
    case 7: return "fused cooperative 128x256x64 cluster 1x2";
    case 8: return "fused cooperative 256x128x64 cluster 2x1";
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
    case 2: return FusedGemm<Shape<_256, _128, _64>, Shape<_2, _1, _1>, Cooperative, false>::run(x, w1, out, M, N, K, swizzle, s);
    case 3: return FusedGemm<Shape<_128, _128, _64>, Shape<_1, _1, _1>, PingPong, true>::run(x, w1, out, M, N, K, swizzle, s);
    case 4: return FusedGemm<Shape<_128, _128, _64>, Shape<_2, _1, _1>, PingPong, true>::run(x, w1, out, M, N, K, swizzle, s);
    case 5: return FusedGemm<Shape<_128, _128, _64>, Shape<_1, _2, _1>, PingPong, true>::run(x, w1, out, M, N, K, swizzle, s);
    case 6: return FusedGemm<Shape<_64, _256, _64>, Shape<_1, _1, _1>, PingPong, true>::run(x, w1, out, M, N, K, swizzle, s);
    case 7: return FusedGemm<Shape<_128, _256, _64>, Shape<_1, _2, _1>, Cooperative, true>::run(x, w1, out, M, N, K, swizzle, s);
    case 8: return FusedGemm<Shape<_256, _128, _64>, Shape<_2, _1, _1>, Cooperative, true>::run(x, w1, out, M, N, K, swizzle, s);
    default: return 1;
  }
}
}
