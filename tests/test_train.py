import json
import pathlib

import pytest
import torch

from act24.cli import main
from act24.model import DecoderLM, ModelConfig, preset
from act24.train import TrainConfig, Trainer, load_corpus

SMALL = ModelConfig(d_model=32, n_layers=2, n_heads=2, seq_len=32, hidden=64)


def _losses(out: pathlib.Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _cfg(steps):
    return TrainConfig(steps=steps, batch_size=4, log_interval=1, eval_interval=3, eval_batches=2,
                       checkpoint_interval=3, dense_warmup_steps=4)


def test_training_reduces_loss_switches_to_sparse_and_resumes_exactly(text_dir, tmp_path):
    corpus = load_corpus(text_dir)
    straight = Trainer(SMALL, _cfg(12), corpus, tmp_path / "a", torch.device("cpu"), progress=False)
    summary = straight.run()
    losses = _losses(tmp_path / "a")
    assert losses[12] < losses[1]
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["sparse"] for r in rows if "loss" in r][3:5] == [False, True]  # 2:4 from step 4 (0-based)
    assert 0 < summary["act_sparsity"] < 1 and "val_loss" in summary
    assert (tmp_path / "a" / "loss.png").exists() and (tmp_path / "a" / "sparsity.png").exists()

    # the same run interrupted (Ctrl-C) at step 7, then resumed: the same trajectory
    interrupted = Trainer(SMALL, _cfg(12), corpus, tmp_path / "b", torch.device("cpu"), progress=False)
    _interrupt_at(interrupted, 7)
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    resumed = Trainer(SMALL, _cfg(12), corpus, tmp_path / "b", torch.device("cpu"), resume=True, progress=False)
    assert resumed.step == 7
    resumed.run()
    assert _losses(tmp_path / "b") == losses


def _interrupt_at(trainer, step):
    """Make the trainer see Ctrl-C when it is about to run `step`."""
    original = trainer._train_step

    def step_then_interrupt(track_stats):
        if trainer.step == step:
            raise KeyboardInterrupt
        return original(track_stats)

    trainer._train_step = step_then_interrupt


def test_ctrl_c_inside_a_step_resumes_exactly(text_dir, tmp_path):
    corpus = load_corpus(text_dir)
    Trainer(SMALL, _cfg(9), corpus, tmp_path / "a", torch.device("cpu"), progress=False).run()
    trainer = Trainer(SMALL, _cfg(9), corpus, tmp_path / "b", torch.device("cpu"), progress=False)

    def interrupt(module, args):  # after the batch was drawn
        if trainer.step == 5:
            raise KeyboardInterrupt

    handle = trainer.model.register_forward_pre_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    handle.remove()
    Trainer(SMALL, _cfg(9), corpus, tmp_path / "b", torch.device("cpu"), resume=True, progress=False).run()
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")


def test_ctrl_c_during_the_optimizer_update_stops_after_the_step(text_dir, tmp_path):
    """A real SIGINT inside optimizer.step(): the step completes, the checkpoint holds it with its
    own count, and the resumed run follows the uninterrupted trajectory."""
    import signal

    corpus = load_corpus(text_dir)
    Trainer(SMALL, _cfg(9), corpus, tmp_path / "a", torch.device("cpu"), progress=False).run()
    trainer = Trainer(SMALL, _cfg(9), corpus, tmp_path / "b", torch.device("cpu"), progress=False)

    def interrupt(optimizer, args, kwargs):
        if trainer.step == 5:
            signal.raise_signal(signal.SIGINT)

    trainer.optimizer.register_step_post_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 6
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    Trainer(SMALL, _cfg(9), corpus, tmp_path / "b", torch.device("cpu"), resume=True, progress=False).run()
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")


def test_compiled_blocks_train_through_the_switch_to_2_4(text_dir, tmp_path):
    """Every block compiles from one forward: per-layer seeds must not make each layer recompile
    (fullgraph compiles fail hard past the recompile limit of 8)."""
    cfg = TrainConfig(steps=6, batch_size=2, log_interval=2, eval_interval=3, eval_batches=1, dense_warmup_steps=2,
                      compile=True)
    model = ModelConfig(d_model=32, n_layers=9, n_heads=2, seq_len=32, hidden=64)
    summary = Trainer(model, cfg, load_corpus(text_dir), tmp_path / "c", torch.device("cpu"), progress=False).run()
    assert summary["step"] == 6 and summary["sparse"] is True


def test_a_diverged_run_never_overwrites_its_checkpoint(text_dir, tmp_path):
    """Losses are checked before every checkpoint, not only on logging steps."""
    cfg = TrainConfig(steps=40, batch_size=4, lr=1e4, log_interval=40, eval_interval=40, checkpoint_interval=1,
                      dense_warmup_steps=0)
    trainer = Trainer(SMALL, cfg, load_corpus(text_dir), tmp_path / "n", torch.device("cpu"), progress=False)
    with pytest.raises(FloatingPointError, match="last checkpoint was left as it was"):
        trainer.run()
    state = torch.load(tmp_path / "n" / "checkpoint.pt", weights_only=True)
    assert state["step"] < trainer.step
    assert all(t.isfinite().all() for t in state["model"].values())


def test_ctrl_c_saves_a_checkpoint(text_dir, tmp_path):
    trainer = Trainer(SMALL, _cfg(10), load_corpus(text_dir), tmp_path / "r", torch.device("cpu"), progress=False)
    _interrupt_at(trainer, 2)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2


def test_refuses_to_overwrite_or_resume_into_another_model(text_dir, tmp_path):
    corpus = load_corpus(text_dir)
    Trainer(SMALL, _cfg(3), corpus, tmp_path / "r", torch.device("cpu"), progress=False).run()
    before = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(SMALL, _cfg(3), corpus, tmp_path / "r", torch.device("cpu"), progress=False)
    other = ModelConfig(d_model=32, n_layers=3, n_heads=2, seq_len=32, hidden=64)
    with pytest.raises(ValueError, match="n_layers"):
        Trainer(other, _cfg(6), corpus, tmp_path / "r", torch.device("cpu"), resume=True, progress=False)
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == before
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(SMALL, _cfg(3), corpus, tmp_path / "new", torch.device("cpu"), resume=True, progress=False)


def test_a_fresh_run_neither_rewrites_nor_appends_to_old_metrics(text_dir, tmp_path):
    """Metrics left by a run that stopped before its first checkpoint: refused, left as they are."""
    out = tmp_path / "m"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 5, "loss": 1.0}\n')
    with pytest.raises(FileExistsError, match="metrics.jsonl exists from an earlier run"):
        Trainer(SMALL, _cfg(3), load_corpus(text_dir), out, torch.device("cpu"), progress=False)
    assert (out / "metrics.jsonl").read_text() == '{"step": 5, "loss": 1.0}\n'


def test_resume_refuses_other_training_settings_or_data(text_dir, tmp_path):
    corpus = load_corpus(text_dir)
    Trainer(SMALL, _cfg(3), corpus, tmp_path / "r", torch.device("cpu"), progress=False).run()
    before = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    for changed in (dict(lr=1e-2), dict(seed=1), dict(dense_warmup_steps=2), dict(batch_size=8)):
        cfg = TrainConfig(**{**_cfg(3).__dict__, **changed})
        with pytest.raises(ValueError, match=f"other settings.*{next(iter(changed))}"):
            Trainer(SMALL, cfg, corpus, tmp_path / "r", torch.device("cpu"), resume=True, progress=False)
    other_data = text_dir.parent / "other"
    other_data.mkdir()
    (other_data / "a.txt").write_text("other text " * 500)
    with pytest.raises(ValueError, match="'data'"):
        Trainer(SMALL, _cfg(3), load_corpus(other_data), tmp_path / "r", torch.device("cpu"), resume=True,
                progress=False)
    # what may change: intervals, and the length (to extend a run) with the warm-ups the run had
    cfg = TrainConfig(**{**_cfg(3).__dict__, "log_interval": 2, "eval_interval": 5, "steps": 30, "lr_warmup_steps": 1})
    Trainer(SMALL, cfg, corpus, tmp_path / "r", torch.device("cpu"), resume=True, progress=False)
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == before


def test_cuda_graphs_refuse_what_they_cannot_capture(text_dir, tmp_path):
    cfg = TrainConfig(steps=3, batch_size=4, cuda_graphs=True)
    with pytest.raises(ValueError, match="--cuda-graphs needs one CUDA device"):
        Trainer(SMALL, cfg, load_corpus(text_dir), tmp_path / "g", torch.device("cpu"), progress=False)
    assert not (tmp_path / "g" / "checkpoint.pt").exists()


def test_bad_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_corpus(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no text files"):
        load_corpus(tmp_path / "empty")
    (tmp_path / "blank.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_corpus(tmp_path / "blank.txt")
    (tmp_path / "short.txt").write_text("too short for a sequence")
    with pytest.raises(ValueError, match="fewer than one sequence"):
        Trainer(SMALL, _cfg(3), load_corpus(tmp_path / "short.txt"), tmp_path / "o", torch.device("cpu"), progress=False)
    assert not (tmp_path / "o").exists()  # a refused run leaves no folder behind
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"content": 1}\n')
    with pytest.raises(ValueError, match='"text" string'):
        load_corpus(tmp_path / "bad.jsonl")


def test_documents_that_all_hash_into_validation_still_split(tmp_path):
    for name in ("part10.txt", "part11.txt", "__init__.py"):  # the first two hash into validation
        (tmp_path / name).write_text("" if name == "__init__.py" else name * 500)
    corpus = load_corpus(tmp_path)
    assert corpus.train.numel() > 0 and corpus.val.numel() > 0


def test_jsonl_and_stdlib_corpus(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "a" * 500}) + "\n" + json.dumps({"text": "b" * 500}) + "\n")
    corpus = load_corpus(tmp_path / "d.jsonl")
    assert corpus.train.numel() + corpus.val.numel() == 1002
    stdlib = load_corpus()
    assert stdlib.files > 100 and stdlib.val.numel() > 10_000


def test_a_model_built_on_meta_then_loaded_trains_like_the_original():
    """The FFNs' seeds stay on the CPU: a meta seed would send the ops to their fake kernels."""
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, seq_len=32, hidden=64)
    torch.manual_seed(0)
    original = DecoderLM(cfg)
    with torch.device("meta"):
        torch.manual_seed(0)
        model = DecoderLM(cfg)
    model.to_empty(device="cpu")
    model.load_state_dict(original.state_dict())
    model.rope_cos, model.rope_sin = original.rope_cos, original.rope_sin  # buffers recomputed at init
    for m in (original, model):
        m.set_sparse(True)
    for f, g in zip(model.ffn_modules(), original.ffn_modules()):
        g.perm_seed = f.perm_seed  # drawn from the generator, which meta initialisation does not advance
    tokens = torch.randint(0, 256, (2, 32))
    loss = model(tokens, tokens)[1]
    assert torch.equal(loss, original(tokens, tokens)[1])
    loss.backward()
    assert all(p.grad.isfinite().all() for p in model.parameters())


def test_resume_names_file_data_by_its_absolute_path(text_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(text_dir.parent)
    flags = ["--steps", "3", "--batch-size", "2", "--seq-len", "32", "--quiet", "--out", str(tmp_path / "p")]
    assert main(["train", "--data", text_dir.name, *flags[:-2], "--out", str(tmp_path / "p")]) == 0
    monkeypatch.chdir(tmp_path.parent)  # elsewhere: the relative path would not resolve
    assert main(["train", "--resume", "--steps", "4", "--quiet", "--out", str(tmp_path / "p")]) == 0
    assert main(["train", "--resume", "--steps", "5", "--quiet", "--data", str(text_dir), "--out",
                 str(tmp_path / "p")]) == 0


def test_model_configs():
    with torch.device("meta"):  # how large models are built for FSDP
        sizes = {name: DecoderLM(preset(name)).num_params() / 1e6 for name in ("25m", "125m", "1b")}
    assert 22 < sizes["25m"] < 28 and 115 < sizes["125m"] < 135 and 1000 < sizes["1b"] < 1300
    relu2 = DecoderLM(preset("tiny", ffn="relu2")).num_params()
    swiglu = DecoderLM(preset("tiny", ffn="swiglu")).num_params()
    assert abs(relu2 - swiglu) / relu2 < 0.05  # SwiGLU's hidden size matches parameters
    with pytest.raises(ValueError, match="ffn must be one of"):
        ModelConfig(ffn="gelu")
    with pytest.raises(ValueError, match="multiple of 64"):
        ModelConfig(hidden=100)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("7b")
    with pytest.raises(ValueError, match="exceeds the model's seq_len"):
        DecoderLM(SMALL)(torch.zeros(1, 33, dtype=torch.long))


def test_cli_train(text_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--data", str(text_dir), "--steps", "4", "--batch-size", "2", "--seq-len", "32",
            "--eval-interval", "2", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert '"step": 4' in capsys.readouterr().out
    assert main(args) == 2  # would overwrite: refused
    assert "--resume" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["train", "--device", "cuda", "--out", str(tmp_path / "c")]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    assert main(["train", "--device", "gpu0", "--out", str(tmp_path / "c")]) == 2
    assert "--device gpu0" in capsys.readouterr().err


def test_cli_resume_continues_with_the_run_s_settings_and_data(text_dir, tmp_path, monkeypatch, capsys):
    flags = ["--data", str(text_dir), "--steps", "5", "--batch-size", "2", "--seq-len", "32", "--lr", "0.01",
             "--seed", "3", "--log-interval", "1", "--eval-interval", "2", "--dense-warmup-steps", "2", "--quiet"]
    assert main(["train", *flags, "--out", str(tmp_path / "a")]) == 0
    original = Trainer._train_step

    def interrupt_at_3(self, track_stats):
        if self.step == 3:
            raise KeyboardInterrupt
        return original(self, track_stats)

    monkeypatch.setattr(Trainer, "_train_step", interrupt_at_3)
    assert main(["train", *flags, "--out", str(tmp_path / "b")]) == 130
    monkeypatch.setattr(Trainer, "_train_step", original)
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--quiet"]) == 0  # no flags: the run's own
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--quiet", "--lr", "0.02"]) == 2
    assert "other settings" in capsys.readouterr().err
    # naming the run's own model flags keeps the checkpoint's other settings (its --seq-len here)
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--quiet", "--ffn", "relu2-sparse",
                 "--preset", "tiny", "--steps", "6"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--quiet", "--steps", "4"]) == 2
    assert "--steps 4 is not past the checkpoint's step 6" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--quiet", "--steps", "6"]) == 0  # finished


def test_cli_resume_explains_an_unreadable_checkpoint(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    for junk in (b"not a checkpoint\n", bytes(range(256))):
        (tmp_path / "r" / "checkpoint.pt").write_bytes(junk)
        assert main(["train", "--out", str(tmp_path / "r"), "--resume", "--quiet"]) == 2
        assert "is not a readable act24 checkpoint" in capsys.readouterr().err
        assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == junk


def test_cli_warns_when_the_run_ends_before_the_switch(text_dir, tmp_path, capsys):
    assert main(["train", "--data", str(text_dir), "--steps", "2", "--batch-size", "2", "--seq-len", "32",
                 "--dense-warmup-steps", "5", "--out", str(tmp_path / "w"), "--quiet"]) == 0
    assert "before the switch to 2:4 after step 5" in capsys.readouterr().err


def test_cli_extending_a_finished_run_keeps_its_warm_ups(text_dir, tmp_path):
    """The default dense warm-up is a quarter of the steps: more steps must not make the run dense again."""
    flags = ["--data", str(text_dir), "--batch-size", "2", "--seq-len", "32", "--log-interval", "1", "--quiet",
             "--out", str(tmp_path / "x")]
    assert main(["train", *flags, "--steps", "8"]) == 0
    assert main(["train", *flags, "--steps", "12", "--resume"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "x" / "metrics.jsonl").read_text().splitlines()]
    assert [r["sparse"] for r in rows if "loss" in r] == [False] * 2 + [True] * 10
    assert main(["train", *flags, "--resume"]) == 0  # nothing left to do: says so


def test_hugging_face_dataset_through_a_stand_in_module(monkeypatch):
    import sys
    import types

    calls = []

    def load_dataset(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        if name == "offline":
            raise ConnectionError("no network")
        if name == "no-text":
            return iter([{"content": "x"}])
        return iter({"text": f"record {i}: " + "some words here. " * 20} for i in range(60))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    corpus = load_corpus("hf:tiny:cfg")
    assert calls == [("tiny", "cfg", "train", True)]
    assert corpus.files == 60 and corpus.val.numel() > 0 and corpus.train.numel() > 10 * corpus.val.numel()
    assert "Hugging Face dataset tiny (cfg)" in corpus.source
    with pytest.raises(ValueError, match="could not load the dataset: ConnectionError"):
        load_corpus("hf:offline")
    with pytest.raises(ValueError, match='record 0 has no "text" string'):
        load_corpus("hf:no-text")
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(ValueError, match="needs the `datasets` package"):
        load_corpus("hf:tiny")
