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
from act24.bench.common import cuda_graph_replay, host_issue_ms, median_ms


def host_time_by_call(step, steps: int = 50) -> str:
    """Host time of the training ops' main calls (no synchronisation: what each costs to issue)."""
    import collections

    from act24 import reference
    from act24.gemm import cusparselt
    from act24.ops import sparse_training_ops as ops

    spent = collections.defaultdict(float)
    patched = [(ops, "backward_pack"), (ops, "sparsify_pack"), (ops, "transpose"), (cusparselt, "sparse_mm"),
               (reference, "densest_features"), (reference, "cached_token_permutation")]
    originals = [(owner, name, getattr(owner, name)) for owner, name in patched]

    def timed(name, fn):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
        return call

    for owner, name, fn in originals:
        setattr(owner, name, timed(name, fn))
    try:
        per_step_ms = host_issue_ms(step, calls=steps, warmup=0)
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)
    lines = [f"host time per step by call (us), {per_step_ms * 1e3:.0f} in all:"]
    lines += [f"  {name:<26} {t / steps * 1e6:8.1f}" for name, t in sorted(spent.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


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

    n = 50
    issued = host_issue_ms(step, calls=n, warmup=5)
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
    report.append(host_time_by_call(step))
    text = "\n".join(report)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile_host.txt").write_text(text)
    print(text[:3000])


if __name__ == "__main__":
    main()
