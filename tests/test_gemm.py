import pytest
import torch

from act24 import functional
from act24.gemm import cusparselt as C


def test_choose_fastest_skips_failing_algorithms():
    times = {0: 3.0, 1: RuntimeError("invalid value"), 2: 1.0, 3: 2.0}

    def time_candidate(alg):
        t = times[alg.alg_id]
        if isinstance(t, Exception):
            raise t
        return t

    assert C.choose_fastest([C.Algorithm(a) for a in range(4)], time_candidate) == C.Algorithm(2)
    with pytest.raises(C.NoAlgorithmError, match="invalid value"):
        C.choose_fastest([C.Algorithm(1)], time_candidate)


def test_sparse_mm_validates_before_calling_cusparselt():
    b = torch.randn(128, 32, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="multiples of 64"):
        C.sparse_mm(torch.empty(48, 72, dtype=torch.bfloat16), b, 48)
    with pytest.raises(ValueError, match=r"must have shape \(64, 72\)"):
        C.sparse_mm(torch.empty(64, 70, dtype=torch.bfloat16), b, 64)
    with pytest.raises(TypeError, match="float16"):
        C.sparse_mm(torch.empty(64, 72, dtype=torch.float16), b, 64)
    with pytest.raises(ValueError, match="transpose of a contiguous"):
        C.sparse_mm(torch.empty(64, 72, dtype=torch.bfloat16), torch.randn(128, 64, dtype=torch.bfloat16)[:, ::2], 64)


def test_functional_says_why_the_fast_path_is_unavailable():
    x = torch.randn(64, 64, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="not available here: cpu device"):
        functional.sparse_ffn_forward(x, torch.randn(64, 64, dtype=torch.bfloat16), torch.randn(64, 64, dtype=torch.bfloat16))
