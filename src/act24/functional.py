"""Typed public functions over the custom ops (the building blocks of SquaredReLUFFN)."""

from __future__ import annotations

import torch

from . import reference as ref
from .ffn.backend import backend_for


def _require_fast(x: torch.Tensor) -> None:
    backend = backend_for(x.device, x.dtype)
    if backend.name != "cusparselt":
        raise RuntimeError(f"the sparse GPU path is not available here: {backend.reason}")


def sparsify_pack(y1: torch.Tensor, *, count: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack relu(y1)**2 under the token-wise 2:4 mask for cuSPARSELt.

    y1: [T, H] bfloat16/float16 on an sm90 GPU, T and H multiples of 64.
    Returns (packed [T, H*9/16], kept non-zeros per feature [H], non-zeros per feature [H]);
    with count=False the packer skips the counting and both counts are empty.
    """
    _require_fast(y1)
    from .ops import sparse_ffn_ops as ops

    return ops.sparsify_pack(y1, count)


def sparse_ffn_forward(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """Inference forward of the 2:4 FFN on the sparse tensor cores: (relu(x @ w1.T)**2 * m) @ w2.T.

    x: [T, d]; w1: [hidden, d]; w2: [d, hidden]; bfloat16/float16, hidden a multiple of 64, d of 16.
    No autograd: use SquaredReLUFFN for training.
    """
    ref.check_ffn_args(x, w1, w2)
    _require_fast(x)
    from .ffn import fast_forward

    problem = fast_forward.supports(w1.shape[1], w1.shape[0])
    if problem is not None:
        raise ValueError(problem)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, w1, w2)):
        raise RuntimeError("sparse_ffn_forward has no backward: call it under torch.no_grad()/inference_mode(), "
                           "or train with SquaredReLUFFN")
    return fast_forward.sparse_forward(x, w1, w2, count=False)[0]


def sparse_mm(packed: torch.Tensor, b: torch.Tensor, rows: int) -> torch.Tensor:
    """A @ b on the 2:4 tensor cores, A [rows, b.shape[0]] given packed (by `sparsify_pack`)."""
    _require_fast(b)
    from .ops import sparse_ffn_ops as ops

    return ops.sparse_mm(packed, b, rows)
