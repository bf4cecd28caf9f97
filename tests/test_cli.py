import json
import subprocess
import sys

from act24.cli import main


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["torch"] and env["backend"] in {"reference", "dense-fallback", "cusparselt"}
    assert env["backend_reason"]


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "act24", "--help"], capture_output=True, text=True, check=True).stdout
    assert "info" in out
