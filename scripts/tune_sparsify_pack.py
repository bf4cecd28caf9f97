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
for rb, cb in [(1, 1), (1, 2), (1, 4), (1, 8), (2, 2), (2, 4), (4, 2)]:
    for warps in (2, 4, 8):
        for name, y1 in inputs.items():
            ms = triton.testing.do_bench(
                lambda: sparsify_pack(y1, rows_per_program=rb, cols_per_program=cb, num_warps=warps), return_mode="median"
            )
            rows.append({"config": f"rb={rb} cb={cb} warps={warps}", "input": name, "ms": ms, "GBps": moved / ms / 1e6})
(out / "tune_sparsify_pack.json").write_text(json.dumps(rows, indent=1))
for r in sorted(rows, key=lambda r: r["ms"])[:12]:
    print(f"{r['config']:<24} {r.get('input', ''):<10} {r['ms']:.4f} ms {r['GBps']:.0f} GB/s")
