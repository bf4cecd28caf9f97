"""Host time per 2:4 GEMM call, torch._cslt_sparse_mm (a plan built per call) against act24's planned
calls, and GPU time of both, at the FFN's GEMM shapes; plus the dense operand's layout (row- against
column-major) for the forward GEMM. Writes OUT/cusparselt_host_cost.json.

Usage: PYTHONPATH=src python scripts/cusparselt_host_cost.py OUT
"""

from __future__ import annotations

import argparse

import torch

from act24.bench.common import header, host_issue_ms, median_ms, write_result
from act24.gemm import cusparselt as C


def packed_operand(m, k):
    a = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
    return torch._cslt_compress(a * (torch.arange(k, device="cuda") % 4 < 2))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    args = p.parse_args()
    rows = []
    # (what, m, k, n): sparse [m, k] @ dense [k, n]
    shapes = [("forward GEMM2", 2048, 8192, 2048), ("forward GEMM2", 2048, 16384, 4096),
              ("forward GEMM2", 16384, 16384, 4096), ("dW1", 16384, 16384, 4096), ("dW1", 8192, 4096, 2048)]
    for what, m, k, n in shapes:
        packed = packed_operand(m, k)
        for layout in ("row", "col"):
            b = torch.randn(k, n, dtype=torch.bfloat16, device="cuda")
            if layout == "col":
                b = b.t().contiguous().t()
            row = {"gemm": what, "m": m, "k": k, "n": n, "b_layout": layout}
            for direct in (False, True):
                C.DIRECT_CALLS = direct
                fn = lambda: C.sparse_mm(packed, b, m)
                name = "planned" if direct else "torch"
                row[f"{name}_host_us"] = host_issue_ms(fn, calls=200) * 1e3
                row[f"{name}_ms"] = median_ms(fn)
            C.DIRECT_CALLS = True
            row["algorithm"] = str(C.algorithm_for(packed, b, m))
            rows.append(row)
            print(row, flush=True)
    write_result(args.out, "cusparselt_host_cost", {**header(), "rows": rows})


if __name__ == "__main__":
    main()
