"""Where the sparse forward's time goes: python scripts/profile_forward.py OUTDIR [T d H]."""

import json
import pathlib
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from act24 import functional
from act24.bench.ffn_forward import realistic_operands

out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
T, d, H = (int(v) for v in sys.argv[2:5]) if len(sys.argv) >= 5 else (16384, 4096, 16384)
x, w1, w2 = realistic_operands(T, d, H)
with torch.inference_mode():
    for _ in range(3):
        functional.sparse_ffn_forward(x, w1, w2)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            functional.sparse_ffn_forward(x, w1, w2)
        torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))
kernels = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA), key=lambda e: e.time_range.start)
span = (kernels[-1].time_range.end - kernels[0].time_range.start) / 1e3
busy = sum(e.time_range.elapsed_us() for e in kernels) / 1e3
gaps = [(b.time_range.start - a.time_range.end, a.name[:40], b.name[:40]) for a, b in zip(kernels, kernels[1:])]
gaps.sort(reverse=True)
summary = {"span_ms": span, "busy_ms": busy, "per_iter_ms": span / 5, "largest_gaps_us": gaps[:8]}
print(json.dumps(summary, indent=1))
(out / "profile_forward.json").write_text(json.dumps(summary, indent=1))
