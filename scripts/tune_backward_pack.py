"""Sweep the backward packer's launch parameters (blocks, warps, register cap) at one shape, checking every launch writes the same bytes as the defaults; then time the whole FFN
training step with the fastest (unless --no-step). Writes OUT/backward_pack_sweep.json.

Usage: PYTHONPATH=src python scripts/tune_backward_pack.py OUT [--T 16384] [--d 4096] [--H 16384]
       [--no-step]
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from act24 import reference as ref
from act24.bench import ffn_train
from act24.bench.common import header, median_ms, write_result
from act24.bench.ffn_forward import realistic_operands
from act24.kernels import backward_pack as bp

LAUNCHES = ((1, 2), (2, 2), (2, 4), (4, 4), (1, 4), (4, 8))  # (token blocks per program, warps)
CAPS = (None, 168, 128)
OUTPUTS = tuple(f.name for f in dataclasses.fields(bp.BackwardOperands))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--T", type=int, default=16384)
    p.add_argument("--d", type=int, default=4096)
    p.add_argument("--H", type=int, default=16384)
    p.add_argument("--no-step", action="store_true", help="skip the training step with the fastest launch")
    args = p.parse_args()
    T, d, H = args.T, args.d, args.H
    x, w1, w2 = realistic_operands(T, d, H)
    dy = torch.randn(T, d, device="cuda", dtype=x.dtype)
    num_dense = ref.dense_feature_count(H, ffn_train.DENSE_FRACTION)
    _, packed, dy2, perm, dense = ffn_train.backward_pack_inputs(x, w1, w2, dy, num_dense)
    moved = T * H * 2 + T * H * 9 // 8 + 3 * T * H * 9 // 8 + 2 * T * dense.numel() * 2
    expected = bp.backward_pack(packed.packed, dy2, perm, dense)
    sweep = [{"defaults": True, "ms": median_ms(lambda: bp.backward_pack(packed.packed, dy2, perm, dense))}]
    for nb, warps in LAUNCHES:
        for cap in CAPS:
            launch = dict(token_blocks_per_program=nb, num_warps=warps, max_registers=cap)
            try:
                out = bp.backward_pack(packed.packed, dy2, perm, dense, **launch)
                same = all(torch.equal(getattr(out, f).view(torch.int16), getattr(expected, f).view(torch.int16))
                           for f in OUTPUTS)
                ms = median_ms(lambda: bp.backward_pack(packed.packed, dy2, perm, dense, **launch))
            except Exception as e:  # e.g. out of registers / shared memory
                print(launch, type(e).__name__, str(e)[:100])
                continue
            sweep.append({**launch, "ms": ms, "GBps": moved / ms / 1e6, "same_bytes_as_defaults": same})
            print(sweep[-1], flush=True)
    best = min((r for r in sweep[1:] if r["same_bytes_as_defaults"]), key=lambda r: r["ms"])
    result = {**header(), "T": T, "d": d, "H": H, "bytes_moved": moved, "sweep": sweep, "best": best}
    print("best", best, "defaults", sweep[0]["ms"], flush=True)
    if not args.no_step:
        bp.backward_pack.__kwdefaults__.update({k: best[k] for k in
                                                ("token_blocks_per_program", "num_warps", "max_registers")})
        row = ffn_train.train_rows(tokens=(T,), shapes=((d, H),))[0]
        print("step", row["sparse_ms"], "compiled dense", row["dense_compiled_ms"], flush=True)
        result["train_row_with_best"] = row
    write_result(args.out, "backward_pack_sweep", result)


if __name__ == "__main__":
    main()
