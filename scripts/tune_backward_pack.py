"""Sweep the backward packer's launch parameters at one shape, then time the whole FFN training
step with the fastest. Writes OUT/backward_pack_sweep.json.

Usage: PYTHONPATH=src python scripts/tune_backward_pack.py OUT [--T 16384] [--d 4096] [--H 16384]
"""

from __future__ import annotations

import argparse

import torch

from act24 import reference as ref
from act24.bench import ffn_train
from act24.bench.common import header, median_ms, write_result
from act24.bench.ffn_forward import realistic_operands
from act24.kernels import backward_pack as bp


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--T", type=int, default=16384)
    p.add_argument("--d", type=int, default=4096)
    p.add_argument("--H", type=int, default=16384)
    args = p.parse_args()
    T, d, H = args.T, args.d, args.H
    x, w1, w2 = realistic_operands(T, d, H)
    dy = torch.randn(T, d, device="cuda", dtype=x.dtype)
    num_dense = ref.dense_feature_count(H, ffn_train.DENSE_FRACTION)
    _, packed, dy2, perm, dense = ffn_train.backward_pack_inputs(x, w1, w2, dy, num_dense)
    moved = T * H * 2 + T * H * 9 // 8 + 3 * T * H * 9 // 8 + 2 * T * dense.numel() * 2
    sweep = []
    for nb in (1, 2, 4):
        for warps in (2, 4, 8):
            for cap in (None, 168, 128):
                try:
                    ms = median_ms(lambda: bp.backward_pack(packed.packed, dy2, perm, dense, token_blocks_per_program=nb,
                                                            num_warps=warps, max_registers=cap))
                except Exception as e:  # e.g. out of registers / shared memory
                    print(nb, warps, cap, type(e).__name__, str(e)[:100])
                    continue
                sweep.append({"token_blocks_per_program": nb, "num_warps": warps, "max_registers": cap, "ms": ms,
                              "GBps": moved / ms / 1e6})
                print(sweep[-1], flush=True)
    best = min(sweep, key=lambda r: r["ms"])
    bp.backward_pack.__kwdefaults__.update(token_blocks_per_program=best["token_blocks_per_program"],
                                           num_warps=best["num_warps"], max_registers=best["max_registers"])
    row = ffn_train.train_rows(tokens=(T,), shapes=((d, H),))[0]
    print("best", best, "step", row["sparse_ms"], "compiled dense", row["dense_compiled_ms"], flush=True)
    write_result(args.out, "backward_pack_sweep", {**header(), "T": T, "d": d, "H": H, "bytes_moved": moved,
                                                   "sweep": sweep, "best": best, "train_row_with_best": row})


if __name__ == "__main__":
    main()
