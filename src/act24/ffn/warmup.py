"""The dense warm-up: run act24's FFNs densely for the first steps, 2:4 sparse after.

Squared-ReLU activations start near 50% sparse and pass 85% within a few hundred steps; the
recipe trains densely until then (the paper: 1000 steps).
"""

from __future__ import annotations

from torch import nn

from ..reference.checks import check_int
from .module import SquaredReLUFFNBase


def ffn_modules(model: nn.Module) -> list[SquaredReLUFFNBase]:
    """Every act24 FFN in `model` (SquaredReLUFFN, SquaredReLUMLP), in module order."""
    return [m for m in model.modules() if isinstance(m, SquaredReLUFFNBase)]


def set_sparse(model: nn.Module, sparse: bool) -> int:
    """Switch every act24 FFN in `model` to sparse (or dense); returns how many there are."""
    ffns = ffn_modules(model)
    for m in ffns:
        m.sparse = sparse
    return len(ffns)


class DenseWarmup:
    """Call `update(step)` at every optimizer step (0-based): dense before `dense_steps`, sparse from it.

    Stateless in the step count, so a resumed run needs nothing but its step number.
    """

    def __init__(self, model: nn.Module, dense_steps: int = 1000):
        dense_steps = check_int("dense_steps", dense_steps, low=0)
        if not ffn_modules(model):
            raise ValueError("model has no act24 FFN (SquaredReLUFFN / SquaredReLUMLP): convert it first")
        self.model, self.dense_steps = model, dense_steps

    def update(self, step: int) -> bool:
        """Set the FFNs' mode for `step`; returns True when they are sparse."""
        sparse = check_int("step", step, low=0) >= self.dense_steps
        set_sparse(self.model, sparse)
        return sparse
