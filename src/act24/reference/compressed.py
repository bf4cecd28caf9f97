"""The compressed form of a 2:4 operand: kept values in order plus their 2-bit positions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import check_float, check_multiple, check_ndim
from .selection import GROUP


@dataclass(frozen=True)
class CompressedOperand:
    """A [rows, cols] matrix that is 2:4 sparse along cols.

    values:  [rows, cols/2] the two kept values of every group, lower position first.
    indices: [rows, cols/2] uint8 position (0..3) of each kept value inside its group.
    """

    values: torch.Tensor
    indices: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        rows, half = self.values.shape
        return rows, 2 * half


def compress(dense: torch.Tensor, mask: torch.Tensor) -> CompressedOperand:
    """Compress `dense` [M, K] keeping exactly the positions of `mask` (2 per group of 4)."""
    check_float("dense", dense)
    check_ndim("dense", dense, ndim=2)
    check_multiple("dense", dense.shape[1], GROUP, "the column count")
    if mask.shape != dense.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {tuple(dense.shape)}, got {mask.dtype} {tuple(mask.shape)}")
    M, K = dense.shape
    groups = mask.reshape(M, K // GROUP, GROUP)
    if not bool((groups.sum(-1) == 2).all()):
        raise ValueError("mask must select exactly 2 positions in every group of 4 columns")
    pos = torch.arange(GROUP, device=dense.device).expand_as(groups)
    # positions of kept entries in ascending order: sort kept-first, stable on position
    order = torch.sort((~groups).to(torch.uint8), dim=-1, stable=True).indices[..., :2]
    indices = torch.gather(pos, -1, order).reshape(M, K // 2)
    values = torch.gather(dense.reshape(M, K // GROUP, GROUP), -1, order).reshape(M, K // 2)
    return CompressedOperand(values=values, indices=indices.to(torch.uint8))


def decompress(op: CompressedOperand) -> torch.Tensor:
    """The dense [M, K] matrix with zeros at the positions not kept."""
    M, K = op.shape
    out = torch.zeros(M, K // GROUP, GROUP, dtype=op.values.dtype, device=op.values.device)
    out.scatter_(-1, op.indices.reshape(M, K // GROUP, 2).long(), op.values.reshape(M, K // GROUP, 2))
    return out.reshape(M, K)


def mask_of(op: CompressedOperand) -> torch.Tensor:
    """The bool mask [M, K] of kept positions."""
    M, K = op.shape
    out = torch.zeros(M, K // GROUP, GROUP, dtype=torch.bool, device=op.values.device)
    out.scatter_(-1, op.indices.reshape(M, K // GROUP, 2).long(), True)
    return out.reshape(M, K)
