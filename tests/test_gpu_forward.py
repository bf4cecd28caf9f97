"""The sparse forward on the GPU against the reference and against torch._cslt_compress."""

import pytest
import torch

import act24
from act24 import reference as ref
from act24.ffn import dispatch
from act24.ffn.backend import backend_for
from conftest import rel_err, relu2_inputs

pytestmark = pytest.mark.gpu


def _masked(y1):
    return ref.masked_activation(ref.squared_relu(y1))



@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M,K", [(64, 32768), (32768, 64), (16384, 4096), (4096, 16384), (1024, 2048), (192, 8192)])
def test_packer_is_byte_exact_against_cslt_compress(M, K, dtype):
    from act24.kernels.sparsify_pack import sparsify_pack

    y1 = relu2_inputs(M, K, dtype, seed=M + K).cuda()
    ours = sparsify_pack(y1)
    a = _masked(y1)
    theirs = torch._cslt_compress(a)
    assert torch.equal(ours.packed.view(torch.int16), theirs.view(torch.int16))
    assert torch.equal(ours.kept_per_feature.long(), (a != 0).sum(0))
    assert torch.equal(ours.nonzeros_per_feature.long(), (ref.squared_relu(y1) != 0).sum(0))


def test_backend_is_fast_and_self_check_passes():
    b = backend_for(torch.device("cuda"), torch.bfloat16)
    assert b.name == "cusparselt", b.reason


@pytest.mark.parametrize("T,d,H", [(4096, 1024, 4096), (1000, 512, 2048)])  # 1000: padded to 1024 tokens
def test_sparse_mm_forward_matches_reference(T, d, H):
    from act24.ffn.fast_forward import sparse_forward

    g = torch.Generator(device="cuda").manual_seed(T)
    x = torch.randn(T, d, device="cuda", generator=g).bfloat16()
    w1 = (torch.randn(H, d, device="cuda", generator=g) / d**0.5).bfloat16()
    w2 = (torch.randn(d, H, device="cuda", generator=g) / H**0.5).bfloat16()
    y, kept, nonzeros = sparse_forward(x, w1, w2)
    a = _masked((x @ w1.t()))
    expected = a.float() @ w2.float().t()
    assert y.shape == (T, d) and rel_err(y, expected) <= 1e-2
    assert torch.equal(kept.long(), (a != 0).sum(0))
    # the float64 reference of the whole FFN, with the same mask
    y64 = (_masked((x @ w1.t())).double()) @ w2.double().t()
    assert rel_err(y, y64) <= 1e-2


def test_module_inference_under_autocast_uses_the_sparse_path():
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(1024, 4096, sparse=True, track_stats=True).cuda()
    x = torch.randn(8, 1024, 1024, device="cuda")
    old = dispatch.sparse_threshold()
    dispatch.set_sparse_threshold(0)
    try:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            y = ffn(x)
    finally:
        dispatch.set_sparse_threshold(old)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    xb, w1, w2 = x.reshape(-1, 1024).bfloat16(), ffn.w1.bfloat16(), ffn.w2.bfloat16()
    expected = _masked(xb @ w1.t()).float() @ w2.float().t()
    assert rel_err(y.reshape(-1, 1024), expected) <= 1e-2
    assert 0.4 < ffn.last_stats.activation_sparsity < 0.6  # random weights: about half the activations are zero
    assert 0 < ffn.last_stats.dropped_fraction < 0.5
