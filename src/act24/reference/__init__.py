"""Pure-PyTorch definition of every act24 op (CPU or CUDA, any float dtype).

It is the specification the kernels are tested against and the fallback on
machines without a suitable GPU.
"""

from .compressed import CompressedOperand, compress, decompress, mask_of
from .ffn import (
    SparseSquaredReLUFFN,
    check_ffn_args,
    check_ffn_biases,
    dense_ffn,
    featurewise_operand,
    recipe_backward,
    recipe_forward,
    sparse_ffn,
    squared_relu,
)
from .selection import (
    cached_token_permutation,
    check_permutation,
    dense_feature_count,
    densest_features,
    featurewise_mask,
    masked_activation,
    padded_token_count,
    token_permutation,
    tokenwise_mask,
    top2_of_4,
)
from .stats import FFNStats, activation_counts

__all__ = [
    "CompressedOperand",
    "FFNStats",
    "SparseSquaredReLUFFN",
    "activation_counts",
    "cached_token_permutation",
    "check_ffn_args",
    "check_ffn_biases",
    "compress",
    "decompress",
    "dense_feature_count",
    "dense_ffn",
    "densest_features",
    "featurewise_mask",
    "featurewise_operand",
    "padded_token_count",
    "recipe_backward",
    "recipe_forward",
    "check_permutation",
    "mask_of",
    "masked_activation",
    "sparse_ffn",
    "squared_relu",
    "token_permutation",
    "tokenwise_mask",
    "top2_of_4",
]
