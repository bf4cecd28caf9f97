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
