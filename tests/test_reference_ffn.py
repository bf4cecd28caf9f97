import pytest
import torch

from act24 import reference as ref
from conftest import sort_based_top2


def _inputs(T=64, d=16, H=32, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, d, generator=g, dtype=dtype)
    w1 = torch.randn(H, d, generator=g, dtype=dtype) / d**0.5
    w2 = torch.randn(d, H, generator=g, dtype=dtype) / H**0.5
    return x, w1, w2


def _explicit_masks(x, w1, num_dense):
    """Masks of the recipe computed step by step from the definitions."""
    y2 = torch.relu(x @ w1.t()) ** 2
    m = ref.tokenwise_mask(y2)
    a = torch.where(m, y2, 0.0)
    kept = (a != 0).sum(0)
    dense = ref.densest_features(kept, num_dense)
    return m, a, dense


@pytest.mark.parametrize("T", [64, 62])  # 62: token count padded to a multiple of 4 in the backward
def test_sparse_ffn_gradients_equal_the_explicit_masked_formula(T):
    x, w1, w2 = _inputs(T=T)
    perm = ref.token_permutation(T + (-T) % 4, seed=5)
    num_dense = 3
    m, a, dense = _explicit_masks(x, w1, num_dense)
    dy3 = torch.randn(T, w2.shape[0], dtype=torch.float64)

    xs, w1s, w2s = (t.clone().requires_grad_() for t in (x, w1, w2))
    y, kept, nnz = ref.sparse_ffn(xs, w1s, w2s, perm, num_dense)
    y.backward(dy3)

    # forward and dx: autograd of the masked formula with m held constant (exact in float64)
    xe, w1e = x.clone().requires_grad_(), w1.clone().requires_grad_()
    ye = (torch.relu(xe @ w1e.t()) ** 2 * m) @ w2.t()
    ye.backward(dy3)
    assert torch.equal(y, ye)
    assert torch.equal(xs.grad, xe.grad)

    # weight gradients: the feature-wise operands, built here by sorting each group of 4 permuted tokens
    dy1 = torch.where(m, (dy3 @ w2) * 2 * torch.relu(x @ w1.t()), 0.0)

    def featurewise(t):
        padded = torch.nn.functional.pad(t, (0, 0, 0, len(perm) - T))[perm]  # [T4, H], permuted order
        keep = sort_based_top2(padded.reshape(len(perm) // 4, 4, -1).transpose(1, 2)).transpose(1, 2)
        keep = keep.reshape(len(perm), -1)
        keep_orig = torch.zeros_like(keep)
        keep_orig[perm] = keep
        keep_orig = keep_orig[:T]
        keep_orig[:, dense] = True
        return torch.where(keep_orig, t, 0.0)

    fa, fd = featurewise(a), featurewise(dy1)
    torch.testing.assert_close(w2s.grad, dy3.t() @ fa, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w1s.grad, fd.t() @ x, rtol=1e-12, atol=1e-12)
    # the dense features get their exact (forward-masked) gradient
    torch.testing.assert_close(w1s.grad[dense], dy1[:, dense].t() @ x, rtol=1e-12, atol=1e-12)
    # the operands are 2:4 along permuted tokens on the sparse features and re-admit nothing
    sparse_feats = torch.ones(a.shape[1], dtype=torch.bool)
    sparse_feats[dense] = False
    for op in (fa, fd):
        assert not ((op != 0) & ~m).any()
        padded = torch.nn.functional.pad(op, (0, 0, 0, (-T) % 4))[perm]
        nz = (padded[:, sparse_feats] != 0).reshape(len(perm) // 4, 4, -1).sum(1)
        assert (nz <= 2).all()

    assert kept.tolist() == (a != 0).sum(0).tolist()
    assert int(nnz) == int((torch.relu(x @ w1.t()) != 0).sum())


def test_sparse_equals_dense_when_activations_are_already_2_4():
    # with at most 2 non-zeros per group in both directions nothing is dropped anywhere
    T, d, H = 8, 4, 8
    x = torch.eye(T, d, dtype=torch.float64)
    w1 = torch.zeros(H, d, dtype=torch.float64)
    w1[0, 0] = w1[5, 1] = 1.0
    w2 = torch.randn(d, H, dtype=torch.float64)
    perm = torch.arange(T)
    w1.requires_grad_()
    w2.requires_grad_()
    xs = x.clone().requires_grad_()
    y, _, _ = ref.sparse_ffn(xs, w1, w2, perm, 0)
    dy = torch.randn_like(y)
    sparse_grads = torch.autograd.grad(y, (xs, w1, w2), dy)
    xd = x.clone().requires_grad_()
    yd = ref.dense_ffn(xd, w1, w2)
    dense_grads = torch.autograd.grad(yd, (xd, w1, w2), dy)
    torch.testing.assert_close(y, yd)
    for s, d in zip(sparse_grads, dense_grads):  # the whole backward recipe reduces to dense autograd
        torch.testing.assert_close(s, d)
    assert dense_grads[1].abs().sum() > 0 and dense_grads[2].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_sparse_ffn_low_precision_close_to_float64(dtype):
    x, w1, w2 = _inputs(dtype=torch.float64, seed=2)
    perm = ref.token_permutation(64, seed=1)
    y64, _, _ = ref.sparse_ffn(x, w1, w2, perm, 2)
    y, _, _ = ref.sparse_ffn(x.to(dtype), w1.to(dtype), w2.to(dtype), perm, 2)
    err = (y.double() - y64).norm() / y64.norm()
    assert err < (1e-5 if dtype == torch.float32 else 3e-2)


def test_sparse_ffn_bad_input():
    x, w1, w2 = _inputs()
    perm = torch.arange(64)
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        ref.sparse_ffn(x.to(torch.int64), w1, w2, perm, 0)
    with pytest.raises(ValueError, match="x must be 2-D"):
        ref.sparse_ffn(x[0], w1, w2, perm, 0)
    with pytest.raises(TypeError, match="w1 has dtype"):
        ref.sparse_ffn(x, w1.float(), w2, perm, 0)
    with pytest.raises(ValueError, match="w2 must be"):
        ref.sparse_ffn(x, w1, w2.t(), perm, 0)
    with pytest.raises(ValueError, match="hidden size must be a multiple of 4"):
        ref.sparse_ffn(x, w1[:30], w2[:, :30], perm, 0)
    with pytest.raises(ValueError, match=r"perm must be an int64/int32 tensor of shape \(64,\)"):
        ref.sparse_ffn(x, w1, w2, torch.arange(60), 0)
    with pytest.raises(ValueError, match="each token exactly once"):
        ref.sparse_ffn(x, w1, w2, torch.arange(64) // 2, 0)
    with pytest.raises(ValueError, match="int64/int32"):
        ref.sparse_ffn(x, w1, w2, torch.arange(64).double(), 0)
    with pytest.raises(ValueError, match="num_dense"):
        ref.sparse_ffn(x, w1, w2, perm, 33)
    with pytest.raises(ValueError, match="w1 is on meta"):
        ref.sparse_ffn(x, w1.to("meta"), w2, perm, 0)


def test_stats_from_counts():
    y2 = torch.tensor([[1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    kept, nnz = ref.activation_counts(y2)
    stats = ref.FFNStats.from_counts(2, kept, nnz)
    assert stats.activation_sparsity == pytest.approx(5 / 8)
    assert stats.dropped_fraction == pytest.approx(1 / 3)
    assert stats.feature_density.tolist() == [0.0, 0.5, 0.5, 0.0]
