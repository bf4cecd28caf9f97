"""torch.compile(fullgraph=True) of the FFN and of a model block, dense and sparse, against eager."""

import pytest
import torch

import act24
from act24.model import ModelConfig
from act24.model.transformer import Block, rope_tables


def _run(module, x, fn):
    module.zero_grad()
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    (y.float() ** 2).sum().backward()
    return y.detach(), [x.grad] + [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_ffn_compiles_without_graph_breaks(sparse, bias):
    torch.manual_seed(0)
    if bias:
        ffn = act24.SquaredReLUMLP(torch.nn.Linear(32, 128), torch.nn.Linear(128, 32), sparse=sparse, perm_seed=2)
    else:
        ffn = act24.SquaredReLUFFN(32, 128, sparse=sparse, perm_seed=2)
    x = torch.randn(2, 18, 32)  # 36 tokens: not a multiple of 64
    compiled = torch.compile(ffn, fullgraph=True, backend="aot_eager")
    y_eager, g_eager = _run(ffn, x, ffn)
    y_comp, g_comp = _run(ffn, x, compiled)
    torch.testing.assert_close(y_comp, y_eager)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b)


def test_sparse_ffn_compiles_with_symbolic_sizes():
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(32, 128, sparse=True, perm_seed=2)
    compiled = torch.compile(ffn, fullgraph=True, dynamic=True, backend="aot_eager")
    for tokens in (36, 100):
        x = torch.randn(tokens, 32)
        y_eager, g_eager = _run(ffn, x, ffn)
        y_comp, g_comp = _run(ffn, x, compiled)
        torch.testing.assert_close(y_comp, y_eager)
        for a, b in zip(g_comp, g_eager):
            torch.testing.assert_close(a, b)


def test_compiled_training_takes_a_transposed_input():
    """The backward's fake outputs are contiguous, like the real op's, whatever the input's strides."""
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(32, 128, sparse=True, perm_seed=2)
    x = torch.randn(32, 40).t()  # [40 tokens, 32], not contiguous
    compiled = torch.compile(ffn, fullgraph=True)  # inductor checks the fake strides
    y_eager, g_eager = _run(ffn, x, ffn)
    y_comp, g_comp = _run(ffn, x, compiled)
    torch.testing.assert_close(y_comp, y_eager)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b)


def test_ffn_stats_under_compile():
    ffn = act24.SquaredReLUFFN(16, 64, sparse=True, track_stats=True)
    torch.compile(ffn, fullgraph=True, backend="aot_eager")(torch.randn(40, 16))
    assert ffn.last_stats.tokens == 40 and 0 < ffn.last_stats.activation_sparsity < 1


def test_stats_hooks_run_eagerly_under_compile():
    """A hook registered after the first compiled call runs (the hook count is guarded); fullgraph=True
    refuses hooks with a message that points at last_stats."""
    torch._dynamo.reset()
    ffn = act24.SquaredReLUFFN(16, 64, sparse=True)
    compiled = torch.compile(ffn, backend="eager")
    x = torch.randn(13, 16)
    compiled(x)
    seen = []
    handle = ffn.register_stats_hook(lambda module, stats: seen.append(stats.tokens))
    compiled(x)
    compiled(x[:5])
    assert seen == [13, 5]
    handle.remove()
    compiled(x)
    assert seen == [13, 5]
    ffn.register_stats_hook(lambda module, stats: None)
    torch._dynamo.reset()  # else the frame's cached non-fullgraph code runs
    with pytest.raises(Exception, match="last_stats"):
        torch.compile(ffn, fullgraph=True, backend="eager")(x)


@pytest.mark.parametrize("sparse", [False, True])
def test_block_compiles_without_graph_breaks(sparse):
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_heads=4, hidden=128, seq_len=16)
    block = Block(cfg)
    block.ffn.sparse = sparse
    cos, sin = rope_tables(16, 8, cfg.rope_base)
    x = torch.randn(2, 16, 32)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    y_eager, g_eager = _run(block, x, lambda t: block(t, cos, sin))
    y_comp, g_comp = _run(block, x, lambda t: compiled(t, cos, sin))
    torch.testing.assert_close(y_comp, y_eager)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_inductor_compiles_the_sparse_ffn():
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(32, 128, sparse=True, perm_seed=2)
    x = torch.randn(64, 32)
    y_eager, g_eager = _run(ffn, x, ffn)
    y_comp, g_comp = _run(ffn, x, torch.compile(ffn, fullgraph=True))
    torch.testing.assert_close(y_comp, y_eager, rtol=1e-4, atol=1e-5)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
