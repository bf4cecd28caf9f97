import json
import subprocess
import sys

from act24.cli import main


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["torch"] and env["backend"] in {"reference", "dense-fallback", "cusparselt"}
    assert env["backend_reason"]
    # how 2:4 GEMMs reach cuSPARSELt, where they do
    assert (env["cusparselt_calls"] is None) == (env["backend"] != "cusparselt")
    if env["backend"] == "cusparselt":
        assert env["cusparselt_calls"].startswith(("planned", "through torch"))


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "act24", "--help"], capture_output=True, text=True, check=True).stdout
    assert "info" in out


def test_bench_prefill_tiny_on_cpu(tmp_path, capsys):
    import pytest
    import torch

    pytest.importorskip("transformers")
    if torch.cuda.is_available():
        pytest.skip("the GPU runs the 1b config; covered by the GPU script")
    assert main(["bench", "prefill", "--config", "tiny", "--tokens", "64", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "prefill.json").read_text())
    row = result["rows"][0]
    assert row["T"] == 64 and row["dense_ms"] > 0 and row["sparse_ms"] > 0 and row["decode_dense_tok_s"] > 0
    assert row["decode_ratio"] > 0
    assert result["converted_mlps"] == 2 and 0 < row["act_sparsity"] < 1
    assert {"logits_rel_err", "greedy_token_agreement"} <= set(result["agreement"])


def test_train_rejects_bad_settings_with_the_flag_name(tmp_path, capsys):
    assert main(["train", "--steps", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main(["train", "--lr", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "--lr" in capsys.readouterr().err
    assert main(["train", "--seq-len", "0", "--out", str(tmp_path / "r")]) == 2
    assert "seq_len (--seq-len) must be a positive int, got 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_train_names_missing_data(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_bench_keeps_another_machine_s_results(tmp_path, capsys):
    kept = json.dumps({"gpu": "NVIDIA H200", "rows": []})
    (tmp_path / "prefill.json").write_text(kept)
    assert main(["bench", "prefill", "--config", "tiny", "--tokens", "64", "--out", str(tmp_path)]) == 2
    assert "holds results measured on NVIDIA H200" in capsys.readouterr().err
    assert (tmp_path / "prefill.json").read_text() == kept


def test_bench_ffn_rejects_shapes_the_packers_cannot_take(capsys):
    assert main(["bench", "ffn", "--tokens", "100", "--shape", "4096", "16384"]) == 2
    assert "positive multiples of 64 (the packers' row and column blocks), got [100]" in capsys.readouterr().err


def _saved_tiny(tmp_path, name, **overrides):
    import pytest
    import torch

    transformers = pytest.importorskip("transformers")
    config = dict(vocab_size=97, hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    model = getattr(transformers, f"{name}ForCausalLM")(getattr(transformers, f"{name}Config")(**{**config, **overrides}))
    path = tmp_path / name.lower()
    model.save_pretrained(path)
    return str(path)


def test_bench_prefill_of_a_saved_model_on_cpu(tmp_path, capsys):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU timing test")
    path = _saved_tiny(tmp_path, "Nemotron")
    out = tmp_path / "out"
    assert main(["bench", "prefill", "--model", path, "--tokens", "64", "--out", str(out)]) == 0
    result = json.loads((out / "prefill.json").read_text())
    assert result["model"].startswith(f"NemotronForCausalLM, from {path}")
    assert result["config"] == {"path": path, "d": 32, "hidden": 128} and result["converted_mlps"] == 2
    assert result["rows"][0]["T"] == 64 and result["rows"][0]["sparse_ms"] > 0


def test_bench_prefill_names_what_is_wrong_with_a_model(tmp_path, capsys):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU test")
    out = str(tmp_path / "out")
    assert main(["bench", "prefill", "--model", str(tmp_path / "nowhere"), "--tokens", "64", "--out", out]) == 2
    assert "could not be loaded as a causal LM" in capsys.readouterr().err
    assert main(["bench", "prefill", "--model", _saved_tiny(tmp_path, "Llama"), "--tokens", "64", "--out", out]) == 2
    assert "found no non-gated Squared-ReLU MLP to convert" in capsys.readouterr().err
    assert main(["bench", "prefill", "--model", _saved_tiny(tmp_path, "Nemotron"), "--tokens", "250", "--out",
                 out]) == 2
    assert "--tokens [250]: the model takes at most max_position_embeddings=256 positions" in capsys.readouterr().err
    assert main(["bench", "prefill", "--config", "tiny", "--model", "x", "--out", out]) == 2
    assert "--config and --model" in capsys.readouterr().err
    assert main(["bench", "prefill", "--config", "tiny", "--trust-remote-code", "--out", out]) == 2
    assert "--trust-remote-code applies to --model only" in capsys.readouterr().err
    assert not (tmp_path / "out" / "prefill.json").exists()


def test_bench_prefill_default_prompts_fit_the_model():
    import pytest
    import torch

    from act24.bench import prefill

    gpu, extra = torch.device("cuda"), prefill.extra_tokens(torch.device("cuda"))
    cpu, cpu_extra = torch.device("cpu"), prefill.extra_tokens(torch.device("cpu"))
    assert prefill.default_tokens(gpu, None) == prefill.TOKENS
    assert prefill.default_tokens(gpu, 16384 + extra) == (2048, 4096, 8192, 16384)
    assert prefill.default_tokens(gpu, 2048) == ((2048 - extra) // 64 * 64,)  # none of TOKENS fits: the longest that does
    assert prefill.default_tokens(cpu, 4096) == prefill.SHORT_TOKENS
    assert prefill.default_tokens(cpu, 127 + cpu_extra) == (64,)
    with pytest.raises(RuntimeError, match="max_position_embeddings=90 positions: too few for a 64-token prompt"):
        prefill.default_tokens(cpu, 90)


def test_bench_prefill_load_errors_keep_a_reason(monkeypatch):
    import pytest

    transformers = pytest.importorskip("transformers")
    from act24.bench import prefill

    calls = []

    def fail(*args, **kwargs):
        calls.append(kwargs)
        raise ImportError()  # a model whose code needs a package that is missing, with no message

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fail)
    with pytest.raises(RuntimeError, match="could not be loaded as a causal LM: ImportError$"):
        prefill.load_model("some/model", None, None, trust_remote_code=True)
    assert calls[0]["trust_remote_code"] is True
