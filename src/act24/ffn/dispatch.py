"""Per-call choice between the sparse and the dense FFN on the fast backend.

The 2:4 GEMM beats cuBLAS only on large problems (small ones are launch- and
tile-bound: decode, short prefill). The rule is a threshold on T*d*hidden,
measured on the H200 (see docs/performance.md); `set_sparse_threshold` changes it.
"""

from __future__ import annotations

import contextlib

# T*d*hidden = 2**38: T=16384 at d=2048, hidden=8192, or T=4096 at d=4096, hidden=16384. On the H200
# shapes above it ran faster sparse (1.07-1.21x vs compiled dense), shapes at it broke even or gained
# a little (0.98-1.08x), at 2**37 the result depended on the host (0.73-1.15x), below it sparse was
# slower: cuSPARSELt spends ~0.4 ms per call on the host building its plan, which small problems
# cannot hide (replayed from a CUDA graph they can: docs/performance.md).
_threshold = 2**38


def set_sparse_threshold(tokens_x_d_x_hidden: int) -> None:
    """Run sparse when tokens*d*hidden >= this. 0: always 2:4 — where the fast kernels cannot run
    (shapes they reject, fp32 on a supported GPU) the plain-PyTorch recipe runs instead of the dense FFN."""
    global _threshold
    if tokens_x_d_x_hidden < 0:
        raise ValueError(f"tokens_x_d_x_hidden must be >= 0, got {tokens_x_d_x_hidden}")
    _threshold = int(tokens_x_d_x_hidden)


def sparse_threshold() -> int:
    return _threshold


def use_sparse(tokens: int, d: int, hidden: int) -> bool:
    return tokens * d * hidden >= _threshold


@contextlib.contextmanager
def sparse_threshold_override(tokens_x_d_x_hidden: int):
    """Use another threshold inside the block (0: the 2:4 path wherever it can run, e.g. to
    evaluate a sparse-trained model exactly as it was trained)."""
    old = _threshold
    set_sparse_threshold(tokens_x_d_x_hidden)
    try:
        yield
    finally:
        set_sparse_threshold(old)
