"""The fast training path on the GPU: gradients against the recipe, a short training run against the
recipe's, and torch.compile of the sparse FFN."""

import pytest
import torch

import act24
from act24 import reference as ref
from act24.ffn import dispatch
from conftest import rel_err

pytestmark = pytest.mark.gpu
BF16 = torch.bfloat16



@pytest.mark.parametrize("T,d,H", [(4096, 256, 1024), (1024, 512, 2048), (2048, 1024, 4096)])
def test_gradients_match_the_recipe(T, d, H):
    torch.manual_seed(T + d)
    ffn = act24.SquaredReLUFFN(d, H, sparse=True, perm_seed=5, device="cuda", dtype=BF16)
    x = (torch.randn(T, d, device="cuda") - 0.3).to(BF16).requires_grad_()
    dy = torch.randn(T, d, device="cuda", dtype=BF16)
    y = ffn(x)
    y.backward(dy)
    xe = x.detach().clone().requires_grad_()
    w1, w2 = (p.detach().clone().requires_grad_() for p in (ffn.w1, ffn.w2))
    ye, _, _ = ref.sparse_ffn(xe, w1, w2, ref.cached_token_permutation(T, 5, x.device), ref.dense_feature_count(H, 0.05))
    ye.backward(dy)
    assert rel_err(y, ye) < 1e-2
    assert rel_err(x.grad, xe.grad) < 1e-2
    assert rel_err(ffn.w1.grad, w1.grad) < 2e-2
    assert rel_err(ffn.w2.grad, w2.grad) < 2e-2


def _train(model, steps, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(steps):
        tokens = torch.randint(0, 64, (16, 257), device="cuda", generator=g)
        tokens[:, 1::2] = (tokens[:, 0:-1:2] * 7 + 3) % 64  # learnable structure
        with torch.autocast("cuda", dtype=BF16):
            loss = model(tokens[:, :-1], tokens[:, 1:])[1]
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_training_steps_stay_finite_and_track_the_recipe(monkeypatch):
    from act24.model import DecoderLM, ModelConfig

    cfg = ModelConfig(vocab_size=64, d_model=256, n_layers=2, n_heads=4, seq_len=256, hidden=1024)
    runs = {}
    for name in ("fast", "recipe"):
        torch.manual_seed(0)
        model = DecoderLM(cfg).cuda()
        model.set_sparse(True)
        if name == "recipe":
            monkeypatch.setattr("act24.ffn.module.sparse_path", lambda *a: "recipe")
        runs[name] = _train(model, 300)
    fast, recipe = runs["fast"], runs["recipe"]
    assert all(torch.isfinite(torch.tensor(fast)))
    tail = slice(-20, None)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    assert mean(fast[tail]) < 0.8 * mean(fast[:10])  # it learns
    assert abs(mean(fast[tail]) - mean(recipe[tail])) < 0.05 * mean(recipe[tail])


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_compiled_sparse_ffn_matches_eager(training, dynamic):
    """dynamic=True: every size symbolic, the fused kernels' size rules among the guards."""
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(512, 2048, sparse=True, perm_seed=1, device="cuda", dtype=BF16)
    compiled = torch.compile(ffn, fullgraph=True, dynamic=dynamic)
    for tokens in (4096, 3000) if dynamic else (4096,):
        x = torch.randn(tokens, 512, device="cuda", dtype=BF16, requires_grad=training)
        with dispatch.sparse_threshold_override(0), torch.set_grad_enabled(training):
            y_eager, y_comp = ffn(x), compiled(x)
            assert rel_err(y_comp, y_eager) < 1e-2
            if training:
                g = torch.autograd.grad(y_eager.float().square().sum(), (x, ffn.w1))
                gc = torch.autograd.grad(y_comp.float().square().sum(), (x, ffn.w1))
                assert rel_err(gc[0], g[0]) < 1e-2 and rel_err(gc[1], g[1]) < 2e-2


def test_sparse_training_step_replays_from_a_cuda_graph():
    """Captured once, the step recomputes from new inputs on replay: no host work of act24's ops
    (permutation cache, algorithm search, packers, cuSPARSELt) is baked in wrongly."""
    from act24.bench.common import cuda_graph_replay

    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(512, 2048, sparse=True, perm_seed=2, device="cuda", dtype=BF16)
    x = torch.randn(2048, 512, device="cuda", dtype=BF16, requires_grad=True)
    dy = torch.randn_like(x)

    def step():
        for t in (x, ffn.w1, ffn.w2):
            t.grad = None
        ffn(x).backward(dy)

    replay = cuda_graph_replay(step)
    replayed = []
    for _ in range(2):  # twice: nothing may build up across replays
        with torch.no_grad():
            x.copy_(torch.randn_like(x))
            dy.copy_(torch.randn_like(dy))
        replay()
        replayed.append(([t.grad.clone() for t in (x, ffn.w1, ffn.w2)], x.detach().clone(), dy.clone()))
    for grads, x_in, dy_in in replayed:
        with torch.no_grad():
            x.copy_(x_in)
            dy.copy_(dy_in)
        step()
        for got, expected in zip(grads, (x.grad, ffn.w1.grad, ffn.w2.grad)):
            assert rel_err(got, expected) < 1e-3


@pytest.mark.gpu
def test_trainer_with_cuda_graphs_follows_the_eager_trajectory(text_dir, tmp_path):
    """Dense steps, the switch to 2:4, both graphs (logging and plain steps), evaluations right after
    logging steps, checkpoints, and a resume between replays: the eager loop's losses and logged
    sparsity (a stale learning rate, accumulated gradients or statistics overwritten by an
    evaluation would not give them)."""
    import json

    from act24.model import ModelConfig
    from act24.train import TrainConfig, Trainer, load_corpus

    model_cfg = ModelConfig(d_model=64, n_layers=2, n_heads=2, seq_len=64, hidden=256)
    corpus = load_corpus(text_dir)

    def config(graphs):
        return TrainConfig(steps=16, batch_size=4, log_interval=2, eval_interval=4, eval_batches=2,
                           checkpoint_interval=4, dense_warmup_steps=6, cuda_graphs=graphs)

    def logged(out):
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return rows, torch.tensor([r.get("loss", r.get("val_loss")) for r in rows])

    runs = {}
    for graphs in (False, True):
        out = tmp_path / str(graphs)
        Trainer(model_cfg, config(graphs), corpus, out, torch.device("cuda"), progress=False).run()
        runs[graphs] = logged(out)
    (eager_rows, eager), (graph_rows, graphed) = runs[False], runs[True]
    assert [r["sparse"] for r in graph_rows if "loss" in r][2:4] == [False, True]
    assert eager.shape == graphed.shape and torch.isfinite(graphed).all()
    torch.testing.assert_close(graphed, eager, rtol=2e-3, atol=0)
    sparsity = lambda rows: torch.tensor([r["act_sparsity"] for r in rows if "act_sparsity" in r])
    torch.testing.assert_close(sparsity(graph_rows), sparsity(eager_rows), rtol=0, atol=1e-2)

    # interrupted at step 10 (after a checkpoint at 8) and resumed, with graphs: the same run
    out = tmp_path / "resumed"
    trainer = Trainer(model_cfg, config(True), corpus, out, torch.device("cuda"), progress=False)
    step = trainer._train_step
    trainer._train_step = lambda track_stats: (_ for _ in ()).throw(KeyboardInterrupt) if trainer.step == 10 else step(track_stats)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    Trainer(model_cfg, config(True), corpus, out, torch.device("cuda"), resume=True, progress=False).run()
    torch.testing.assert_close(logged(out)[1], graphed, rtol=2e-3, atol=0)


@pytest.mark.gpu
def test_compiled_trainer_runs_the_fast_kernels_through_the_switch_to_2_4(text_dir, tmp_path):
    """The GPU ops take each layer's seed as a CPU tensor: nine blocks share their compiled graphs
    instead of recompiling per layer past the limit of 8."""
    from act24.model import ModelConfig
    from act24.train import TrainConfig, Trainer, load_corpus

    cfg = TrainConfig(steps=6, batch_size=4, log_interval=2, eval_interval=3, eval_batches=1, dense_warmup_steps=2,
                      compile=True)
    model = ModelConfig(d_model=64, n_layers=9, n_heads=2, seq_len=64, hidden=256)
    summary = Trainer(model, cfg, load_corpus(text_dir), tmp_path / "c", torch.device("cuda"), progress=False).run()
    assert summary["step"] == 6 and summary["sparse"] is True and summary["val_loss"] == summary["val_loss"]


def test_reentrant_checkpointing_below_the_dispatch_threshold_matches_plain_training():
    # reentrant checkpointing runs the first forward without autograd, where inference would take the
    # dense FFN at this size (T*d*H far below the threshold); in train mode it must be the 2:4 recipe
    torch.manual_seed(0)
    ffn = act24.SquaredReLUFFN(256, 1024, sparse=True, perm_seed=3, device="cuda", dtype=BF16)
    assert not dispatch.use_sparse(512, 256, 1024)
    x = torch.randn(512, 256, device="cuda", dtype=BF16, requires_grad=True)
    dy = torch.randn(512, 256, device="cuda", dtype=BF16)
    results = []
    for checkpointed in (False, True):
        for t in (x, ffn.w1, ffn.w2):
            t.grad = None
        y = torch.utils.checkpoint.checkpoint(ffn, x, use_reentrant=True) if checkpointed else ffn(x)
        y.backward(dy)
        results.append([y.detach(), x.grad, ffn.w1.grad, ffn.w2.grad])
    for plain, checkpointed in zip(*results):
        assert rel_err(checkpointed, plain) < 1e-3
