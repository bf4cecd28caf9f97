"""The forward packer against another version of itself, in one process: identical bytes and
counts for every launch, then alternating timings at [16384, 16384] bf16 (realistic input ~90%
zeros, and random input), with and without counting. Writes OUT/sparsify_pack_ab.json.

The baseline is a copy of kernels/sparsify_pack.py from another revision, e.g.
  git show REV:src/act24/kernels/sparsify_pack.py > /tmp/baseline.py
It is loaded as a module of act24.kernels, so its relative imports resolve here.

Usage: PYTHONPATH=src python scripts/ab_sparsify_pack.py OUT BASELINE_FILE [LABEL: what the current tree is]
"""

import importlib.util
import statistics
import sys

import torch

from act24.bench.common import header, median_ms, write_result
from act24.bench.ffn_forward import realistic_operands
from act24.kernels import sparsify_pack as current

out, baseline_file = sys.argv[1], sys.argv[2]
label = sys.argv[3] if len(sys.argv) > 3 else "this tree"
spec = importlib.util.spec_from_file_location("act24.kernels._baseline_pack", baseline_file)
baseline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(baseline)

T, H, d = 16384, 16384, 4096
x, w1, _ = realistic_operands(T, d, H)
inputs = {"realistic": x @ w1.t(), "random": torch.randn(T, H, device="cuda", dtype=torch.bfloat16)}
moved = T * H * 2 + T * H * 9 // 8
LAUNCHES = [dict(blocks_per_program=b, cols_per_program=c, num_warps=w)
            for b, c, w in [(2, 2, 8), (4, 2, 8), (8, 2, 8), (16, 2, 8), (32, 2, 8), (4, 1, 4), (8, 1, 4), (4, 4, 8), (8, 4, 8),
                            (8, 2, 4)]]
REPEATS = 5

rows = []
for name, y1 in inputs.items():
    for count in (False, True):
        for launch in LAUNCHES:
            a = baseline.sparsify_pack(y1, count=count, **launch)
            b = current.sparsify_pack(y1, count=count, **launch)
            same = torch.equal(a.packed.view(torch.int16), b.packed.view(torch.int16)) and (
                not count or (torch.equal(a.kept_per_feature, b.kept_per_feature)
                              and torch.equal(a.nonzeros_per_feature, b.nonzeros_per_feature)))
            times = {"baseline": [], "current": []}
            for _ in range(REPEATS):  # alternating, so clock and thermal drift fall on both
                times["baseline"].append(median_ms(lambda: baseline.sparsify_pack(y1, count=count, **launch)))
                times["current"].append(median_ms(lambda: current.sparsify_pack(y1, count=count, **launch)))
            row = {"input": name, "count": count, **launch, "identical": same,
                   **{f"{k}_ms": statistics.median(v) for k, v in times.items()}}
            row.update({f"{k}_GBps": moved / row[f"{k}_ms"] / 1e6 for k in times})
            row["ratio"] = row["baseline_ms"] / row["current_ms"]
            rows.append(row)
            print(row, flush=True)
write_result(out, "sparsify_pack_ab", {**header(), "shape": [T, H], "bytes_moved": moved, "label": label,
                                       "baseline": baseline_file, "repeats": REPEATS, "rows": rows})
