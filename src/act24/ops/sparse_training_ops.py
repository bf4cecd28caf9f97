"""The sparse FFN for training on sm90 as two custom ops with registered autograd.

Forward:  y1 = x @ W1.T (dense), a = relu(y1)**2 * m packed by the Triton packer (or both in one CUTLASS
          kernel, `fused_gemm1`), y = a @ W2.T on the 2:4 tensor cores. Saved: x and the packed a (not y1,
          not y2).
Backward: dy2 = dy @ W2 (dense); one Triton pass builds every 2:4 operand (or dy2's GEMM, `fused_dy2`, writes
          the token-wise dy1 as its epilogue and the Triton pass builds the feature-wise ones from it); then
          dx = dy1 @ W1, dW1 = dy1F @ x[perm], dW2.T = aF @ dy[perm] on the 2:4 tensor
          cores, and the densest features' rows of dW1 / dW2.T from small dense GEMMs.
Tokens are permuted only where they are grouped in fours: inside the backward.
"""

from __future__ import annotations

import torch

from .. import reference as ref
from ..gemm import cusparselt
from ..kernels import gemm_relu2_grad_pack as _fused_grad
from ..kernels import gemm_relu2_pack as _fused
from ..kernels.backward_pack import backward_pack, featurewise_pack
from ..kernels.sparsify_pack import sparsify_pack
from ..kernels.transpose import transpose
from .differentiable_once import refuse_double_backward


@torch.library.custom_op("act24::sparse_ffn_train_forward", mutates_args=())
def sparse_ffn_train_forward(
    x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, perm_seed: torch.Tensor, num_dense: int,
    fused_gemm1: bool = False, fused_dy2: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y [T, d], packed a [T, H*9/16], kept per feature [H], non-zeros per feature [H]); T % 64 == 0.

    perm_seed (a CPU int64 scalar, see recipe_ops) and num_dense are the backward's: the token grouping
    and the dense feature count. fused_gemm1: GEMM1 and the packing in one kernel (bf16 or fp16; the caller
    decides where it runs, ffn/backend.py: use_fused_gemm1); fused_dy2, the backward's: dy2's GEMM and the
    token-wise stage in one kernel (use_fused_dy2)."""
    if fused_gemm1:
        out = _fused.gemm_relu2_pack(_fused.as_operand(x), _fused.as_operand(w1), count=True)
    else:
        out = sparsify_pack(x @ w1.t())
    y = cusparselt.sparse_mm(out.packed, w2.t(), x.shape[0])
    return y, out.packed, out.kept_per_feature, out.nonzeros_per_feature


@sparse_ffn_train_forward.register_fake
def _(x, w1, w2, perm_seed, num_dense, fused_gemm1=False, fused_dy2=False):
    T, (H, d) = x.shape[0], w1.shape
    counts = x.new_empty(H, dtype=torch.int32)
    return x.new_empty(T, d), x.new_empty(T, H * 9 // 16), counts, torch.empty_like(counts)


def dense_feature_selection(kept: torch.Tensor, num_dense: int, tokens: int) -> torch.Tensor:
    """The backward's dense features: the densest by kept count, on 32-bit keys (a count is at most
    `tokens`), as a set: their rows land by index (index_copy_), so their order changes no gradient."""
    return ref.densest_features(kept, num_dense, max_count=tokens, in_index_order=False)


@torch.library.custom_op("act24::sparse_ffn_train_backward", mutates_args=())
def sparse_ffn_train_backward(
    dy: torch.Tensor, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, packed: torch.Tensor, kept: torch.Tensor,
    perm_seed: torch.Tensor, num_dense: int, fused_dy2: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dW1, dW2) of the recipe from the forward's saved x and packed a."""
    T, H = x.shape[0], w1.shape[0]
    # the largest GEMM first: the GPU runs it while the host works out the grouping and the dense features
    # (a step that starts after a synchronisation otherwise waits on that host work)
    if fused_dy2:
        dy1_tokenwise = _fused_grad.gemm_relu2_grad_pack(_fused.as_operand(dy), _fused.as_operand(w2), packed)
    else:
        dy2 = dy @ w2
    perm = ref.cached_token_permutation(T, int(perm_seed), x.device)
    dense = dense_feature_selection(kept, num_dense, T)
    if fused_dy2:
        ops = featurewise_pack(packed, dy1_tokenwise, perm, dense)
    else:
        ops = backward_pack(packed, dy2, perm, dense)
        del dy2
    dx = cusparselt.sparse_mm(ops.dy1_tokenwise, w1, T)
    x_perm, dy_perm = x[perm], dy[perm]
    dw1 = cusparselt.sparse_mm(ops.dy1_featurewise, x_perm, H)
    dw2_t = cusparselt.sparse_mm(ops.a_featurewise, dy_perm, H)
    if num_dense:
        dw1.index_copy_(0, dense, ops.dy1_dense @ x_perm)
        dw2_t.index_copy_(0, dense, ops.a_dense @ dy_perm)
    return dx, dw1, transpose(dw2_t)


@sparse_ffn_train_backward.register_fake
def _(dy, x, w1, w2, packed, kept, perm_seed, num_dense, fused_dy2=False):
    return x.new_empty(x.shape), w1.new_empty(w1.shape), w2.new_empty(w2.shape)  # contiguous, like the real op


def _setup_context(ctx, inputs, output):
    x, w1, w2, perm_seed, num_dense, _, fused_dy2 = inputs
    _, packed, kept, _ = output
    ctx.save_for_backward(x, w1, w2, packed, kept)
    ctx.perm_seed, ctx.num_dense, ctx.fused_dy2 = perm_seed, num_dense, fused_dy2
    # the packed activation and the counts never get gradients: without this autograd would zero-fill
    # one for each (302 MB and 90 us a step at T=16384, H=16384)
    ctx.set_materialize_grads(False)


def _backward(ctx, dy, packed_grad, _kept, _nonzeros):
    if packed_grad is not None:  # a loss computed from the bit-packed activation itself
        raise RuntimeError("the packed activation the sparse FFN returns beside y is bit-packed and has no "
                           "gradient: compute the loss from y")
    x, w1, w2, packed, kept = ctx.saved_tensors
    dx, dw1, dw2 = sparse_ffn_train_backward(dy.contiguous(), x, w1, w2, packed, kept, ctx.perm_seed, ctx.num_dense,
                                             ctx.fused_dy2)
    return dx, dw1, dw2, None, None, None, None


sparse_ffn_train_forward.register_autograd(_backward, setup_context=_setup_context)
refuse_double_backward(sparse_ffn_train_backward, "act24's sparse FFN")
