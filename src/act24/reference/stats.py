"""Activation statistics of a Squared-ReLU FFN."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .selection import tokenwise_mask


@dataclass(frozen=True)
class FFNStats:
    tokens: int
    activation_sparsity: float  # fraction of zeros in relu(x @ w1.T)**2
    dropped_fraction: float  # fraction of its non-zeros the 2:4 mask drops
    feature_density: torch.Tensor  # [H] fraction of tokens where a feature is kept and non-zero

    @staticmethod
    def from_counts(tokens: int, kept_per_feature: torch.Tensor, nonzeros: torch.Tensor) -> "FFNStats":
        hidden = kept_per_feature.numel()
        nnz = int(nonzeros)
        kept = int(kept_per_feature.sum())
        return FFNStats(
            tokens=tokens,
            activation_sparsity=1.0 - nnz / max(tokens * hidden, 1),
            dropped_fraction=(nnz - kept) / nnz if nnz else 0.0,
            feature_density=kept_per_feature.detach().float().cpu() / max(tokens, 1),
        )


def activation_counts(y2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept non-zeros per feature under the token-wise mask, non-zeros before it) of y2 [T, H]."""
    kept = ((y2 != 0) & tokenwise_mask(y2)).sum(0)
    return kept, (y2 != 0).sum()
