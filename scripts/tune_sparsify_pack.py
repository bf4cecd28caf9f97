"""Time the packer's launch configurations on the GPU at [16384, 16384] bf16, realistic input, without
(inference) and with (training) the per-feature counting, then the default on random input.
Writes OUT/sparsify_pack_sweep.json.

Usage: PYTHONPATH=src python scripts/tune_sparsify_pack.py OUT
"""

import sys

import torch

from act24.bench.common import header, median_ms, write_result
from act24.bench.ffn_forward import realistic_operands
from act24.kernels.sparsify_pack import sparsify_pack


T, H, d = 16384, 16384, 4096
x, w1, _ = realistic_operands(T, d, H)
inputs = {"realistic": x @ w1.t(), "random": torch.randn(T, H, device="cuda", dtype=torch.bfloat16)}
moved = T * H * 2 + T * H * 9 // 8
copy_ms = median_ms(lambda: inputs["random"].clone())
rows = [{"config": "clone (copy ceiling)", "ms": copy_ms, "GBps": 2 * T * H * 2 / copy_ms / 1e6}]
y1 = inputs["realistic"]
for count in (False, True):
    for blocks in (2, 4, 8, 16):
        for cb in (1, 2, 4):
            for warps in (4, 8):  # 2 warps was never the fastest (results/sparsify_pack_sweep.json)
                ms = median_ms(lambda: sparsify_pack(y1, count=count, blocks_per_program=blocks, cols_per_program=cb,
                                                     num_warps=warps))
                rows.append({"config": f"count={count} blocks={blocks} cb={cb} warps={warps}", "ms": ms,
                             "GBps": moved / ms / 1e6})
                print(rows[-1], flush=True)
rand_ms = median_ms(lambda: sparsify_pack(inputs["random"], count=False))
rows.append({"config": "default without counting, random input", "ms": rand_ms, "GBps": moved / rand_ms / 1e6})
write_result(sys.argv[1], "sparsify_pack_sweep", {**header(), "shape": [T, H], "bytes_moved": moved,
                                                  "input": "realistic: relu(x @ W1.T)**2 ~90% zeros", "rows": rows})
for r in [rows[0], rows[-1]] + sorted(rows[1:-1], key=lambda r: r["ms"])[:12]:
    print(f"{r['config']:<28} {r['ms']:.4f} ms {r['GBps']:.0f} GB/s")
