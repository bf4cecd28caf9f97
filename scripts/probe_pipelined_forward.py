"""Can the forward packer hide behind the GEMMs? The inference forward (GEMM1, pack, 2:4 GEMM2) at
T=16384 and 32768 (d=4096, H=16384, bf16, realistic input), timed alternating in one process:

  serial:        GEMM1, pack, GEMM2 (act24's forward today)
  chunks{n}:     the same in n row chunks, one stream (what chunking alone costs the GEMMs)
  pipe{n}:       GEMM1 whole; chunk i's pack on a side stream runs while GEMM2 of chunk i-1 runs
  pipe{n}_g1:    GEMM1 in chunks too: chunk i packs while GEMM1 of chunk i+1 and GEMM2 run
  *_hi:          the side stream at high priority (its blocks are dispatched first as SMs free up)

Every variant's output is compared with serial's: the same bytes where the chunks run the same
kernels on the same rows (at T=16384; at 32768 the chunks' cuSPARSELt algorithm, searched for
their own row count, differs from the whole's, and so does the rounding). Each variant writes its
output once into a [T, d] buffer, serial too.

Then pairs of independent kernels at T=16384, each alone and both at once on two streams: a
GEMM (dense GEMM1, the 2:4 GEMM2, the backward's dense dy2 and 2:4 dx) with a packer (forward or
backward). Both at once near the GEMM alone means the packer hides behind it.

Usage: PYTHONPATH=src python scripts/probe_pipelined_forward.py OUT
"""

import sys

import torch

from act24.bench.common import alternating_medians, header, write_result
from act24.bench.ffn_forward import realistic_operands
from act24.gemm import cusparselt
from act24 import reference as ref
from act24.bench import ffn_train
from act24.kernels.backward_pack import backward_pack
from act24.kernels.sparsify_pack import sparsify_pack

d, H = 4096, 16384


def serial(x, w1, w2, n=1):
    out = torch.empty(x.shape[0], d, dtype=x.dtype, device=x.device)
    c = x.shape[0] // n
    for i in range(n):
        rows = slice(i * c, (i + 1) * c)
        out[rows] = cusparselt.sparse_mm(sparsify_pack(x[rows] @ w1.t(), count=False).packed, w2.t(), c)
    return out


def pipelined(x, w1, w2, n, side, chunk_gemm1):
    main = torch.cuda.current_stream()
    T = x.shape[0]
    c = T // n
    out = torch.empty(T, d, dtype=x.dtype, device=x.device)
    y1s, ready = [], []
    if not chunk_gemm1:
        y1 = x @ w1.t()
        y1s = [y1[i * c:(i + 1) * c] for i in range(n)]
    packs = []
    for i in range(n):
        if chunk_gemm1:
            y1s.append(x[i * c:(i + 1) * c] @ w1.t())
        e = torch.cuda.Event()
        e.record(main)
        ready.append(e)
    for i in range(n):
        side.wait_event(ready[i])
        with torch.cuda.stream(side):
            p = sparsify_pack(y1s[i], count=False).packed
            done = torch.cuda.Event()
            done.record(side)
        packs.append((p, done))
    for i, (p, done) in enumerate(packs):
        main.wait_event(done)
        p.record_stream(main)
        y1s[i].record_stream(side)
        out[i * c:(i + 1) * c] = cusparselt.sparse_mm(p, w2.t(), c)
    return out


def together(a, b, side):
    """a on the current stream and b on `side`, started together."""
    def run():
        main = torch.cuda.current_stream()
        side.wait_stream(main)
        a()
        with torch.cuda.stream(side):
            b()
        main.wait_stream(side)
    return run


def concurrency_rows(low, high) -> list[dict]:
    T = 16384
    x, w1, w2 = realistic_operands(T, d, H)
    dy = torch.randn(T, d, device="cuda", dtype=x.dtype)
    num_dense = ref.dense_feature_count(H, ffn_train.DENSE_FRACTION)
    y1, pk, dy2, perm, dense = ffn_train.backward_pack_inputs(x, w1, w2, dy, num_dense)
    y1_other = y1.clone()
    packs = {"pack": lambda: sparsify_pack(y1_other, count=False),
             "backward_pack": lambda: backward_pack(pk.packed, dy2, perm, dense)}
    gemms = {"gemm1": lambda: x @ w1.t(),
             "gemm2_sparse": lambda: cusparselt.sparse_mm(pk.packed, w2.t(), T),
             "dy2_dense": lambda: dy @ w2,
             "dx_sparse": lambda: cusparselt.sparse_mm(pk.packed, w1, T)}
    rows = []
    for g, p in (("gemm1", "pack"), ("gemm2_sparse", "pack"), ("dy2_dense", "backward_pack"),
                 ("dx_sparse", "backward_pack")):
        cases = {g: gemms[g], p: packs[p], "together": together(gemms[g], packs[p], low),
                 "together_hi": together(gemms[g], packs[p], high)}
        times = alternating_medians(cases, rounds=2)
        row = {"gemm": g, "packer": p, **{f"{k}_ms": v for k, v in times.items()}}
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    out_dir = sys.argv[1]
    low = torch.cuda.Stream()
    high = torch.cuda.Stream(priority=-1)
    with torch.inference_mode():
        pairs = concurrency_rows(low, high)
    rows = []
    for T in (16384, 32768):
        x, w1, w2 = realistic_operands(T, d, H)
        cases = {"serial": lambda: serial(x, w1, w2)}
        for n in (2, 4):
            cases[f"chunks{n}"] = lambda n=n: serial(x, w1, w2, n)
            for tag, s in (("", low), ("_hi", high)):
                cases[f"pipe{n}{tag}"] = lambda n=n, s=s: pipelined(x, w1, w2, n, s, False)
                cases[f"pipe{n}_g1{tag}"] = lambda n=n, s=s: pipelined(x, w1, w2, n, s, True)
        with torch.inference_mode():
            reference = cases["serial"]()
            same = {k: torch.equal(f(), reference) for k, f in cases.items()}
            torch.cuda.synchronize()
            times = alternating_medians(cases, rounds=2)
        row = {"T": T, "d": d, "H": H, "identical": same, **{f"{k}_ms": v for k, v in times.items()}}
        print(row, flush=True)
        rows.append(row)
    write_result(out_dir, "pipelined_forward", {**header(), "rounds": 2, "rows": rows, "pairs": pairs})


if __name__ == "__main__":
    main()
