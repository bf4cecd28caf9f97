import pytest
import torch

import act24
from act24 import reference as ref


def test_dense_mode_is_the_plain_formula():
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(16, 64)
    x = torch.randn(2, 8, 16)
    torch.testing.assert_close(ffn(x), torch.relu(x @ ffn.w1.t()) ** 2 @ ffn.w2.t())
    assert ffn.w1.shape == (64, 16) and ffn.w2.shape == (16, 64)


def test_sparse_mode_runs_the_reference_recipe_on_cpu():
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(16, 64, sparse=True, perm_seed=3, dense_fraction=0.1)
    x = torch.randn(2, 10, 16, dtype=torch.float64, requires_grad=True)
    ffn.double()
    y = ffn(x)
    y.sum().backward()
    x2 = x.detach().reshape(-1, 16)
    perm = ref.token_permutation(20, seed=3)
    num_dense = ref.dense_feature_count(64, 0.1)
    w1, w2 = (p.detach().clone().requires_grad_() for p in (ffn.w1, ffn.w2))
    xe = x2.clone().requires_grad_()
    ye, _, _ = ref.sparse_ffn(xe, w1, w2, perm, num_dense)
    ye.sum().backward()
    assert torch.equal(y.reshape(-1, 16), ye)
    assert torch.equal(x.grad.reshape(-1, 16), xe.grad)
    assert torch.equal(ffn.w1.grad, w1.grad) and torch.equal(ffn.w2.grad, w2.grad)


def test_permutation_is_fixed_per_module_and_seedable():
    a = act24.SquaredReLUFFN(8, 16, perm_seed=1)
    b = act24.SquaredReLUFFN(8, 16, perm_seed=1)
    p = a.token_permutation(64, torch.device("cpu"))
    assert torch.equal(p, a.token_permutation(64, torch.device("cpu")))
    assert torch.equal(p, b.token_permutation(64, torch.device("cpu")))
    assert a.token_permutation(63, torch.device("cpu")).shape == (64,)  # padded to a multiple of 4
    torch.manual_seed(0)
    c = act24.SquaredReLUFFN(8, 16)
    torch.manual_seed(0)
    d = act24.SquaredReLUFFN(8, 16)
    assert c.perm_seed == d.perm_seed


def test_autocast_bfloat16_on_cpu():
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(16, 64, sparse=True)
    x = torch.randn(32, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ffn(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert ffn.w1.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    y32 = ref.sparse_ffn(x.detach(), ffn.w1.detach(), ffn.w2.detach(), ffn.token_permutation(32, x.device), 4)[0]
    assert (y.float() - y32).norm() / y32.norm() < 3e-2


def test_stats_and_hooks():
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(16, 64, track_stats=True)
    seen = []
    handle = ffn.register_stats_hook(lambda mod, stats: seen.append(stats))
    x = torch.randn(40, 16)
    ffn(x)
    s = ffn.last_stats
    y2 = torch.relu(x @ ffn.w1.t()) ** 2
    assert s.tokens == 40
    assert s.activation_sparsity == pytest.approx(float((y2 == 0).float().mean()))
    assert 0 <= s.dropped_fraction < 1 and s.feature_density.shape == (64,)
    ffn.sparse = True
    ffn(x)
    assert ffn.last_stats.dropped_fraction == pytest.approx(s.dropped_fraction)
    assert len(seen) == 2
    handle.remove()
    ffn(x)
    assert len(seen) == 2


def test_module_bad_input():
    with pytest.raises(ValueError, match="hidden must be a multiple of 4"):
        act24.SquaredReLUFFN(8, 30)
    with pytest.raises(ValueError, match="dense_fraction"):
        act24.SquaredReLUFFN(8, 32, dense_fraction=2.0)
    ffn = act24.SquaredReLUFFN(8, 32)
    with pytest.raises(ValueError, match="last dimension must be d=8"):
        ffn(torch.randn(4, 7))
    with pytest.raises(ValueError, match="1-D"):
        ffn(torch.randn(8))
    with pytest.raises(TypeError, match="floating dtype"):
        ffn(torch.ones(4, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="w1 has dtype"):
        ffn(torch.randn(4, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="is on meta"):
        ffn.to("meta")(torch.randn(4, 8))


def test_dense_warmup_switches_every_ffn_at_its_step():
    from act24.model import DecoderLM, ModelConfig

    lm = DecoderLM(ModelConfig(vocab_size=32, d_model=16, n_layers=3, n_heads=2, hidden=64, seq_len=16))
    warmup = act24.DenseWarmup(lm, dense_steps=2)
    assert [warmup.update(s) for s in range(4)] == [False, False, True, True]
    assert all(f.sparse for f in lm.ffn_modules())
    assert warmup.update(0) is False and not any(f.sparse for f in lm.ffn_modules())  # a resumed run rewinds too
    with pytest.raises(ValueError, match="dense_steps must be an int >= 0"):
        act24.DenseWarmup(lm, dense_steps=-1)
    with pytest.raises(ValueError, match="no act24 FFN"):
        act24.DenseWarmup(torch.nn.Linear(2, 2))
    assert act24.set_sparse(lm, True) == 3


@pytest.mark.parametrize("sparse", [False, True])
def test_meta_tensors_give_shapes(sparse):
    """Models built on the meta device (FSDP set-up, shape checks) run the FFN for shapes only."""
    ffn = act24.SquaredReLUFFN(16, 64, sparse=sparse, device="meta")
    x = torch.empty(2, 7, 16, device="meta", requires_grad=True)
    y = ffn(x)
    assert y.shape == (2, 7, 16) and y.is_meta
    y.sum().backward()
    assert ffn.w1.grad.shape == (64, 16) and x.grad.is_meta


@pytest.mark.parametrize("args, options, match", [
    ((16.0, 64), {}, "d must be an int"),
    ((16, "64"), {}, "hidden must be an int"),
    ((0, 64), {}, "d must be an int >= 1"),
    ((16, 64), {"perm_seed": 1.5}, "perm_seed must be an int"),
    ((16, 64), {"perm_seed": -1}, "perm_seed must be an int in"),
    ((16, 64), {"perm_seed": 2**64}, "perm_seed must be an int in"),
    ((16, 64), {"sparse": "no"}, "sparse must be a bool"),
    ((16, 64), {"track_stats": 1}, "track_stats must be a bool"),
])
def test_options_are_checked(args, options, match):
    with pytest.raises((TypeError, ValueError), match=match):
        act24.SquaredReLUFFN(*args, **options)


def test_switching_takes_bools_only():
    model = torch.nn.Sequential(act24.SquaredReLUFFN(8, 16))
    with pytest.raises(TypeError, match="sparse must be a bool"):
        act24.set_sparse(model, "no")
    assert act24.set_sparse(model, True) == 1 and model[0].sparse is True


def test_double_backward_is_refused_clearly():
    ffn = act24.SquaredReLUFFN(16, 64, sparse=True).double()
    x = torch.randn(8, 16, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(ffn(x).pow(2).sum(), x, create_graph=True)  # recording the graph is fine
    with pytest.raises(RuntimeError, match="differentiable once"):
        g.pow(2).sum().backward()
    ffn(x).sum().backward(create_graph=True)  # so is a first backward that records it
    assert ffn.w1.grad.shape == (64, 16)


def test_modules_pickled_before_the_flags_were_properties_load():
    ffn = act24.SquaredReLUFFN(8, 16, sparse=True, track_stats=True, perm_seed=5)
    state = dict(ffn.__dict__)
    state["sparse"], state["track_stats"] = state.pop("_sparse_mode"), state.pop("_track_stats_mode")
    state.pop("_num_stats_hooks")
    old = act24.SquaredReLUFFN.__new__(act24.SquaredReLUFFN)
    old.__setstate__(state)
    assert old.sparse is True and old.track_stats is True and old.perm_seed == 5 and old._num_stats_hooks == 0
    assert old(torch.randn(4, 8)).shape == (4, 8)


def test_warmup_takes_any_integer_step():
    import numpy as np

    model = torch.nn.Sequential(act24.SquaredReLUFFN(8, 16))
    warmup = act24.DenseWarmup(model, dense_steps=np.int64(3))
    assert warmup.update(np.int64(2)) is False and warmup.update(np.int64(3)) is True and model[0].sparse
    with pytest.raises(TypeError, match="step must be an int"):
        warmup.update(2.5)
