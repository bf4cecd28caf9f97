"""act24: 2:4 activation sparsity for Squared-ReLU transformer FFNs."""

from . import reference
from .ffn import SquaredReLUFFN

__version__ = "0.1.0"
__all__ = ["SquaredReLUFFN", "reference", "__version__"]
