"""What every benchmark result records about the code it measured."""

import subprocess

from act24.bench import common

SHA = "0123456789abcdef0123456789abcdef01234567"


def _git(status: str):
    def check_output(args, **kwargs):
        return {"rev-parse": SHA + "\n", "status": status}[args[1]]
    return check_output


def test_commit_is_flagged_when_tracked_files_changed(monkeypatch):
    monkeypatch.delenv("ACT24_COMMIT", raising=False)
    monkeypatch.setattr(subprocess, "check_output", _git(""))
    assert common.commit() == SHA
    monkeypatch.setattr(subprocess, "check_output", _git(" M src/act24/ffn/module.py\n"))
    assert common.commit() == SHA + "-dirty"
    monkeypatch.setenv("ACT24_COMMIT", "abc")  # a copy without .git names its commit
    assert common.commit() == "abc"


def test_host_issue_time_counts_the_calls_after_the_warm_up():
    calls = []
    ms = common.host_issue_ms(lambda: calls.append(1), calls=7, warmup=2)
    assert len(calls) == 9 and ms >= 0
