"""Where a prefill's GPU time goes, dense against sparse FFNs: torch.profiler's CUDA kernels of one
forward of the Nemotron-like model of `act24 bench prefill` at T tokens in each mode, grouped by
kernel, with each mode's prefill time and one FFN's alone, and the GPU's SM clock, power and
temperature (nvidia-smi, sampled while each mode runs for a second). The modes run in the order
dense, sparse, sparse, dense, so drift over time falls on both.
Writes OUT/profile_prefill.json and prints the tables.

Usage: PYTHONPATH=src python scripts/profile_prefill.py OUT [--tokens 16384]
"""

from __future__ import annotations

import argparse
import collections

import torch
from torch.profiler import ProfilerActivity, profile

from act24.bench.common import header, median_ms, write_result
from act24.bench.gpu_sampler import GpuSampler
from act24.bench.prefill import build_model
from act24.ffn import ffn_modules, set_sparse


def kernel_times(fn, reps: int = 3) -> dict[str, float]:
    """Mean GPU ms per call of fn, by kernel name (device-side time only)."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    times = collections.Counter()
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            times[event.name[:90]] += event.device_time / 1e3 / reps
    return dict(times.most_common())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--tokens", type=int, default=16384)
    args = p.parse_args()
    model, _ = build_model("1b", torch.device("cuda"), torch.bfloat16)
    ids = torch.randint(3, model.config.vocab_size, (1, args.tokens), device="cuda")
    mlp = ffn_modules(model)[0]
    x = torch.randn(1, args.tokens, model.config.hidden_size, device="cuda", dtype=torch.bfloat16)
    result = {**header(), "tokens": args.tokens, "runs": []}
    with torch.inference_mode():
        for mode in ("dense", "sparse", "sparse", "dense"):
            set_sparse(model, mode == "sparse")
            kernels = kernel_times(lambda: model(ids, use_cache=False, logits_to_keep=1))
            with GpuSampler() as gpu:
                prefill_ms = median_ms(lambda: model(ids, use_cache=False, logits_to_keep=1), rep_ms=1000)
            result["runs"].append({
                "mode": mode,
                "prefill_ms": prefill_ms,
                **gpu.summary(),
                "ffn_alone_ms": median_ms(lambda: mlp(x)),
                "kernels_total_ms": sum(kernels.values()),
                "kernels": kernels,
            })
    for r in result["runs"]:
        print(f"== {r['mode']}: prefill {r['prefill_ms']:.2f} ms, kernels {r['kernels_total_ms']:.2f} ms, "
              f"one FFN alone {r['ffn_alone_ms']:.3f} ms, SM clock {r.get('sm_clock_mhz')} MHz, "
              f"power {r.get('power_w')} W, up to {r.get('temperature_c')} C")
        for name, ms in list(r["kernels"].items())[:10]:
            print(f"  {ms:8.3f}  {name}")
    write_result(args.out, "profile_prefill", result)


if __name__ == "__main__":
    main()
