"""Kernels on a GPU other than the current one (a model spread over devices in one process, e.g.
`device_map="auto"`): every launch must go to the tensors' device and stream, not to cuda:0."""

import pytest
import torch

import act24
from act24 import reference as ref
from act24.gemm import cusparselt
from act24.kernels import cuda_build
from act24.kernels import gemm_relu2_pack as fused
from act24.kernels.sparsify_pack import sparsify_pack
from conftest import rel_err

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")]

BF16 = torch.bfloat16
OTHER = torch.device("cuda", 1)


@pytest.fixture(autouse=True)
def current_device_is_the_first():
    torch.cuda.set_device(0)
    yield
    assert torch.cuda.current_device() == 0  # no call left the current device changed


def test_packer_and_2_4_gemm_on_the_other_device():
    g = torch.Generator(device=OTHER).manual_seed(0)
    y1 = torch.randn(1024, 2048, device=OTHER, generator=g, dtype=BF16)
    w2 = torch.randn(512, 2048, device=OTHER, generator=g, dtype=BF16)
    out = sparsify_pack(y1)
    assert out.packed.device == OTHER
    got = cusparselt.sparse_mm(out.packed, w2.t(), y1.shape[0])
    assert got.device == OTHER
    expected = ref.masked_activation(y1.float()) @ w2.float().t()
    torch.cuda.synchronize(OTHER)
    assert rel_err(got, expected) < 1e-2


def test_fused_gemm1_on_the_other_device_equals_the_packer():
    g = torch.Generator(device=OTHER).manual_seed(1)
    x = torch.randint(-3, 4, (1024, 512), device=OTHER, generator=g).to(BF16)  # exact sums: equal bytes
    w1 = torch.randint(-2, 3, (4096, 512), device=OTHER, generator=g).to(BF16)
    try:
        got = fused.gemm_relu2_pack(x, w1, count=True)
    except cuda_build.BuildUnavailable as e:
        pytest.skip(str(e))
    expected = sparsify_pack((x.float() @ w1.float().t()).to(BF16), count=True)
    assert torch.equal(got.packed.view(torch.int16), expected.packed.view(torch.int16))
    assert torch.equal(got.kept_per_feature, expected.kept_per_feature)


@pytest.mark.parametrize("training", [False, True])
def test_module_on_the_other_device_matches_the_first(training):
    torch.manual_seed(2)
    T, d, H = 16384, 2048, 8192  # above the inference dispatch threshold: 2:4 in both modes
    ffn0 = act24.SquaredReLUFFN(d, H, sparse=True, perm_seed=3, device="cuda:0", dtype=BF16)
    ffn1 = act24.SquaredReLUFFN(d, H, sparse=True, perm_seed=3, device=OTHER, dtype=BF16)
    ffn1.load_state_dict(ffn0.state_dict())
    x0 = (torch.randn(T, d, device="cuda:0") - 0.3).to(BF16)
    dy0 = torch.randn(T, d, device="cuda:0", dtype=BF16)
    results = []
    for ffn, x, dy in ((ffn0, x0, dy0), (ffn1, x0.to(OTHER), dy0.to(OTHER))):
        ffn.train(training)
        with torch.set_grad_enabled(training):
            x = x.clone().requires_grad_(training)
            y = ffn(x)
            if training:
                y.backward(dy)
        results.append([y.detach()] + ([x.grad, ffn.w1.grad, ffn.w2.grad] if training else []))
    assert all(t.device == OTHER for t in results[1])
    for a, b in zip(results[1], results[0]):
        assert rel_err(a.to(b.device), b) < 1e-2  # rounding may differ: each device searches its own algorithm
