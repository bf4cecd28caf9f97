"""Where the training step's time goes under each combination of the fused kernels: GPU time per kernel
(torch.profiler, a few steps per arm; scripts/profile_prefill.py: kernel_times) and the SM clock and power while the arm's step repeats. Writes
OUT/fused_step_probe.json.

Usage: PYTHONPATH=src python scripts/probe_fused_step.py OUT [T,d,H] (default 16384,4096,16384)
"""

import argparse
import sys
import time

import torch

sys.path.insert(0, "scripts")
from ab_fused_backward import arm  # noqa: E402
from profile_prefill import kernel_times  # noqa: E402

from act24.bench.common import header, write_result  # noqa: E402
from act24.bench.ffn_forward import compiled_baseline_and_operands  # noqa: E402
from act24.bench.ffn_train import DENSE_FRACTION, act24_train_ffn, train_step  # noqa: E402
from act24.bench.gpu_sampler import GpuSampler  # noqa: E402
from act24.reference import dense_feature_count  # noqa: E402

STEPS = 5


def repeated(step, seconds=3.0) -> dict:
    with GpuSampler() as sampler:
        torch.cuda.synchronize()
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            step()
            n += 1
        torch.cuda.synchronize()
        ms = (time.perf_counter() - start) * 1000 / n
    return {"ms_per_step": ms, **sampler.summary()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("shape", nargs="?", default="16384,4096,16384")
    args = parser.parse_args()
    T, d, H = map(int, args.shape.split(","))
    _, x, w1, w2 = compiled_baseline_and_operands(T, d, H)
    dy = torch.randn_like(x)
    xs, w1s, w2s = (t.detach().requires_grad_() for t in (x, w1, w2))
    step = train_step(act24_train_ffn(dense_feature_count(H, DENSE_FRACTION)), xs, w1s, w2s, dy)
    arms = {"unfused": arm(False, False), "gemm1": arm(True, False), "dy2": arm(False, True), "both": arm(True, True)}
    rows = {}
    for rnd in range(2):
        for name, setup in (arms.items() if rnd == 0 else reversed(arms.items())):
            with setup():
                step()
                torch.cuda.synchronize()
                r = {"repeated": repeated(step)}
                if rnd == 0:
                    r["kernels_ms"] = dict(list(kernel_times(step, reps=STEPS).items())[:16])
            rows.setdefault(name, []).append(r)
            print(name, r, flush=True)
    write_result(args.out, "fused_step_probe", {**header(), "T": T, "d": d, "H": H, "arms": rows})


if __name__ == "__main__":
    main()
