"""The GPU's SM clock, power and temperature while a benchmark runs: the H200 runs large GEMMs at its
power cap, where the clock follows the power a kernel draws, so timings are read beside the clock."""

from __future__ import annotations

import statistics
import subprocess
import threading
import time

import torch


def nvidia_smi_id(device=None) -> str | None:
    """nvidia-smi's name for a CUDA device (default: the current one): its UUID, which unlike an index
    does not depend on CUDA_VISIBLE_DEVICES; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    return f"GPU-{torch.cuda.get_device_properties(device).uuid}"


class GpuSampler:
    """SM clock (MHz), power (W) and temperature (C) of one GPU (default: the current device) from
    nvidia-smi every ~0.1 s while in the `with`."""

    QUERY = ["nvidia-smi", "--query-gpu=clocks.sm,power.draw,temperature.gpu", "--format=csv,noheader,nounits"]

    def __init__(self, device=None):
        gpu = nvidia_smi_id(device)
        self.command = self.QUERY + (["-i", gpu] if gpu is not None else [])

    def __enter__(self):
        self.samples, self.running = [], True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while self.running:
            try:
                out = subprocess.run(self.command, capture_output=True, text=True, timeout=5).stdout
                self.samples.append([float(v) for v in out.strip().split(",")])
            except (OSError, ValueError, subprocess.SubprocessError):
                return
            time.sleep(0.1)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {}
        cols = list(zip(*self.samples))
        return {"sm_clock_mhz": statistics.median(cols[0]), "power_w": statistics.median(cols[1]),
                "temperature_c": max(cols[2]), "samples": len(self.samples)}
