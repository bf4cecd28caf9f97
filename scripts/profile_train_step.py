"""The GPU timeline of one FFN training step (forward + backward), act24 and compiled dense: each
kernel's duration and the idle gaps between kernels, from torch.profiler, after warm-up steps.
Writes OUT/profile_train_step.json.

Usage: PYTHONPATH=src python scripts/profile_train_step.py OUT [T,d,H]   (default 16384,4096,16384)
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from act24.bench.common import header, write_result
from act24.bench.ffn_forward import compiled_baseline_and_operands
from act24.bench.ffn_train import DENSE_FRACTION, act24_train_ffn, train_step
from act24.reference import dense_feature_count


def timeline(step) -> dict:
    """The kernels of one profiled step after three unprofiled ones, in start order."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    kernels = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                     if e.device_type == torch.autograd.DeviceType.CUDA)
    rows = [{"kernel": name[:120], "us": end - start,
             "gap_before_us": start - kernels[i - 1][1] if i else 0.0}
            for i, (start, end, name) in enumerate(kernels)]
    span = kernels[-1][1] - kernels[0][0]
    busy = sum(r["us"] for r in rows)
    return {"span_ms": span / 1e3, "kernel_ms": busy / 1e3, "idle_ms": (span - busy) / 1e3,
            "kernels": len(rows), "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("shape", nargs="?", default="16384,4096,16384", help="T,d,H")
    args = p.parse_args()
    T, d, H = map(int, args.shape.split(","))
    compiled, x, w1, w2 = compiled_baseline_and_operands(T, d, H)
    dy = torch.randn_like(x)
    xs, w1s, w2s = (t.detach().requires_grad_() for t in (x, w1, w2))
    num_dense = dense_feature_count(H, DENSE_FRACTION)
    result = {"T": T, "d": d, "H": H}
    for name, forward in (("act24", act24_train_ffn(num_dense)), ("compiled_dense", compiled)):
        result[name] = timeline(train_step(forward, xs, w1s, w2s, dy))
        print(name, {k: v for k, v in result[name].items() if k != "rows"}, flush=True)
    for r in result["act24"]["rows"]:
        print(f"  {r['us']:8.1f} us  gap {r['gap_before_us']:7.1f}  {r['kernel'][:90]}")
    write_result(args.out, "profile_train_step", {**header(), **result})


if __name__ == "__main__":
    main()
