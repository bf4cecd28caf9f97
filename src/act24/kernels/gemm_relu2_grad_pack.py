"""dy2 = dy @ W2 of the sparse FFN's backward with its token-wise stage as the epilogue (sm90, bf16 or fp16;
CUTLASS kernel in cuda/gemm_relu2_grad_pack.cu, each dtype compiled at first use by cuda_build).

`gemm_relu2_grad_pack(dy, w2, packed_a)` returns, byte for byte, the `dy1_tokenwise` operand that
`backward_pack(packed_a, dy2, ...)` writes for dy2 = dy @ w2 as this GEMM accumulates it, rounded to dy's
dtype: dy1 = dy2 * 2*sqrt(a) in a's kept positions, a's metadata. dy2 itself is never written; the
feature-wise operands then come from `featurewise_pack`, which reads the token-wise ones.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from ..reference.checks import check_hopper, check_multiple, check_ndim, check_same_device
from . import cuda_build
from .gemm_relu2_pack import DTYPES, STATUS
from .launch import on_device_of


@functools.lru_cache(maxsize=None)
def _library(dtype: torch.dtype) -> ctypes.CDLL:
    lib = cuda_build.load_library("gemm_relu2_grad_pack", (f"ACT24_FP16={int(dtype == torch.float16)}",))
    lib.act24_gemm_relu2_grad_pack.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 3 + [ctypes.c_void_p]
    lib.act24_gemm_relu2_grad_pack.restype = ctypes.c_int
    return lib


def check_inputs(dy: torch.Tensor, w2: torch.Tensor, packed_a: torch.Tensor) -> None:
    for name, t in (("dy", dy), ("w2", w2), ("packed_a", packed_a)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in DTYPES:
            raise TypeError(f"{name} must be bfloat16 or float16 (the fused GEMM's builds), got {t.dtype}")
        check_ndim(name, t, ndim=2)
    if not dy.dtype == w2.dtype == packed_a.dtype:
        raise TypeError(f"dy, w2 and packed_a must share a dtype, got {dy.dtype}, {w2.dtype} and {packed_a.dtype}")
    (T, d), H = dy.shape, w2.shape[1]
    if w2.shape[0] != d:
        raise ValueError(f"dy [T, d] and w2 [d, hidden] must share d, got {tuple(dy.shape)} and {tuple(w2.shape)}")
    check_multiple("dy", T, 64, "the row (token) count")
    check_multiple("w2", H, 64, "the column (hidden) count")
    check_multiple("dy", d, 8, "the column (model) count")
    if packed_a.shape != (T, H * 9 // 16):
        raise ValueError(f"packed_a must be the packed [T, hidden] = [{T}, {H}] operand, shape ({T}, {H * 9 // 16}), "
                         f"got {tuple(packed_a.shape)}")
    operands = (("dy", dy), ("w2", w2), ("packed_a", packed_a))
    for name, t in operands:
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (row-major), got strides {t.stride()}")
    for name, t in operands:
        if not t.is_cuda:
            raise ValueError(f"{name} must be on a CUDA device, got {t.device}")
        if t.data_ptr() % 16:
            raise ValueError(f"{name} must start at a 16-byte aligned address (16-byte loads), got {t.data_ptr():#x}")
    check_same_device("w2", w2, "dy", dy)
    check_same_device("packed_a", packed_a, "dy", dy)
    check_hopper("dy", dy, "the fused GEMM runs sm90 tensor-core instructions")


def gemm_relu2_grad_pack(dy: torch.Tensor, w2: torch.Tensor, packed_a: torch.Tensor) -> torch.Tensor:
    """dy1 token-wise ([T, hidden * 9/16], packed like packed_a) for dy [T, d], w2 [d, hidden] and the
    forward's packed a = relu(y1)**2 * m.

    Raises cuda_build.BuildUnavailable where the kernel cannot be built (no nvcc or CUTLASS)."""
    check_inputs(dy, w2, packed_a)
    (M, K), N = dy.shape, w2.shape[1]
    packed_dy1 = torch.empty_like(packed_a)
    lib = _library(dy.dtype)
    with on_device_of(dy):  # the kernel launches on the current device's current stream
        stream = torch.cuda.current_stream().cuda_stream
        status = lib.act24_gemm_relu2_grad_pack(dy.data_ptr(), w2.data_ptr(), packed_a.data_ptr(),
                                                packed_dy1.data_ptr(), M, N, K, stream)
    if status:
        raise RuntimeError(f"the fused dy2 GEMM failed: {STATUS.get(status, f'status {status}')} (dy "
                           f"{tuple(dy.shape)}, w2 {tuple(w2.shape)})")
    return packed_dy1
