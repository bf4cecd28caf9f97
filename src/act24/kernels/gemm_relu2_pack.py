"""GEMM1 of the sparse FFN forward with ReLU², the 2:4 selection and the packing as its epilogue
(sm90, bf16 or fp16; CUTLASS kernel in cuda/gemm_relu2_pack.cu, each variant (dtype, counting)
compiled at first use by cuda_build).

`gemm_relu2_pack(x, w1, count=...)` returns, byte for byte, what `sparsify_pack(y1, count=...)` returns
for y1 = x @ w1.T as this GEMM accumulates it, rounded to x's dtype: the packed operand and, when
counting (the training forward), the per-feature kept and non-zero counts. y1 itself is never written, which saves its round
trip through memory and the packer's launch. Only the accumulation order differs from cuBLAS's y1
(the same rounding of the same fp32 sums: checked exactly on integer inputs).
"""

from __future__ import annotations

import ctypes
import functools

import torch

from ..reference.checks import check_hopper, check_multiple, check_ndim, check_same_device
from ..reference.cusparselt_layout import buffer_shape
from . import cuda_build
from .launch import on_device_of
from .sparsify_pack import COL_BLOCK, ROW_BLOCK, PackedActivation

# the packed layout's 64-row metadata blocks; hidden as for the packer (whole 64-column strips); x's and
# w1's rows 16-byte aligned for the GEMM's TMA loads
ROW_MULTIPLE, HIDDEN_MULTIPLE, MODEL_MULTIPLE = ROW_BLOCK, 2 * COL_BLOCK, 8
STATUS = {2: "CUTLASS asked for a workspace", 3: "CUTLASS cannot implement this problem",
           4: "the kernel's initialisation failed", 5: "the launch failed"}


DTYPES = (torch.bfloat16, torch.float16)


@functools.lru_cache(maxsize=None)
def _library(dtype: torch.dtype, count: bool) -> ctypes.CDLL:
    """The variant for `dtype`, counting or not: each is built when first needed (~25 s)."""
    lib = cuda_build.load_library("gemm_relu2_pack", (f"ACT24_FP16={int(dtype == torch.float16)}",
                                                      f"ACT24_COUNT={int(count)}"))
    lib.act24_gemm_relu2_pack.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 3 + [ctypes.c_void_p]
    lib.act24_gemm_relu2_pack.restype = ctypes.c_int
    return lib


def check_inputs(x: torch.Tensor, w1: torch.Tensor) -> None:
    for name, t in (("x", x), ("w1", w1)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in DTYPES:
            raise TypeError(f"{name} must be bfloat16 or float16 (the fused GEMM's builds), got {t.dtype}")
        check_ndim(name, t, ndim=2)
    if x.dtype != w1.dtype:
        raise TypeError(f"x and w1 must share a dtype, got {x.dtype} and {w1.dtype}")
    if x.shape[0] == 0:
        raise ValueError("x must have at least one row (token), got shape (0, d)")
    if x.shape[1] != w1.shape[1]:
        raise ValueError(f"x [T, d] and w1 [hidden, d] must share d, got {tuple(x.shape)} and {tuple(w1.shape)}")
    check_multiple("x", x.shape[0], ROW_MULTIPLE, "the row (token) count")
    check_multiple("w1", w1.shape[0], HIDDEN_MULTIPLE, "the row (hidden) count")
    check_multiple("x", x.shape[1], MODEL_MULTIPLE, "the column (model) count")
    for name, t in (("x", x), ("w1", w1)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (row-major), got strides {t.stride()}")
        if not t.is_cuda:
            raise ValueError(f"{name} must be on a CUDA device, got {t.device}")
        if t.data_ptr() % 16:
            raise ValueError(f"{name} must start at a 16-byte aligned address (TMA loads), got {t.data_ptr():#x}")
    check_same_device("w1", w1, "x", x)
    check_hopper("x", x, "the fused GEMM runs sm90 tensor-core instructions")


def as_operand(t: torch.Tensor) -> torch.Tensor:
    """t, contiguous and 16-byte aligned (the GEMM's TMA loads): copied only when it is not."""
    t = t.contiguous()
    return t if t.data_ptr() % 16 == 0 else t.clone()


def gemm_relu2_pack(x: torch.Tensor, w1: torch.Tensor, *, count: bool = False) -> PackedActivation:
    """The packed 2:4 operand of relu(x @ w1.T)**2, in cuSPARSELt's layout ([T, hidden * 9/16], x's dtype), and
    with `count` the per-feature counts of kernels/sparsify_pack.py (int32 [hidden] each).

    Raises cuda_build.BuildUnavailable where the kernel cannot be built (no nvcc or CUTLASS)."""
    check_inputs(x, w1)
    (M, K), N = x.shape, w1.shape[0]
    packed = torch.empty(buffer_shape(M, N)[0], dtype=x.dtype, device=x.device)
    lib = _library(x.dtype, count)
    # two buffers, not views of one: the custom ops return both, and their outputs may not alias
    kept, nonzeros = ((torch.zeros(N, dtype=torch.int32, device=x.device) for _ in range(2)) if count
                      else (None, None))
    with on_device_of(x):  # the kernel launches on the current device's current stream
        stream = torch.cuda.current_stream().cuda_stream
        status = lib.act24_gemm_relu2_pack(x.data_ptr(), w1.data_ptr(), packed.data_ptr(),
                                           kept.data_ptr() if count else None,
                                           nonzeros.data_ptr() if count else None, M, N, K, stream)
    if status:
        raise RuntimeError(f"the fused GEMM failed: {STATUS.get(status, f'status {status}')} (x {tuple(x.shape)}, "
                           f"w1 {tuple(w1.shape)})")
    return PackedActivation(packed, kept, nonzeros)
