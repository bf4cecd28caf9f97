"""Time the packer's launch configurations on the GPU: python scripts/tune_sparsify_pack.py OUTDIR."""

import json
import pathlib
import sys

import torch
import triton.testing

from act24.bench.ffn_forward import dense_ffn, realistic_operands
from act24.gemm.cusparselt import sparse_mm
from act24.kernels.sparsify_pack import sparsify_pack

out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
T, H, d = 16384, 16384, 4096
x, w1, _ = realistic_operands(T, d, H)
inputs = {"realistic": x @ w1.t(), "random": torch.randn(T, H, device="cuda", dtype=torch.bfloat16)}
moved = T * H * 2 + T * H * 9 // 8
copy_ms = triton.testing.do_bench(lambda: inputs["random"].clone(), return_mode="median")
rows = [{"config": "clone (copy ceiling)", "ms": copy_ms, "GBps": 2 * T * H * 2 / copy_ms / 1e6}]
for prefetch in (False, True):
    for blocks in (16, 32):
        for cb in (2, 4):
            for warps in (4, 8):
                y1 = inputs["realistic"]
                cfg = dict(blocks_per_program=blocks, cols_per_program=cb, num_warps=warps, prefetch=prefetch)
                ms = triton.testing.do_bench(lambda: sparsify_pack(y1, **cfg), return_mode="median")
                rows.append({"config": cfg, "ms": ms, "GBps": moved / ms / 1e6})
rand_ms = triton.testing.do_bench(lambda: sparsify_pack(inputs["random"]), return_mode="median")
rows.append({"config": "default, random input", "ms": rand_ms, "GBps": moved / rand_ms / 1e6})

# the FFN forward at the same size with the best configuration of each variant, dense compiled alongside
_, _, w2 = realistic_operands(T, d, H)
compiled = torch.compile(dense_ffn)
ffn = {}
with torch.inference_mode():
    ffn["dense_compiled_ms"] = triton.testing.do_bench(lambda: compiled(x, w1, w2), return_mode="median")
    for prefetch in (False, True):
        best = min((r for r in rows if isinstance(r["config"], dict) and r["config"]["prefetch"] == prefetch),
                   key=lambda r: r["ms"])["config"]

        def forward():
            packed = sparsify_pack(x @ w1.t(), **best).packed
            return sparse_mm(packed, w2.t(), T)

        ffn[f"sparse_ms_prefetch_{prefetch}"] = triton.testing.do_bench(forward, return_mode="median")
rows.append({"config": "ffn forward T=16384 d=4096 H=16384", **ffn})
(out / "tune_sparsify_pack.json").write_text(json.dumps(rows, indent=1))
for r in [rows[0], rows[-2], rows[-1]] + sorted(rows[1:-2], key=lambda r: r["ms"])[:8]:
    print(r)
