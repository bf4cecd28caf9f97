"""The sparse FFN recipe as custom ops with registered autograd, so torch.compile sees one opaque
node per direction (no graph breaks on its data-dependent selection, its cached permutation or
its checks) and AOTAutograd can trace the backward.

The token grouping's seed comes in as a CPU int64 scalar tensor, not an int: an int would be baked
into the graph, and blocks compiled from one forward would recompile for every layer's seed."""

from __future__ import annotations

import torch

from .. import reference as ref
from .differentiable_once import refuse_double_backward


@torch.library.custom_op("act24::sparse_ffn_recipe", mutates_args=())
def sparse_ffn_recipe(
    x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, b1: torch.Tensor | None, perm_seed: torch.Tensor,
    num_dense: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y [T, d], kept per feature [H], non-zeros before the mask [], masked activation [T, H])."""
    return tuple(t.contiguous() for t in ref.recipe_forward(x, w1, w2, b1))


@sparse_ffn_recipe.register_fake
def _(x, w1, w2, b1, perm_seed, num_dense):
    T, (H, d) = x.shape[0], w1.shape
    return x.new_empty(T, d), x.new_empty(H, dtype=torch.int64), x.new_empty((), dtype=torch.int64), x.new_empty(T, H)


@torch.library.custom_op("act24::sparse_ffn_recipe_backward", mutates_args=())
def sparse_ffn_recipe_backward(
    dy: torch.Tensor, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, a: torch.Tensor, kept: torch.Tensor,
    perm_seed: torch.Tensor, num_dense: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dw1, dw2, db1) of the recipe; tokens are grouped by the seeded permutation."""
    perm = ref.cached_token_permutation(x.shape[0], int(perm_seed), x.device)
    return tuple(t.contiguous() for t in ref.recipe_backward(dy, x, w1, w2, a, kept, perm, num_dense))


@sparse_ffn_recipe_backward.register_fake
def _(dy, x, w1, w2, a, kept, perm_seed, num_dense):
    # contiguous, as the real op returns (empty_like would copy a transposed input's strides)
    return x.new_empty(x.shape), w1.new_empty(w1.shape), w2.new_empty(w2.shape), w1.new_empty(w1.shape[0])


def _setup_context(ctx, inputs, output):
    x, w1, w2, b1, perm_seed, num_dense = inputs
    _, kept, _, a = output
    ctx.save_for_backward(x, w1, w2, a, kept)
    ctx.perm_seed, ctx.num_dense, ctx.has_b1 = perm_seed, num_dense, b1 is not None


def _backward(ctx, dy, _kept, _nnz, _a):
    x, w1, w2, a, kept = ctx.saved_tensors
    dx, dw1, dw2, db1 = sparse_ffn_recipe_backward(dy.contiguous(), x, w1, w2, a, kept, ctx.perm_seed, ctx.num_dense)
    return dx, dw1, dw2, (db1 if ctx.has_b1 else None), None, None


sparse_ffn_recipe.register_autograd(_backward, setup_context=_setup_context)
refuse_double_backward(sparse_ffn_recipe_backward, "act24's sparse FFN")


def seed_tensor(perm_seed: int | torch.Tensor) -> torch.Tensor:
    """The seed as the ops take it: a CPU int64 scalar tensor."""
    if isinstance(perm_seed, torch.Tensor):
        return perm_seed
    return torch.tensor(int(perm_seed), dtype=torch.int64, device="cpu")


def sparse_ffn(x, w1, w2, b1, perm_seed: int | torch.Tensor, num_dense: int):
    """The recipe on [T, d] tokens, differentiable: (y, kept per feature, non-zeros before the mask)."""
    y, kept, nnz, _ = sparse_ffn_recipe(x, w1, w2, b1, seed_tensor(perm_seed), num_dense)
    return y, kept, nnz
