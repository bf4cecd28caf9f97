"""Time the packer's launch configurations on the GPU: python scripts/tune_sparsify_pack.py OUTDIR."""

import json
import pathlib
import sys

import torch
import triton.testing

from act24.bench.ffn_forward import realistic_operands
from act24.kernels.sparsify_pack import sparsify_pack

out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
T, H, d = 16384, 16384, 4096
x, w1, _ = realistic_operands(T, d, H)
inputs = {"realistic": x @ w1.t(), "random": torch.randn(T, H, device="cuda", dtype=torch.bfloat16)}
moved = T * H * 2 + T * H * 9 // 8
copy_ms = triton.testing.do_bench(lambda: inputs["random"].clone(), return_mode="median")
rows = [{"config": "clone (copy ceiling)", "ms": copy_ms, "GBps": 2 * T * H * 2 / copy_ms / 1e6}]
for blocks in (8, 16, 32):
    for cb in (1, 2):
        for warps in (4, 8):
            y1 = inputs["realistic"]
            ms = triton.testing.do_bench(
                lambda: sparsify_pack(y1, blocks_per_program=blocks, cols_per_program=cb, num_warps=warps),
                return_mode="median",
            )
            rows.append({"config": f"blocks={blocks} cb={cb} warps={warps}", "ms": ms, "GBps": moved / ms / 1e6})
            print(rows[-1], flush=True)
best = min(rows[1:], key=lambda r: r["ms"])
rand_ms = triton.testing.do_bench(lambda: sparsify_pack(inputs["random"]), return_mode="median")
rows.append({"config": "default, random input", "ms": rand_ms, "GBps": moved / rand_ms / 1e6})
(out / "tune_sparsify_pack.json").write_text(json.dumps(rows, indent=1))
for r in [rows[0], rows[-1]] + sorted(rows[1:-1], key=lambda r: r["ms"])[:10]:
    print(f"{r['config']:<28} {r['ms']:.4f} ms {r['GBps']:.0f} GB/s")
