"""act24: 2:4 activation sparsity for Squared-ReLU transformer FFNs."""

from . import reference
from .ffn import SquaredReLUFFN, SquaredReLUMLP
from .integrations import ConversionReport, convert

__version__ = "0.1.0"
__all__ = ["ConversionReport", "SquaredReLUFFN", "SquaredReLUMLP", "convert", "reference", "__version__"]
