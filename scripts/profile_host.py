"""Where the host time of a sparse FFN training step goes: cProfile and torch.profiler (CPU ops and
CUDA runtime calls) of forward + backward through `SquaredReLUFFN` at a small, host-bound shape, and
the step's host issue time against its GPU time.
Writes OUT/profile_host.txt.

Usage: PYTHONPATH=src python scripts/profile_host.py OUT [--tokens 2048] [--shape 2048 8192]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pathlib
import pstats
import time

import torch

from act24 import SquaredReLUFFN
from act24.bench.common import cuda_graph_replay, median_ms


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--shape", type=int, nargs=2, default=(2048, 8192))
    args = p.parse_args()
    d, hidden = args.shape
    ffn = SquaredReLUFFN(d, hidden, sparse=True, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(args.tokens, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(args.tokens, d, device="cuda", dtype=torch.bfloat16)

    def step():
        ffn(x).backward(dy)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    n = 50
    start = time.perf_counter()
    for _ in range(n):
        step()
    issued = (time.perf_counter() - start) / n * 1e3
    torch.cuda.synchronize()
    report = [f"T={args.tokens} d={d} H={hidden}: host issue {issued:.3f} ms/step, "
              f"plain {median_ms(step):.3f} ms, CUDA graph {median_ms(cuda_graph_replay(step)):.3f} ms"]
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        step()
    profiler.disable()
    torch.cuda.synchronize()
    for key in ("tottime", "cumulative"):
        s = io.StringIO()
        pstats.Stats(profiler, stream=s).sort_stats(key).print_stats(35)
        report.append(s.getvalue())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            step()
        torch.cuda.synchronize()
    report.append(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40))
    text = "\n".join(report)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile_host.txt").write_text(text)
    print(text[:3000])


if __name__ == "__main__":
    main()
