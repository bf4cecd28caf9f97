"""Per-call choice between the sparse and the dense FFN on the fast backend.

The 2:4 GEMM beats cuBLAS only on large problems (small ones are launch- and
tile-bound: decode, short prefill). The rule is a threshold on T*d*hidden,
measured on the H200 (see docs/performance.md); `set_sparse_threshold` changes it.
"""

from __future__ import annotations

import contextlib

# T*d*hidden = 2**37: T=8192 at d=2048, hidden=8192, or T=2048 at d=4096, hidden=16384. On the H200,
# with cuSPARSELt plans built once per shape (gemm/cusparselt_plans.py), the forward grid read 1.13-1.16x
# vs compiled dense at T=2048, d=4096 and 0.97-1.10x at T=8192, d=2048 (2**37), 1.09-1.19x above, and
# 0.74-1.13x below, host-bound (docs/performance.md). Before the plans, torch rebuilt the plan at every call
# (~0.4 ms of host time) and the threshold was 2**38. At 2**37 the d=2048 shape loses 3% while d=4096 gains
# 16%: accepted, the rule is one number for every shape.
_threshold = 2**37


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
