// CUTLASS's sm90 2:4 sparse GEMM (wgmma.sp) behind a C interface, to time it against cuSPARSELt from
// Python (scripts/probe_cutlass_sparse.py). D[M, N] = A[M, K] @ B[K, N], bf16 in and out, fp32
// accumulation; A 2:4 sparse along K, row-major, compressed by CUTLASS's own compressor (its layout
// is not cuSPARSELt's). B is K-major ("col", B^T row-major, like W2 for the forward) or N-major
// ("row", like x for the weight gradients). Each config is one tile shape, cluster and schedule.
//
// Build (CUTLASS headers only; no CUTLASS build step):
//   nvcc -std=c++17 -O3 -DNDEBUG -arch=sm_90a --expt-relaxed-constexpr -Xcompiler -fPIC -shared \
//        -I $CUTLASS/include -I $CUTLASS/tools/util/include sm90_sparse_gemm.cu -o libsm90_sparse_gemm.so

#include <cstdint>
#include <cstdio>

#include "cutlass/cutlass.h"
#include "cute/tensor.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/transform/device/transform_universal_adapter.hpp"
#include "cutlass/transform/kernel/sparse_gemm_compressor.hpp"
#include "cutlass/util/packed_stride.hpp"

using namespace cute;

namespace {

using Element = cutlass::bfloat16_t;
using ProblemShape = Shape<int, int, int, int>;

template <class LayoutB, class Tile, class Cluster, class Schedule, class EpilogueSchedule>
struct SparseGemm {
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassSparseTensorOp, Tile, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,
      Element, cutlass::layout::RowMajor, 8, Element, cutlass::layout::RowMajor, 8,
      EpilogueSchedule>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassSparseTensorOp,
      Element, cutlass::layout::RowMajor, 8, Element, LayoutB, 8, float, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      Schedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
  using StrideA = cutlass::gemm::TagToStrideA_t<cutlass::layout::RowMajor>;
  using SparseConfig = typename Mainloop::SparseConfig;
  using CompressorUtility =
      cutlass::transform::kernel::StructuredSparseCompressorUtility<ProblemShape, Element, cutlass::layout::RowMajor,
                                                                    SparseConfig>;
  using CompressorKernel =
      cutlass::transform::kernel::StructuredSparseCompressor<ProblemShape, Element, cutlass::layout::RowMajor,
                                                             SparseConfig, cutlass::arch::Sm90>;
  using Compressor = cutlass::transform::device::TransformUniversalAdapter<CompressorKernel>;

  static ProblemShape problem(int M, int N, int K) { return make_tuple(M, N, K, 1); }

  static int sizes(int M, int N, int K, int64_t* a_bytes, int64_t* e_bytes) {
    auto stride_a = cutlass::make_cute_packed_stride(StrideA{}, make_shape(M, K, 1));
    CompressorUtility util(problem(M, N, K), stride_a);
    // get_compressed_tensor_A_bytes() multiplies in int and overflows from 2^31 bits (M=K=16384)
    *a_bytes = int64_t(util.get_tensorA_m_physical()) * util.get_tensorA_k_physical() * int64_t(sizeof(Element));
    *e_bytes = static_cast<int64_t>(util.get_tensor_E_bytes());
    return 0;
  }

  static int compress(const void* a, void* a_compressed, void* e, void* workspace, int64_t workspace_bytes, int M,
                      int N, int K, cudaStream_t stream) {
    auto stride_a = cutlass::make_cute_packed_stride(StrideA{}, make_shape(M, K, 1));
    cutlass::KernelHardwareInfo hw;
    cudaGetDevice(&hw.device_id);
    hw.sm_count = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(hw.device_id);
    typename Compressor::Arguments args{problem(M, N, K),
                                        {static_cast<const Element*>(a), stride_a,
                                         static_cast<Element*>(a_compressed),
                                         static_cast<typename Mainloop::ElementE*>(e)},
                                        {hw}};
    Compressor op;
    if (static_cast<int64_t>(Compressor::get_workspace_size(args)) > workspace_bytes) return 2;
    if (op.can_implement(args) != cutlass::Status::kSuccess) return 3;
    if (op.initialize(args, workspace, stream) != cutlass::Status::kSuccess) return 4;
    return op.run(stream) == cutlass::Status::kSuccess ? 0 : 5;
  }

  static typename Gemm::Arguments arguments(const void* a_compressed, const void* e, const void* b, void* d, int M,
                                            int N, int K) {
    auto shape = problem(M, N, K);
    using StrideB = typename Gemm::GemmKernel::StrideB;
    using StrideD = typename Gemm::GemmKernel::StrideD;
    auto stride_b = cutlass::make_cute_packed_stride(StrideB{}, make_shape(N, K, 1));
    auto stride_d = cutlass::make_cute_packed_stride(StrideD{}, make_shape(M, N, 1));
    return typename Gemm::Arguments{
        cutlass::gemm::GemmUniversalMode::kGemm,
        shape,
        {static_cast<const Element*>(a_compressed), SparseConfig::fill_layoutA(shape), static_cast<const Element*>(b),
         stride_b, static_cast<const typename Mainloop::ElementE*>(e), SparseConfig::fill_layoutE(shape)},
        {{1.0f, 0.0f}, static_cast<const Element*>(d), stride_d, static_cast<Element*>(d), stride_d}};
  }

  static int64_t workspace(int M, int N, int K) {
    return static_cast<int64_t>(Gemm::get_workspace_size(arguments(nullptr, nullptr, nullptr, nullptr, M, N, K)));
  }

  static int run(const void* a_compressed, const void* e, const void* b, void* d, void* workspace, int M, int N,
                 int K, cudaStream_t stream) {
    auto args = arguments(a_compressed, e, b, d, M, N, K);
    Gemm gemm;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) return 3;
    if (gemm.initialize(args, workspace, stream) != cutlass::Status::kSuccess) return 4;
    return gemm.run(stream) == cutlass::Status::kSuccess ? 0 : 5;
  }
};

using Auto = cutlass::gemm::collective::KernelScheduleAuto;
using EpiAuto = cutlass::epilogue::collective::EpilogueScheduleAuto;
using Coop = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using EpiCoop = cutlass::epilogue::TmaWarpSpecializedCooperative;
using Ping = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
using EpiPing = cutlass::epilogue::TmaWarpSpecialized;
using Col = cutlass::layout::ColumnMajor;  // B K-major
using Row = cutlass::layout::RowMajor;     // B N-major

// configs: 0-3 B K-major, 4-5 B N-major
using C0 = SparseGemm<Col, Shape<_128, _128, _128>, Shape<_1, _2, _1>, Auto, EpiAuto>;
using C1 = SparseGemm<Col, Shape<_128, _256, _128>, Shape<_1, _2, _1>, Coop, EpiCoop>;
using C2 = SparseGemm<Col, Shape<_256, _128, _128>, Shape<_2, _1, _1>, Coop, EpiCoop>;
using C3 = SparseGemm<Col, Shape<_64, _256, _128>, Shape<_1, _2, _1>, Ping, EpiPing>;
using C4 = SparseGemm<Row, Shape<_128, _128, _128>, Shape<_1, _2, _1>, Auto, EpiAuto>;
using C5 = SparseGemm<Row, Shape<_128, _256, _128>, Shape<_1, _2, _1>, Coop, EpiCoop>;

#define DISPATCH(config, call)      \
  switch (config) {                 \
    case 0: return C0::call;        \
    case 1: return C1::call;        \
    case 2: return C2::call;        \
    case 3: return C3::call;        \
    case 4: return C4::call;        \
    case 5: return C5::call;        \
    default: return -1;             \
  }

}  // namespace

extern "C" {

int sm90_sparse_sizes(int config, int M, int N, int K, int64_t* a_bytes, int64_t* e_bytes) {
  DISPATCH(config, sizes(M, N, K, a_bytes, e_bytes))
}

int64_t sm90_sparse_workspace(int config, int M, int N, int K) { DISPATCH(config, workspace(M, N, K)) }

int sm90_sparse_compress(int config, const void* a, void* a_compressed, void* e, void* workspace,
                         int64_t workspace_bytes, int M, int N, int K, void* stream) {
  DISPATCH(config, compress(a, a_compressed, e, workspace, workspace_bytes, M, N, K, static_cast<cudaStream_t>(stream)))
}

int sm90_sparse_gemm(int config, const void* a_compressed, const void* e, const void* b, void* d, void* workspace,
                     int M, int N, int K, void* stream) {
  DISPATCH(config, run(a_compressed, e, b, d, workspace, M, N, K, static_cast<cudaStream_t>(stream)))
}
}
