"""The Squared-ReLU FFN of the recipe in plain PyTorch: the specification of every fast path.

Dense:  y = relu(x @ w1.T)**2 @ w2.T
Sparse: the same with the token-wise 2:4 mask m on relu(x @ w1.T)**2 before the second
GEMM, and the backward of the recipe: dx exact through m, dW1/dW2 through feature-wise
2:4 operands (tokens grouped in fours by `perm`, the densest features left dense).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import check_float, check_ndim, check_same_device, check_same_dtype
from .selection import (GROUP, check_permutation, densest_features, masked_activation, padded_token_count,
                        top2_along_tokens)


def check_ffn_args(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> None:
    check_float("x", x)
    check_ndim("x", x, ndim=2)
    check_float("w1", w1)
    check_ndim("w1", w1, ndim=2)
    check_float("w2", w2)
    check_ndim("w2", w2, ndim=2)
    check_same_device("w1", w1, "x", x)
    check_same_device("w2", w2, "x", x)
    check_same_dtype("w1", w1, "x", x)
    check_same_dtype("w2", w2, "x", x)
    hidden, d = w1.shape
    if x.shape[1] != d:
        raise ValueError(f"x has {x.shape[1]} features but w1 expects {d} (w1 is [hidden, d] = {tuple(w1.shape)})")
    if w2.shape != (d, hidden):
        raise ValueError(f"w2 must be [d, hidden] = ({d}, {hidden}), got {tuple(w2.shape)}")
    if hidden % GROUP:
        raise ValueError(f"w1: hidden size must be a multiple of {GROUP} for 2:4 groups, got {hidden}")


def check_ffn_biases(b1: torch.Tensor | None, b2: torch.Tensor | None, w1: torch.Tensor) -> None:
    """Optional biases of the two linear layers: b1 [hidden], b2 [d], like w1's dtype and device."""
    hidden, d = w1.shape
    for name, b, size in (("b1", b1, hidden), ("b2", b2, d)):
        if b is None:
            continue
        check_float(name, b)
        check_same_device(name, b, "w1", w1)
        check_same_dtype(name, b, "w1", w1)
        if b.shape != (size,):
            raise ValueError(f"{name} must be 1-D of size {size}, got shape {tuple(b.shape)}")


def squared_relu(y1: torch.Tensor) -> torch.Tensor:
    r = F.relu(y1)
    return r * r


def dense_ffn(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, b1=None, b2=None) -> torch.Tensor:
    return F.linear(squared_relu(F.linear(x, w1, b1)), w2, b2)


def featurewise_operand(masked: torch.Tensor, perm: torch.Tensor, dense_features: torch.Tensor) -> torch.Tensor:
    """`masked` [T, H] with 2:4 along tokens applied except on `dense_features`.

    T may be any size: the token axis is padded with zero tokens up to len(perm),
    which must be T rounded up to a multiple of 4 (not checked: the recipe's callers build it).
    """
    T = masked.shape[0]
    pad = padded_token_count(T) - T
    keep = top2_along_tokens(F.pad(masked, (0, 0, 0, pad)) if pad else masked, perm)[:T]
    keep[:, dense_features] = True
    return torch.where(keep, masked, torch.zeros((), dtype=masked.dtype, device=masked.device))


def recipe_forward(x, w1, w2, b1=None):
    """Forward of the recipe: (y [T, d], kept per feature [H], non-zeros before the mask [],
    masked activation a = relu(x @ w1.T + b1)**2 * m [T, H], all the backward needs besides x)."""
    y2 = squared_relu(F.linear(x, w1, b1))
    a = masked_activation(y2)
    return a @ w2.t(), (a != 0).sum(0), (y2 != 0).sum(), a


def recipe_backward(dy3, x, w1, w2, a, kept, perm, num_dense: int):
    """Backward of the recipe: (dx, dw1, dw2, db1) from the output gradient and what the forward saved.

    relu(y1) at kept positions is sqrt(a): nothing but `a` is needed from the forward (in fp16,
    relu(y1) < 2.4e-4 squares to 0, in the forward too, so its gradient is 0 in both). A kept zero
    has gradient 0 (relu' = 0 there), so the mask is a != 0; where() rather than a product, so
    Inf/NaN in dy2 cannot leak into positions that carry no activation.
    """
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    dy2 = dy3 @ w2
    dy1 = torch.where(a != 0, dy2 * 2 * a.sqrt(), zero)
    dx = dy1 @ w1
    dense = densest_features(kept, num_dense)
    dw1 = featurewise_operand(dy1, perm, dense).t() @ x
    dw2 = dy3.t() @ featurewise_operand(a, perm, dense)
    return dx, dw1, dw2, dy1.sum(0)  # the bias gradient is exact: the bias sees every token


class SparseSquaredReLUFFN(torch.autograd.Function):
    """Outputs (y, kept_per_feature [H] int64, nonzeros_before_mask [] int64)."""

    @staticmethod
    def forward(ctx, x, w1, w2, b1, perm, num_dense: int):
        y, kept, nnz, a = recipe_forward(x, w1, w2, b1)
        ctx.save_for_backward(x, w1, w2, a, perm, kept)
        ctx.num_dense = num_dense
        ctx.has_b1 = b1 is not None
        ctx.mark_non_differentiable(kept, nnz)
        return y, kept, nnz

    @staticmethod
    @torch.autograd.function.once_differentiable  # the masks are constants: no higher-order gradients
    def backward(ctx, dy3, _kept_grad, _nnz_grad):
        x, w1, w2, a, perm, kept = ctx.saved_tensors
        dx, dw1, dw2, db1 = recipe_backward(dy3, x, w1, w2, a, kept, perm, ctx.num_dense)
        return dx, dw1, dw2, (db1 if ctx.has_b1 else None), None, None


def sparse_ffn(x, w1, w2, perm: torch.Tensor, num_dense: int, b1=None, b2=None):
    """Sparse-mode FFN on [T, d] tokens: returns (y, kept_per_feature, nonzeros_before_mask).

    b1, b2: optional biases of the two linear layers (b1 is added before ReLU²).
    """
    check_ffn_args(x, w1, w2)
    check_ffn_biases(b1, b2, w1)
    # T rounded up to a multiple of 4: the feature-wise path pads the token axis with zero tokens
    check_permutation(perm, padded_token_count(x.shape[0]))
    if not 0 <= num_dense <= w1.shape[0]:
        raise ValueError(f"num_dense must be in [0, hidden={w1.shape[0]}], got {num_dense}")
    y, kept, nnz = SparseSquaredReLUFFN.apply(x, w1, w2, b1, perm.to(x.device), num_dense)
    return (y if b2 is None else y + b2), kept, nnz
