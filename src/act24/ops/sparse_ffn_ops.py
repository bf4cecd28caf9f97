"""Custom ops of the sparse FFN forward: pack the activation (or compute GEMM1 and pack it in one
kernel), multiply by the packed operand.

Autograd: the packed operand is bit-packed values and metadata, so it takes no gradient
(sparsify_pack's and gemm_relu2_pack's backwards raise, naming the module to train with); sparse_mm's gradient
for its dense operand is the decoded operand's transpose times the output gradient.
"""

from __future__ import annotations

import torch

from ..gemm import cusparselt
from ..kernels import gemm_relu2_pack as _fused
from ..kernels import sparsify_pack as _pack
from ..reference.cusparselt_layout import unpack_dense


def _outputs(out: _pack.PackedActivation, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A packing op's outputs: the counts as empty tensors where the kernel did not count."""
    if out.kept_per_feature is None:
        return out.packed, like.new_empty(0, dtype=torch.int32), like.new_empty(0, dtype=torch.int32)
    return out.packed, out.kept_per_feature, out.nonzeros_per_feature


def _fake_outputs(like: torch.Tensor, rows: int, hidden: int, count: bool):
    counts = like.new_empty(hidden if count else 0, dtype=torch.int32)
    # the packed layout's size for 64-row multiples
    return like.new_empty(rows, hidden * 9 // 16), counts, torch.empty_like(counts)


@torch.library.custom_op("act24::sparsify_pack", mutates_args=())
def sparsify_pack(y1: torch.Tensor, count: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """relu(y1)**2 under the token-wise 2:4 mask, packed for cuSPARSELt: (packed, kept [K], nonzeros [K]);
    without `count` the two counts are empty tensors (the kernel skips the counting)."""
    return _outputs(_pack.sparsify_pack(y1, count=count), y1)


@sparsify_pack.register_fake
def _(y1, count=True):
    return _fake_outputs(y1, *y1.shape, count)


@torch.library.custom_op("act24::gemm_relu2_pack", mutates_args=())
def gemm_relu2_pack(x: torch.Tensor, w1: torch.Tensor, count: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """relu(x @ w1.T)**2 under the token-wise 2:4 mask, packed for cuSPARSELt, in one kernel (sm90, bf16 or fp16;
    x's rows a multiple of 64): (packed, kept [K], nonzeros [K]) as sparsify_pack returns them."""
    return _outputs(_fused.gemm_relu2_pack(_fused.as_operand(x), _fused.as_operand(w1), count=count), x)


@gemm_relu2_pack.register_fake
def _(x, w1, count=False):
    return _fake_outputs(x, x.shape[0], w1.shape[0], count)


@torch.library.custom_op("act24::sparse_mm", mutates_args=())
def sparse_mm(packed: torch.Tensor, b: torch.Tensor, rows: int) -> torch.Tensor:
    """A @ b for the packed 2:4 operand A [rows, b.shape[0]]."""
    return cusparselt.sparse_mm(packed, b, rows)


@sparse_mm.register_fake
def _(packed, b, rows):
    return b.new_empty(rows, b.shape[1])


def _packed_has_no_gradient(ctx, *grads):
    raise RuntimeError("act24's packing ops return a bit-packed operand, which has no gradient: train with "
                       "act24.SquaredReLUFFN (its sparse mode has a fused backward)")


for _op in (sparsify_pack, gemm_relu2_pack):
    _op.register_autograd(_packed_has_no_gradient, setup_context=lambda ctx, inputs, output: None)


def _sparse_mm_setup(ctx, inputs, output):
    packed, b, rows = inputs
    ctx.save_for_backward(packed)
    ctx.rows, ctx.k = rows, b.shape[0]


def _sparse_mm_backward(ctx, grad):
    (packed,) = ctx.saved_tensors
    a = unpack_dense(packed, ctx.rows, ctx.k)  # [rows, K]: not a fast path, a correct one
    return None, a.t() @ grad, None


sparse_mm.register_autograd(_sparse_mm_backward, setup_context=_sparse_mm_setup)
