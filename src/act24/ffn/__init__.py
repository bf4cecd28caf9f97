"""The FFN layer: autograd paths, the nn.Module, backend dispatch."""

from .backend import Backend, backend_for
from .mlp import SquaredReLUMLP
from .module import SquaredReLUFFN, SquaredReLUFFNBase
from .warmup import DenseWarmup, ffn_modules, set_sparse

__all__ = ["Backend", "DenseWarmup", "SquaredReLUFFN", "SquaredReLUFFNBase", "SquaredReLUMLP", "backend_for", "ffn_modules",
           "set_sparse"]
