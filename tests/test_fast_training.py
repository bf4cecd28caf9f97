"""The fast training path (Triton packers + split GEMMs) against the recipe, on CPU: the kernels run
in the interpreter and the 2:4 GEMM is replaced by a dense product of the decoded operand."""

import pytest
import torch

import act24
from act24 import reference as ref
from act24.ffn import backend as B
from conftest import decoded_mm, rel_err

BF16 = torch.bfloat16


@pytest.fixture
def fast_backend(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("the GPU tests cover the real kernels and GEMMs")
    fast, dense = B.Backend("cusparselt", "test"), B.Backend("dense-fallback", "32-bit")
    monkeypatch.setattr(B, "backend_for", lambda device, dtype=BF16: fast if dtype in (BF16, torch.float16) else dense)
    calls = []
    monkeypatch.setattr("act24.gemm.cusparselt.sparse_mm", lambda p, b, m: calls.append((m, *b.shape)) or decoded_mm(p, b, m))
    return calls



def _grads(ffn, x, dy):
    x = x.detach().clone().requires_grad_()
    ffn.zero_grad()
    y = ffn(x)
    y.backward(dy)
    return y.detach(), x.grad, ffn.w1.grad.clone(), ffn.w2.grad.clone()


def test_fast_training_matches_the_recipe(fast_backend):
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(64, 128, sparse=True, perm_seed=3, dense_fraction=0.1, dtype=BF16, track_stats=True)
    x = torch.randn(2, 64, 64, dtype=BF16)
    dy = torch.randn(2, 64, 64, dtype=BF16)
    y, dx, dw1, dw2 = _grads(ffn, x, dy)
    assert ffn.last_stats.tokens == 128
    # GEMM2 forward, then dx, dW1, dW2.T: four 2:4 GEMMs
    assert fast_backend == [(128, 128, 64), (128, 128, 64), (128, 128, 64), (128, 128, 64)]

    x2, dy2 = x.reshape(-1, 64).clone().requires_grad_(), dy.reshape(-1, 64)
    w1, w2 = (p.detach().clone().requires_grad_() for p in (ffn.w1, ffn.w2))
    perm = ref.cached_token_permutation(128, 3, x.device)
    ye, _, _ = ref.sparse_ffn(x2, w1, w2, perm, ref.dense_feature_count(128, 0.1))
    ye.backward(dy2)
    assert rel_err(y.reshape(-1, 64), ye) < 1e-2
    assert rel_err(dx.reshape(-1, 64), x2.grad) < 1e-2
    assert rel_err(dw1, w1.grad) < 2e-2 and rel_err(dw2, w2.grad) < 2e-2
    # and not the dense gradient: the feature-wise 2:4 dropped something
    w1d = ffn.w1.detach().clone().requires_grad_()
    (ref.squared_relu(x2.detach() @ w1d.t()) @ ffn.w2.detach().t()).backward(dy2)
    assert rel_err(dw1, w1d.grad) > 5e-2


def test_fast_training_pads_odd_token_counts(fast_backend):
    torch.manual_seed(1)
    ffn = act24.SquaredReLUFFN(64, 128, sparse=True, perm_seed=0, dtype=BF16)
    x, dy = torch.randn(100, 64, dtype=BF16), torch.randn(100, 64, dtype=BF16)
    y, dx, dw1, dw2 = _grads(ffn, x, dy)
    # the fast path pads to 128 zero tokens and groups them by a permutation of 128: the recipe on
    # the same padded input gives the same gradients
    x2 = torch.nn.functional.pad(x, (0, 0, 0, 28)).requires_grad_()
    w1, w2 = (p.detach().clone().requires_grad_() for p in (ffn.w1, ffn.w2))
    ye, _, _ = ref.sparse_ffn(x2, w1, w2, ref.cached_token_permutation(128, 0, x.device), 7)
    ye.backward(torch.nn.functional.pad(dy, (0, 0, 0, 28)))
    assert rel_err(y, ye[:100]) < 1e-2 and rel_err(dx, x2.grad[:100]) < 1e-2
    assert rel_err(dw1, w1.grad) < 2e-2 and rel_err(dw2, w2.grad) < 2e-2


def test_fast_training_with_a_first_layer_bias_takes_the_recipe(fast_backend):
    torch.manual_seed(2)
    mlp = act24.SquaredReLUMLP(torch.nn.Linear(64, 128, dtype=BF16), torch.nn.Linear(128, 64, dtype=BF16), sparse=True,
                               perm_seed=0)
    x = torch.randn(64, 64, dtype=BF16, requires_grad=True)
    mlp(x).float().sum().backward()
    assert mlp.up_proj.bias.grad is not None and torch.isfinite(mlp.up_proj.bias.grad).all()
    assert fast_backend == []  # the recipe ran


def test_unpadded_training_output_is_not_sliced(fast_backend):
    """A slice's backward zero-fills and copies the whole gradient: only padded inputs may take one."""
    from act24.ffn import fast_forward

    w1, w2 = torch.randn(128, 64, dtype=BF16), torch.randn(64, 128, dtype=BF16)
    names = []
    for tokens in (128, 100):
        x = torch.randn(tokens, 64, dtype=BF16, requires_grad=True)
        y, _, _ = fast_forward.sparse_train_forward(x, w1, w2, 0, 6)
        names.append(type(y.grad_fn).__name__)
    assert "Slice" not in names[0] and "Slice" in names[1]


def test_backward_zero_fills_no_gradient_for_the_packed_activation(fast_backend):
    """The packed activation and the counts are outputs without gradients: autograd must not build
    zero gradients for them (a [T, H*9/16] fill every step)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from act24.ffn import fast_forward

    class FillsAndZeros(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.shapes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.__name__.split(".")[0] in ("zeros", "zeros_like", "new_zeros", "fill_", "zero_", "full"):
                self.shapes.append(tuple(out.shape))
            return out

    x = torch.randn(128, 64, dtype=BF16, requires_grad=True)
    w1 = torch.randn(128, 64, dtype=BF16, requires_grad=True)
    w2 = torch.randn(64, 128, dtype=BF16, requires_grad=True)
    y, _, _ = fast_forward.sparse_train_forward(x, w1, w2, 0, 6)
    mode = FillsAndZeros()
    with mode:
        y.backward(torch.randn_like(y))
    assert (128, 128 * 9 // 16) not in mode.shapes and (128,) not in mode.shapes, mode.shapes
    assert x.grad is not None and w1.grad is not None and w2.grad is not None


def test_a_loss_on_the_packed_activation_is_refused(fast_backend):
    from act24.ops import sparse_training_ops
    from act24.ops.recipe_ops import seed_tensor

    x = torch.randn(128, 64, dtype=BF16, requires_grad=True)
    w1, w2 = torch.randn(128, 64, dtype=BF16), torch.randn(64, 128, dtype=BF16)
    y, packed, _, _ = sparse_training_ops.sparse_ffn_train_forward(x, w1, w2, seed_tensor(0), 6)
    with pytest.raises(RuntimeError, match="bit-packed and has no gradient"):
        (y.float().sum() + packed.float().sum()).backward()


def test_backward_takes_the_dense_features_from_the_training_op_selection(fast_backend, monkeypatch):
    """The backward picks the dense features through `dense_feature_selection`, bounded by the token
    count (32-bit keys), and its result as a set gives the gradients of the sorted choice."""
    from act24.ffn import fast_forward
    from act24.ops import sparse_training_ops as ops

    g = torch.Generator().manual_seed(4)
    w1, w2 = torch.randn(128, 64, generator=g, dtype=BF16), torch.randn(64, 128, generator=g, dtype=BF16)
    x, dy = torch.randn(128, 64, generator=g, dtype=BF16), torch.randn(128, 64, generator=g, dtype=BF16)
    real, calls, grads = ops.dense_feature_selection, [], []
    for as_set in (True, False):
        def select(kept, n, tokens, as_set=as_set):
            calls.append((n, tokens))
            chosen = real(kept, n, tokens)
            return chosen.flip(0) if as_set else chosen.sort().values  # any order of the same set
        monkeypatch.setattr(ops, "dense_feature_selection", select)
        xr = x.clone().requires_grad_()
        wr1, wr2 = w1.clone().requires_grad_(), w2.clone().requires_grad_()
        fast_forward.sparse_train_forward(xr, wr1, wr2, 0, 6)[0].backward(dy)
        grads.append((xr.grad, wr1.grad, wr2.grad))
    assert calls == [(6, 128), (6, 128)]
    for a, b in zip(*grads):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dynamic", [False, True])
def test_fast_training_compiles_against_eager(fast_backend, dynamic):
    """The fast path's custom ops traced by torch.compile, every size symbolic with dynamic=True: their fake
    implementations and the size rules around them (padding, the fused kernels' limits) must trace."""
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(64, 128, sparse=True, perm_seed=3, dense_fraction=0.1, dtype=BF16)
    compiled = torch.compile(ffn, fullgraph=True, dynamic=dynamic, backend="aot_eager")
    for tokens in (128, 100) if dynamic else (100,):
        x, dy = torch.randn(tokens, 64, dtype=BF16), torch.randn(tokens, 64, dtype=BF16)
        expected = _grads(ffn, x, dy)
        fast_backend.clear()
        got = _grads(compiled, x, dy)
        assert len(fast_backend) == 4  # the compiled step ran the fast path's four 2:4 GEMMs
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b)
