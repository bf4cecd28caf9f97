"""The sparse FFN on sm90: dense GEMM1, fused ReLU²/2:4/pack, cuSPARSELt GEMM2 (GEMM1 and the packing
can be one kernel); the training version also saves the packed activation for the fused sparse
backward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops import sparse_ffn_ops as ops
from ..ops.recipe_ops import seed_tensor
from ..kernels.sparsify_pack import COL_BLOCK, ROW_BLOCK
from .backend import use_fused_dy2, use_fused_gemm1

HIDDEN_MULTIPLE = 2 * COL_BLOCK  # the packer's column strip
MODEL_MULTIPLE = 16  # cuSPARSELt's dense-operand alignment


def supports(d: int, hidden: int) -> str | None:
    """None if the fast forward can run an FFN of these sizes, else the reason it cannot.

    The dtype is not checked here: `backend_for(device, dtype)` already gates it for every caller.
    """
    if hidden % HIDDEN_MULTIPLE:
        return f"hidden={hidden} is not a multiple of {HIDDEN_MULTIPLE}"
    if d % MODEL_MULTIPLE:
        return f"d={d} is not a multiple of {MODEL_MULTIPLE}"
    return None


def _pad_tokens(x: torch.Tensor) -> torch.Tensor:
    """x with zero tokens up to a multiple of the packer's row block: zero tokens give zero
    activations and zero gradients, so padding changes nothing."""
    pad = (-x.shape[0]) % ROW_BLOCK
    return F.pad(x, (0, 0, 0, pad)) if pad else x


def sparse_forward(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, b1: torch.Tensor | None = None,
                   *, count: bool = True):
    """y = (relu(x @ w1.T + b1)**2 * m) @ w2.T; returns (y, kept per feature, non-zeros per feature),
    the counts None unless `count`.

    Without bias, GEMM1 and the packing run as one kernel where it was measured faster
    (ffn/backend.py: use_fused_gemm1)."""
    T = x.shape[0]
    padded = _pad_tokens(x)
    if b1 is None and T > 0 and _fused_gemm1(x, w1, count):
        packed, kept, nonzeros = ops.gemm_relu2_pack(padded, w1, count)
    else:
        y1 = F.linear(padded, w1, b1)
        if b1 is not None and count:
            y1[T:] = 0  # the bias would make padded tokens count in the per-feature statistics
        packed, kept, nonzeros = ops.sparsify_pack(y1, count)
    y = ops.sparse_mm(packed, w2.t(), padded.shape[0])
    return (y[:T], kept, nonzeros) if count else (y[:T], None, None)


def _fused_gemm1(x: torch.Tensor, w1: torch.Tensor, count: bool) -> bool:
    return x.dtype == w1.dtype and use_fused_gemm1(x.device, x.dtype, x.shape[0], x.shape[1], w1.shape[0], count=count)


def sparse_train_forward(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, perm_seed: int | torch.Tensor,
                         num_dense: int):
    """Differentiable y, kept and non-zero counts per feature. With the forward's second GEMM, 4 of
    the 6 FFN GEMMs run on 2:4 operands (see ops/sparse_training_ops.py). GEMM1 and the backward's dy2 GEMM
    take their packers as epilogues where measured faster (ffn/backend.py: use_fused_gemm1, use_fused_dy2)."""
    from ..ops import sparse_training_ops

    fused = x.shape[0] > 0 and _fused_gemm1(x, w1, count=True)
    fused_dy2 = x.shape[0] > 0 and x.dtype == w2.dtype and use_fused_dy2(x.device, x.dtype, x.shape[1])
    y, _, kept, nonzeros = sparse_training_ops.sparse_ffn_train_forward(_pad_tokens(x), w1, w2,
                                                                         seed_tensor(perm_seed), num_dense, fused,
                                                                         fused_dy2)
    # sliced only when padded: a slice's backward zero-fills and copies the whole gradient ([T, d])
    return (y if y.shape[0] == x.shape[0] else y[:x.shape[0]]), kept, nonzeros
