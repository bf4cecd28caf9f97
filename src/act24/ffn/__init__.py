"""The FFN layer: autograd paths, the nn.Module, backend dispatch."""

from .backend import Backend, backend_for
from .module import SquaredReLUFFN

__all__ = ["Backend", "SquaredReLUFFN", "backend_for"]
