"""The FFN layer: autograd paths, the nn.Module, backend dispatch."""

from .backend import Backend, backend_for
from .mlp import SquaredReLUMLP
from .module import SquaredReLUFFN, SquaredReLUFFNBase

__all__ = ["Backend", "SquaredReLUFFN", "SquaredReLUFFNBase", "SquaredReLUMLP", "backend_for"]
