import warnings

import pytest
import torch

import act24
from act24.ffn import backend as B
from act24.ffn import dispatch


def _decide(capability=(9, 0), cusparselt=800, triton="3.6.0", problem=None):
    return B.decide_cuda_backend(capability, cusparselt, triton, lambda: problem)


def test_decision_on_cuda_machines():
    assert _decide().name == "cusparselt"
    assert "8.0" in _decide(capability=(8, 0)).reason
    assert "cuSPARSELt" in _decide(cusparselt=None).reason
    assert "Triton" in _decide(triton=None).reason
    bad = _decide(problem="the packer's layout differs from torch._cslt_compress")
    assert bad.name == "dense-fallback" and "differs" in bad.reason


def test_failed_self_check_falls_back_to_dense_with_one_warning(monkeypatch):
    # a machine whose cuSPARSELt layout changed: the module must run densely and say so once
    monkeypatch.setattr(B, "_warned", set())
    fallback = _decide(problem="the packer's layout differs from torch._cslt_compress (cuSPARSELt 900)")
    monkeypatch.setattr("act24.ffn.backend.backend_for", lambda device, dtype=None: fallback)
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(16, 64, sparse=True)
    x = torch.randn(8, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y1 = ffn(x)
        y2 = ffn(x)
    assert len(caught) == 1 and "differs" in str(caught[0].message)
    dense = torch.relu(x @ ffn.w1.t()) ** 2 @ ffn.w2.t()
    assert torch.equal(y1, dense) and torch.equal(y2, dense)


def test_cpu_uses_the_reference():
    assert B.backend_for(torch.device("cpu")).name == "reference"


def test_dispatch_threshold():
    old = dispatch.sparse_threshold()
    try:
        dispatch.set_sparse_threshold(100)
        assert dispatch.use_sparse(10, 10, 1) and not dispatch.use_sparse(9, 10, 1)
        with pytest.raises(ValueError, match=">= 0"):
            dispatch.set_sparse_threshold(-1)
    finally:
        dispatch.set_sparse_threshold(old)
    assert not dispatch.use_sparse(1, 4096, 16384)  # decode stays dense
    assert dispatch.use_sparse(2048, 4096, 16384) and not dispatch.use_sparse(1024, 4096, 16384)


def test_float32_training_on_a_supported_gpu_runs_the_recipe(monkeypatch):
    # the fast kernels take 16-bit activations: float32 training must run the plain-PyTorch recipe,
    # not the dense fallback
    fast, dense = B.Backend("cusparselt", "test"), B.Backend("dense-fallback", "32-bit")
    monkeypatch.setattr("act24.ffn.backend.backend_for",
                        lambda device, dtype=torch.bfloat16: fast if dtype in (torch.bfloat16, torch.float16) else dense)
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(16, 64, sparse=True, perm_seed=1)
    x = torch.randn(8, 16, requires_grad=True)
    y = ffn(x)
    perm = ffn.token_permutation(8, x.device)
    expected, _, _ = act24.reference.sparse_ffn(x, ffn.w1, ffn.w2, perm, act24.reference.dense_feature_count(64, 0.05))
    assert torch.equal(y, expected)
    assert not torch.equal(y, torch.relu(x @ ffn.w1.t()) ** 2 @ ffn.w2.t())  # 2:4 dropped something


@pytest.fixture
def fast_backend_everywhere(monkeypatch):
    """A supported GPU's backend for any device (the CPU included), with no fallback warned yet."""
    fast = B.Backend("cusparselt", "test")
    monkeypatch.setattr("act24.ffn.backend.backend_for", lambda device, dtype=torch.bfloat16: fast)
    monkeypatch.setattr(B, "_warned", set())


def test_threshold_zero_keeps_2_4_where_the_kernels_cannot_run(fast_backend_everywhere):
    # inference on a supported GPU with a shape the kernels reject: dense normally, the recipe when
    # the caller asks for 2:4 everywhere (the trainer's evaluation does)
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(20, 64, sparse=True, perm_seed=1).eval()  # d=20: not a multiple of 16
    x = torch.randn(8, 20)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="d=20 is not a multiple of 16"):
        dense = ffn(x)
    torch.testing.assert_close(dense, torch.relu(x @ ffn.w1.t()) ** 2 @ ffn.w2.t())
    perm = ffn.token_permutation(8, x.device)
    recipe = act24.reference.sparse_ffn(x, ffn.w1, ffn.w2, perm, ffn.num_dense_features)[0]
    with torch.no_grad(), dispatch.sparse_threshold_override(0):
        assert torch.equal(ffn(x), recipe)
    # in train mode the forward without autograd is the recipe too (reentrant activation checkpointing
    # runs it so, then recomputes with autograd): no fallback
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(ffn.train()(x), recipe)


@pytest.mark.parametrize("case", ["autocast", "frozen weights"])
def test_reentrant_checkpointing_recomputes_the_function_it_ran_first(fast_backend_everywhere, case):
    # a supported GPU (faked) with a shape the kernels reject: inference would fall back to dense,
    # so a first forward that took the inference dispatch would differ from its 2:4 recomputation
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(20, 64, sparse=True, perm_seed=1)  # train mode, fp32 weights
    if case == "frozen weights":
        ffn.requires_grad_(False)
    x = torch.randn(8, 20, requires_grad=True)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast")
    with autocast:
        plain = ffn(x)
        checkpointed = torch.utils.checkpoint.checkpoint(ffn, x, use_reentrant=True)
    assert torch.equal(checkpointed, plain)
    checkpointed.sum().backward()
    grad_checkpointed = x.grad
    x.grad = None
    plain.sum().backward()
    assert torch.equal(grad_checkpointed, x.grad)
