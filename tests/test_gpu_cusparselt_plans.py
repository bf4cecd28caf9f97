"""Planned cuSPARSELt calls against torch._cslt_sparse_mm, bit for bit, on the GPU."""

import pytest
import torch

from act24.gemm import cusparselt as C
from act24.gemm import cusparselt_plans as P

pytestmark = pytest.mark.gpu


def _operands(m, k, n, dtype, b_row_major, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    a = torch.randn(m, k, dtype=dtype, device="cuda", generator=g)
    keep = torch.rand(m, k // 4, 4, device="cuda", generator=g).argsort(-1) < 2  # a random 2 of every 4
    packed = torch._cslt_compress(a * keep.reshape(m, k))
    b = torch.randn(k, n, dtype=dtype, device="cuda", generator=g)
    return packed, b if b_row_major else b.t().contiguous().t()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_planned_calls_pass_their_self_check(dtype):
    assert C.planned_calls_ok(dtype, torch.device("cuda", torch.cuda.current_device()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("b_row_major", [True, False])
@pytest.mark.parametrize("m,k,n", [(64, 128, 64), (1024, 4096, 768), (4096, 1024, 2048), (192, 8192, 320)])
def test_planned_matmul_equals_torch_for_every_algorithm(m, k, n, dtype, b_row_major):
    packed, b = _operands(m, k, n, dtype, b_row_major, seed=m + k + n)
    split_k = [C.Algorithm(0, s, mode) for s in (2, 4) for mode in (1, 2)]
    compared = 0
    for alg in [C.Algorithm(a) for a in range(3)] + split_k:
        try:
            theirs = C._torch_call(packed, b, alg)()
        except RuntimeError:  # an algorithm this shape does not have
            continue
        assert torch.equal(P.Plan(C._plan_key(packed, b, alg)).run(packed, b), theirs), alg
        compared += 1
    assert compared >= 1


def test_sparse_mm_reuses_one_plan_per_problem():
    packed, b = _operands(1024, 2048, 512, torch.bfloat16, True, seed=1)
    first = C.sparse_mm(packed, b, 1024)
    plans = dict(P._local.plans)
    again = C.sparse_mm(packed, b, 1024)
    assert torch.equal(first, again) and P._local.plans == plans


def test_planned_matmul_on_a_side_stream_and_in_a_cuda_graph():
    packed, b = _operands(512, 1024, 256, torch.bfloat16, False, seed=2)
    expected = torch._cslt_sparse_mm(packed, b)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = C.sparse_mm(packed, b, 512)
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(got, expected)

    static_packed, static_b = packed.clone(), b.t().contiguous().t()
    P._local.plans.clear()  # the plan is built inside the capture
    P._local.calls.clear()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = C.sparse_mm(static_packed, static_b, 512)
    new_packed, new_b = _operands(512, 1024, 256, torch.bfloat16, False, seed=3)
    static_packed.copy_(new_packed)
    static_b.copy_(new_b)
    graph.replay()
    assert torch.equal(out, torch._cslt_sparse_mm(new_packed, new_b))
