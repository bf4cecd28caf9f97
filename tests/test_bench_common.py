"""What every benchmark result records about the code it measured."""

import subprocess
import sys
import time
import types

import torch

from act24.bench import common, gpu_sampler
from act24.bench.gpu_sampler import GpuSampler

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


def test_alternating_medians_times_each_fn_in_both_places_after_one_warm_up(monkeypatch):
    order = []
    timings = {"a": iter([5.0, 1.0, 2.0, 9.0, 3.0, 4.0]), "b": iter([7.0, 7.0, 8.0, 8.0, 6.0, 6.0])}

    def fake_median_ms(fn):
        name = fn()
        return next(timings[name])

    monkeypatch.setattr(common, "median_ms", fake_median_ms)
    medians = common.alternating_medians({"a": lambda: order.append("a") or "a",
                                          "b": lambda: order.append("b") or "b"}, rounds=3)
    assert order == ["a", "b"] + ["a", "b", "b", "a"] * 3  # warm-up, then A B B A rounds
    assert medians == {"a": 3.5, "b": 7.0}


def test_gpu_sampler_reads_clock_power_and_temperature(monkeypatch):
    monkeypatch.setattr(GpuSampler, "QUERY", [sys.executable, "-c", "print('1515, 690.5, 61')"])
    with GpuSampler() as gpu:
        time.sleep(0.3)
    assert gpu.summary()["sm_clock_mhz"] == 1515 and gpu.summary()["power_w"] == 690.5
    assert gpu.summary()["temperature_c"] == 61 and gpu.summary()["samples"] >= 1


def test_gpu_sampler_without_nvidia_smi_reports_nothing(monkeypatch):
    monkeypatch.setattr(GpuSampler, "QUERY", ["/nonexistent/nvidia-smi"])
    with GpuSampler() as gpu:
        pass
    assert gpu.summary() == {}


def test_gpu_sampler_names_the_gpu_by_uuid(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: types.SimpleNamespace(uuid="1-2"))
    assert gpu_sampler.nvidia_smi_id() == "GPU-1-2"
    assert GpuSampler().command[-2:] == ["-i", "GPU-1-2"]
