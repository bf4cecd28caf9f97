"""The inference forward (or with --train the training step, forward + backward) with and without the
fused GEMM1, against compiled dense, alternated in one process (the operands of `act24 bench ffn`).
Writes OUT/fused_gemm1_ab.json (--train: OUT/fused_gemm1_train_ab.json).

Usage: PYTHONPATH=src python scripts/ab_fused_gemm1.py OUT [--train] [--force] [--dtype float16] [T,d,H ...]
(default 16384,4096,16384, bfloat16; another dtype gets its name in the JSON's: fused_gemm1_ab_float16.json)
"""

import argparse

import torch

from act24.bench.common import alternating_medians, header, write_result
from act24.bench.ffn_forward import compiled_baseline_and_operands
from act24.bench.ffn_train import DENSE_FRACTION, act24_train_ffn, train_step
from act24.ffn import backend, fast_forward
from act24.reference import dense_feature_count


FORCE = False  # --force: the fused arm ignores the per-GPU size limits (backend.FUSED_GEMM1_MAX_WORK)


def forced(device, dtype, tokens, d, hidden, *, count=False) -> bool:
    return backend.fused_gemm1_allowed(device, dtype, d, count)


def with_fused(fused: bool, fn):
    """fn(*args) with the fused GEMM1 allowed (where the package would use it, or with --force wherever it
    runs) or not."""
    def run(*args):
        chosen = fast_forward.use_fused_gemm1
        allowed = forced if FORCE else chosen
        fast_forward.use_fused_gemm1 = lambda *args, count=False: fused and allowed(*args, count=count)
        try:
            return fn(*args)
        finally:
            fast_forward.use_fused_gemm1 = chosen
    return run


def inference_times(compiled, x, w1, w2) -> dict[str, float]:
    def forward(fused):
        return with_fused(fused, lambda: fast_forward.sparse_forward(x, w1, w2, count=False)[0])
    with torch.inference_mode():
        return alternating_medians({"compiled_dense": lambda: compiled(x, w1, w2),
                                    "unfused": forward(False), "fused": forward(True)})


def training_times(compiled, x, w1, w2) -> dict[str, float]:
    num_dense = dense_feature_count(w1.shape[0], DENSE_FRACTION)
    dy = torch.randn_like(x)
    xs, w1s, w2s = (t.detach().requires_grad_() for t in (x, w1, w2))

    def act24_step(fused):
        forward = with_fused(fused, act24_train_ffn(num_dense))
        return train_step(forward, xs, w1s, w2s, dy)
    return alternating_medians({"compiled_dense": train_step(compiled, xs, w1s, w2s, dy),
                                "unfused": act24_step(False), "fused": act24_step(True)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--train", action="store_true", help="time the training step instead of the forward")
    parser.add_argument("--force", action="store_true", help="the fused arm ignores the per-GPU size limits")
    parser.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
    parser.add_argument("shapes", nargs="*", default=["16384,4096,16384"], help="T,d,H")
    args = parser.parse_intermixed_args()  # --train may come between OUT and the shapes
    global FORCE
    FORCE = args.force
    rows = []
    for shape in args.shapes:
        T, d, H = map(int, shape.split(","))
        compiled, *operands = compiled_baseline_and_operands(T, d, H)
        x, w1, w2 = (t.to(getattr(torch, args.dtype)) for t in operands)
        times = (training_times if args.train else inference_times)(compiled, x, w1, w2)
        row = {"T": T, "d": d, "H": H, "dtype": args.dtype, **{f"{k}_ms": v for k, v in times.items()},
               "speedup_unfused": times["compiled_dense"] / times["unfused"],
               "speedup_fused": times["compiled_dense"] / times["fused"]}
        print(row, flush=True)
        rows.append(row)
    name = ("fused_gemm1_train_ab" if args.train else "fused_gemm1_ab") + (
        "" if args.dtype == "bfloat16" else f"_{args.dtype}")
    write_result(args.out, name, {**header(), "mode": "training step" if args.train else "inference forward",
                                  "fused_arm_forced": args.force, "rows": rows})


if __name__ == "__main__":
    main()
