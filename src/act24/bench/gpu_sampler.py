"""The GPU's SM clock, power and temperature while a benchmark runs: the H200 runs large GEMMs at its
power cap, where the clock follows the power a kernel draws, so timings are read beside the clock."""

from __future__ import annotations

import statistics
import subprocess
import threading
import time


class GpuSampler:
    """SM clock (MHz), power (W) and temperature (C) from nvidia-smi every ~0.1 s while in the `with`."""

    QUERY = ["nvidia-smi", "--query-gpu=clocks.sm,power.draw,temperature.gpu", "--format=csv,noheader,nounits",
             "-i", "0"]

    def __enter__(self):
        self.samples, self.running = [], True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while self.running:
            try:
                out = subprocess.run(self.QUERY, capture_output=True, text=True, timeout=5).stdout
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
