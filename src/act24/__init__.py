"""act24: 2:4 activation sparsity for Squared-ReLU transformer FFNs."""

from . import functional, reference
from .ffn import DenseWarmup, SquaredReLUFFN, SquaredReLUMLP, set_sparse
from .integrations import ConversionReport, convert

__version__ = "0.1.0"
__all__ = [
    "ConversionReport",
    "DenseWarmup",
    "SquaredReLUFFN",
    "SquaredReLUMLP",
    "convert",
    "functional",
    "reference",
    "set_sparse",
    "__version__",
]
