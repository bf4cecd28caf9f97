"""The inference forward with and without the fused GEMM1, against compiled dense, alternated in one
process (the same operands as `act24 bench ffn`). Writes OUT/fused_gemm1_ab.json.

Usage: PYTHONPATH=src python scripts/ab_fused_gemm1.py OUT [T,d,H ...]   (default 16384,4096,16384)
"""

import argparse

import torch

from act24.bench.common import alternating_medians, header, write_result
from act24.bench.ffn_forward import compiled_baseline_and_operands
from act24.ffn import fast_forward


def forward(x, w1, w2, fused: bool):
    def run():
        chosen = fast_forward.use_fused_gemm1
        fast_forward.use_fused_gemm1 = lambda device, dtype, d: fused and chosen(device, dtype, d)
        try:
            return fast_forward.sparse_forward(x, w1, w2, count=False)[0]
        finally:
            fast_forward.use_fused_gemm1 = chosen
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("shapes", nargs="*", default=["16384,4096,16384"], help="T,d,H")
    args = parser.parse_args()
    rows = []
    for shape in args.shapes:
        T, d, H = map(int, shape.split(","))
        compiled, x, w1, w2 = compiled_baseline_and_operands(T, d, H)
        with torch.inference_mode():
            times = alternating_medians({"compiled_dense": lambda: compiled(x, w1, w2),
                                         "unfused": forward(x, w1, w2, False), "fused": forward(x, w1, w2, True)})
        row = {"T": T, "d": d, "H": H, **{f"{k}_ms": v for k, v in times.items()},
               "speedup_unfused": times["compiled_dense"] / times["unfused"],
               "speedup_fused": times["compiled_dense"] / times["fused"]}
        print(row, flush=True)
        rows.append(row)
    write_result(args.out, "fused_gemm1_ab", {**header(), "rows": rows})


if __name__ == "__main__":
    main()
