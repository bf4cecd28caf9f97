"""Custom ops of the sparse FFN forward: pack the activation, multiply by the packed operand."""

from __future__ import annotations

import torch

from ..gemm import cusparselt
from ..kernels import sparsify_pack as _pack


@torch.library.custom_op("act24::sparsify_pack", mutates_args=())
def sparsify_pack(y1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """relu(y1)**2 under the token-wise 2:4 mask, packed for cuSPARSELt: (packed, kept [K], nonzeros [K])."""
    out = _pack.sparsify_pack(y1)
    return out.packed, out.kept_per_feature, out.nonzeros_per_feature


@sparsify_pack.register_fake
def _(y1):
    M, K = y1.shape
    counts = y1.new_empty(K, dtype=torch.int32)
    return y1.new_empty(M, K * 9 // 16), counts, torch.empty_like(counts)


@torch.library.custom_op("act24::sparse_mm", mutates_args=())
def sparse_mm(packed: torch.Tensor, b: torch.Tensor, rows: int) -> torch.Tensor:
    """A @ b for the packed 2:4 operand A [rows, b.shape[0]]."""
    return cusparselt.sparse_mm(packed, b, rows)


@sparse_mm.register_fake
def _(packed, b, rows):
    return b.new_empty(rows, b.shape[1])
