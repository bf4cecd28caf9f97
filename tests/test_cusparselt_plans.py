"""The planned cuSPARSELt path's descriptors and its fallback, without a GPU."""

import ctypes
import warnings

import pytest
import torch

from act24.gemm import cusparselt as C
from act24.gemm import cusparselt_plans as P


class RecordingLibrary:
    """Stands in for libcusparseLt: records every call, reports success and a 256-byte workspace."""

    def __init__(self, failing: str | None = None):
        self.calls, self.failing = [], failing

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, args))
            if name == "cusparseLtGetErrorString":
                return b"CUSPARSE_STATUS_NOT_SUPPORTED"
            if name == "cusparseLtMatmulGetWorkspace":
                args[-1]._obj.value = 256
            return 10 if name == self.failing else 0
        return call

    def args(self, name):
        return [a for n, a in self.calls if n == name]


@pytest.mark.parametrize("b_row_major", [True, False])
def test_plan_describes_the_problem_as_torch_does(monkeypatch, b_row_major):
    lib = RecordingLibrary()
    monkeypatch.setattr(P, "library", lambda: lib)
    monkeypatch.setattr(P, "_handle", lambda device: P._opaque())
    m, k, n = 128, 256, 64
    plan = P.Plan(P.PlanKey(m, k, n, torch.bfloat16, b_row_major, 3, 2, 1, torch.device("cuda", 0)))
    (sparse,) = lib.args("cusparseLtStructuredDescriptorInit")
    assert sparse[2:] == (m, k, k, 16, 14, P._ORDER_ROW, P._SPARSITY_50)  # row-major, ld = K
    b_desc, d_desc = lib.args("cusparseLtDenseDescriptorInit")
    assert b_desc[2:5] == ((k, n, n) if b_row_major else (n, k, k))
    assert d_desc[2:5] == (m, n, n) and d_desc[-1] == P._ORDER_ROW
    (matmul,) = lib.args("cusparseLtMatmulDescriptorInit")
    assert matmul[2:4] == (P._OP_N, P._OP_N if b_row_major else P._OP_T) and matmul[-1] == P._COMPUTE_32F
    attributes = {a[2]: a[3]._obj.value for a in lib.args("cusparseLtMatmulAlgSetAttribute")}
    assert attributes == {P._ALG_CONFIG_ID: 3, P._SPLIT_K: 2, P._SPLIT_K_MODE: 1}
    assert plan.workspace_bytes == 256


def test_opaque_buffers_are_aligned_and_failures_name_the_step(monkeypatch):
    assert all(ctypes.addressof(P._opaque()) % 16 == 0 for _ in range(20))
    lib = RecordingLibrary(failing="cusparseLtMatmulPlanInit")
    monkeypatch.setattr(P, "library", lambda: lib)
    monkeypatch.setattr(P, "_handle", lambda device: P._opaque())
    with pytest.raises(RuntimeError, match=r"cuSPARSELt plan failed: status 10 \(CUSPARSE_STATUS_NOT_SUPPORTED\)"):
        P.Plan(P.PlanKey(64, 128, 64, torch.float16, True, 0, 1, -1, torch.device("cuda", 0)))


def test_unchecked_or_failing_planned_calls_fall_back_to_torch_with_one_warning(monkeypatch):
    def unavailable():
        raise P.LibraryError("cuSPARSELt could not be called directly: OSError: not found")

    monkeypatch.setattr(P, "library", unavailable)
    monkeypatch.setattr(C, "_direct_checked", {})
    calls = []
    monkeypatch.setattr(torch, "_cslt_sparse_mm", lambda packed, b, **kw: calls.append(kw) or "torch's result")
    monkeypatch.setattr(torch, "_cslt_compress", lambda a: unavailable())
    packed, b = torch.empty(64, 72, dtype=torch.bfloat16), torch.empty(128, 32, dtype=torch.bfloat16)
    with pytest.warns(UserWarning, match="called through torch for torch.bfloat16 on cpu.*not found"):
        assert C._run(packed, b, C.Algorithm(1)) == "torch's result"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert C._run(packed, b, C.Algorithm(2)) == "torch's result"
    assert calls == [{"alg_id": 1}, {"alg_id": 2}]
