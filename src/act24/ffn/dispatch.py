"""Per-call choice between the sparse and the dense FFN on the fast backend.

The 2:4 GEMM beats cuBLAS only on large problems (small ones are launch- and
tile-bound: decode, short prefill). The rule is a threshold on T*d*hidden,
measured on the H200 (see docs/benchmarks.md); `set_sparse_threshold` changes it.
"""

from __future__ import annotations

_threshold = 2**38  # T*d*hidden; e.g. T=16384 at d=2048, hidden=8192


def set_sparse_threshold(tokens_x_d_x_hidden: int) -> None:
    """Run sparse when tokens*d*hidden >= this (0: always sparse)."""
    global _threshold
    if tokens_x_d_x_hidden < 0:
        raise ValueError(f"tokens_x_d_x_hidden must be >= 0, got {tokens_x_d_x_hidden}")
    _threshold = int(tokens_x_d_x_hidden)


def sparse_threshold() -> int:
    return _threshold


def use_sparse(tokens: int, d: int, hidden: int) -> bool:
    return tokens * d * hidden >= _threshold
