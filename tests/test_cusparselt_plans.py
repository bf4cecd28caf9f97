"""The planned cuSPARSELt path's descriptors and its fallback, without a GPU."""

import contextlib
import ctypes
import types
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


def _fake(monkeypatch, lib):
    """lib stands in for cuSPARSELt, on a CPU-only machine."""
    monkeypatch.setattr(P, "library", lambda: lib)
    monkeypatch.setattr(P, "_lib", lib)
    monkeypatch.setattr(P, "_handle", lambda device: types.SimpleNamespace(struct=P._opaque()))
    monkeypatch.setattr(P.torch.cuda, "device", lambda device: contextlib.nullcontext())


@pytest.mark.parametrize("b_row_major", [True, False])
def test_plan_describes_the_problem_as_torch_does(monkeypatch, b_row_major):
    lib = RecordingLibrary()
    _fake(monkeypatch, lib)
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
    _fake(monkeypatch, RecordingLibrary(failing="cusparseLtMatmulPlanInit"))
    with pytest.raises(P.StatusError, match=r"cuSPARSELt plan of \[64, 128\] 2:4 @ \[128, 64\] row-major, torch.float16, alg 0, cuda:0 failed: status 10 \(CUSPARSE_STATUS_NOT_SUPPORTED\)"):
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


def test_plans_release_what_they_initialised(monkeypatch):
    lib = RecordingLibrary(failing="cusparseLtMatmulPlanInit")
    _fake(monkeypatch, lib)
    key = P.PlanKey(64, 128, 64, torch.bfloat16, True, 0, 1, -1, torch.device("cuda", 0))
    with pytest.raises(RuntimeError):
        P.Plan(key)  # failed at the plan: three descriptors and the selection to release, no plan
    released = lambda: [n for n, _ in lib.calls if n.endswith("Destroy")]
    assert released() == ["cusparseLtMatmulAlgSelectionDestroy"] + ["cusparseLtMatDescriptorDestroy"] * 3
    lib.failing, lib.calls = None, []
    plan = P.Plan(key)
    del plan
    assert released() == ["cusparseLtMatmulPlanDestroy", "cusparseLtMatmulAlgSelectionDestroy"] + \
        ["cusparseLtMatDescriptorDestroy"] * 3


def test_plan_cache_drops_the_least_recently_used(monkeypatch):
    monkeypatch.setattr(P, "Plan", lambda key: ("plan", key))
    monkeypatch.setattr(P, "MAX_PLANS", 2)
    monkeypatch.setattr(P, "_local", type(P._local)())
    first, _, again = P.plan_for(1), P.plan_for(2), P.plan_for(1)
    assert first is again
    P.plan_for(3)  # evicts 2, used least recently
    assert list(P._local.plans) == [1, 3]


def test_one_algorithm_search_per_power_of_two_of_rows(monkeypatch):
    assert [C.rows_bucket(m) for m in (64, 65, 128, 4032, 4096, 4160)] == [64, 128, 128, 4096, 4096, 8192]
    searched = []
    monkeypatch.setattr(C, "_cache", {})
    monkeypatch.setattr(C, "_search", lambda packed, b: searched.append(packed.shape[0]) or C.Algorithm(0))
    b = torch.empty(128, 64, dtype=torch.bfloat16)
    for m in (3008, 4096, 2112, 4160):
        C.algorithm_for(torch.empty(m, 72, dtype=torch.bfloat16), b, m)
    assert searched == [3008, 4160]


def test_a_bucket_algorithm_that_fails_at_another_row_count_is_searched_again(monkeypatch):
    searched = []
    monkeypatch.setattr(C, "_cache", {})
    monkeypatch.setattr(C, "_search", lambda packed, b: searched.append(packed.shape[0]) or
                        C.Algorithm(5 if packed.shape[0] == 4096 else 1))

    def run(packed, b, alg):
        if alg.alg_id == 5 and packed.shape[0] != 4096:
            raise RuntimeError("invalid value")
        return alg.alg_id

    monkeypatch.setattr(C, "_run", run)
    monkeypatch.setattr(C, "DIRECT_CALLS", False)
    b = torch.empty(128, 64, dtype=torch.bfloat16)
    mm = lambda m: C.sparse_mm(torch.empty(m, 72, dtype=torch.bfloat16), b, m)
    assert [mm(4096), mm(3008), mm(3008), mm(4096)] == [5, 1, 1, 5]
    assert searched == [4096, 3008]


def test_sparse_mm_refuses_operands_on_two_devices():
    with pytest.raises(ValueError, match="packed operand is on meta but the dense operand is on cpu"):
        C.sparse_mm(torch.empty(64, 72, dtype=torch.bfloat16, device="meta"), torch.randn(128, 32, dtype=torch.bfloat16), 64)


def test_a_repeated_call_goes_straight_to_its_plan(monkeypatch):
    class FakePlan:
        def __init__(self, key):
            self.key, self.runs = key, 0

        def run(self, packed, b):
            self.runs += 1
            return torch.tensor(self.key.alg_id)

    plans, torch_calls = {}, []
    monkeypatch.setattr(P, "_local", type(P._local)())
    monkeypatch.setattr(P, "plan_for", lambda key: plans.setdefault(key, FakePlan(key)))
    monkeypatch.setattr(C, "_direct_checked", {})
    monkeypatch.setattr(C, "planned_calls_ok", lambda dtype, device: C._direct_checked.get((dtype, device), True))
    monkeypatch.setattr(C, "_cache", {})
    monkeypatch.setattr(C, "_verified", set())
    monkeypatch.setattr(C, "_torch_call", lambda packed, b, alg: lambda: torch_calls.append(alg) or torch.tensor(alg.alg_id))
    searches = []
    monkeypatch.setattr(C, "_search", lambda packed, b: searches.append(1) or C.Algorithm(7))
    packed, b = torch.empty(64, 72, dtype=torch.bfloat16), torch.empty(128, 32, dtype=torch.bfloat16)
    assert [int(C.sparse_mm(packed, b, 64)) for _ in range(3)] == [7, 7, 7]
    (plan,) = plans.values()
    assert plan.runs == 3 and searches == [1]
    assert len(torch_calls) == 1  # the new plan's result was compared with torch's once
    lookup = C.algorithm_for
    monkeypatch.setattr(C, "algorithm_for", lambda *a: pytest.fail("a repeated call looked its algorithm up"))
    C.sparse_mm(torch.empty(64, 72, dtype=torch.bfloat16), torch.empty(128, 32, dtype=torch.bfloat16), 64)
    # a call that differs (here the dense operand's layout) takes the checked path
    with pytest.raises(pytest.fail.Exception):
        C.sparse_mm(packed, torch.empty(32, 128, dtype=torch.bfloat16).t(), 64)
    # planned calls turned off (a later check disagreed): saved calls expire and torch runs them
    monkeypatch.setattr(C, "algorithm_for", lookup)
    with pytest.warns(UserWarning, match="through torch"):
        C._use_torch(torch.bfloat16, torch.device("cpu"), "a test")
    monkeypatch.setattr(C, "_run", lambda packed, b, alg: torch.tensor(-1))
    assert int(C.sparse_mm(packed, b, 64)) == -1 and plan.runs == 4


def test_a_plan_that_disagrees_with_torch_turns_planned_calls_off(monkeypatch):
    monkeypatch.setattr(P, "_local", type(P._local)())
    monkeypatch.setattr(P, "plan_for", lambda key: None)
    monkeypatch.setattr(C, "_direct_checked", {})
    monkeypatch.setattr(C, "planned_calls_ok", lambda dtype, device: C._direct_checked.get((dtype, device), True))
    monkeypatch.setattr(C, "_cache", {(("bucket", 64), 128, 32, torch.bfloat16, "row", torch.device("cpu")): C.Algorithm(3)})
    monkeypatch.setattr(C, "_verified", set())
    monkeypatch.setattr(C, "_run", lambda packed, b, alg: torch.tensor(1.0))
    monkeypatch.setattr(C, "_torch_call", lambda packed, b, alg: lambda: torch.tensor(2.0))
    packed, b = torch.empty(64, 72, dtype=torch.bfloat16), torch.empty(128, 32, dtype=torch.bfloat16)
    with pytest.warns(UserWarning, match="planned calls differ from torch._cslt_sparse_mm"):
        assert float(C.sparse_mm(packed, b, 64)) == 2.0  # torch's result, and torch from now on
    assert C._direct_checked[(torch.bfloat16, torch.device("cpu"))] is False


def test_a_power_of_two_row_count_can_search_again_too(monkeypatch):
    """Its exact key and its bucket's are distinct: the bucket's algorithm, found at 192 rows, fails at 256."""
    searched = []
    monkeypatch.setattr(C, "_cache", {})
    monkeypatch.setattr(C, "DIRECT_CALLS", False)
    monkeypatch.setattr(C, "_search", lambda packed, b: searched.append(packed.shape[0]) or
                        C.Algorithm(5 if packed.shape[0] == 192 else 1))

    def run(packed, b, alg):
        if alg.alg_id == 5 and packed.shape[0] == 256:
            raise RuntimeError("invalid value")
        return alg.alg_id

    monkeypatch.setattr(C, "_run", run)
    b = torch.empty(128, 64, dtype=torch.bfloat16)
    mm = lambda m: C.sparse_mm(torch.empty(m, 72, dtype=torch.bfloat16), b, m)
    assert [mm(192), mm(256), mm(256)] == [5, 1, 1] and searched == [192, 256]
