"""One packer against another version of itself, in one process: whether the outputs are identical at
every launch, then timings alternating between the two (bench.common.alternating_medians), at the
target shape (T=16384, d=4096, H=16384, bf16 or --dtype, realistic input ~90% zeros; the forward
packer also on random input), over a list of launches or the default one. Writes
OUT/<kernel>_ab.json (OUT/<kernel>_ab_float16.json for fp16).

The baseline is a copy of the kernel's file from another revision, e.g.
  git show REV:src/act24/kernels/backward_pack.py > /tmp/baseline.py
It is loaded as a module of act24.kernels, so its relative imports resolve here: helpers it imports
(kernels/top2.py, ...) are this tree's, so a baseline whose helpers changed too is measured mixed.

Usage: PYTHONPATH=src python scripts/ab_packer.py {sparsify_pack,backward_pack} OUT BASELINE_FILE [LABEL]
       [--dtype float16] [--default-launch-only]
(launch parameters not in a case are the kernel's defaults)
"""

import argparse
import dataclasses
import importlib
import importlib.util

import torch

from act24 import reference as ref
from act24.bench import ffn_train
from act24.bench.common import ROUNDS, alternating_medians, header, write_result
from act24.bench.ffn_forward import realistic_operands

T, d, H = 16384, 4096, 16384
FORWARD_LAUNCHES = [dict(blocks_per_program=b, cols_per_program=c, num_warps=w)
                    for b, c, w in [(2, 2, 8), (4, 2, 8), (8, 2, 8), (16, 2, 8), (32, 2, 8), (4, 1, 4), (8, 1, 4),
                                    (4, 4, 8), (8, 4, 8), (8, 2, 4)]]
BACKWARD_LAUNCHES = [dict(token_blocks_per_program=nb, num_warps=w, max_registers=cap)
                     for nb, w, cap in [(4, 4, 168), (4, 4, 192), (2, 4, 168), (4, 4, 160)]]  # each compiles ~20 s


def load_copy(path: str):
    spec = importlib.util.spec_from_file_location("act24.kernels._baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def as_bytes(out) -> list[torch.Tensor]:
    """Every tensor of a packer's result, as 16-bit patterns (NaN payloads compared too)."""
    tensors = [getattr(out, f.name) for f in dataclasses.fields(out)]
    return [t.view(torch.int16) if t.dtype.itemsize == 2 else t for t in tensors if t is not None]


def cases(kernel: str, dtype: torch.dtype, default_launch_only: bool):
    """(label, inputs, launch, bytes moved) for each timed case; inputs are keyword arguments."""
    x, w1, w2 = realistic_operands(T, d, H, dtype=dtype)
    if kernel == "sparsify_pack":
        moved = T * H * 2 + T * H * 9 // 8
        for name, y1 in (("realistic", x @ w1.t()), ("random", torch.randn(T, H, device="cuda", dtype=x.dtype))):
            for count in (False, True):
                for launch in [{}] if default_launch_only else FORWARD_LAUNCHES:
                    yield {"input": name, "count": count}, dict(y1=y1, count=count), launch, moved
    else:
        dy = torch.randn(T, d, device="cuda", dtype=x.dtype)
        num_dense = ref.dense_feature_count(H, ffn_train.DENSE_FRACTION)
        _, packed, dy2, perm, dense = ffn_train.backward_pack_inputs(x, w1, w2, dy, num_dense)
        moved = T * H * 2 + T * H * 9 // 8 + 3 * T * H * 9 // 8 + 2 * T * dense.numel() * 2
        inputs = dict(packed_a=packed.packed, dy2=dy2, perm=perm, dense_features=dense)
        for launch in [{}] if default_launch_only else BACKWARD_LAUNCHES:
            yield {"input": "realistic"}, inputs, launch, moved


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kernel", choices=["sparsify_pack", "backward_pack"])
    p.add_argument("out")
    p.add_argument("baseline_file")
    p.add_argument("label", nargs="?", default="this tree")
    p.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
    p.add_argument("--default-launch-only", action="store_true", help="time the kernel's default launch only")
    args = p.parse_args()
    kernel, out, baseline_file, label = args.kernel, args.out, args.baseline_file, args.label
    dtype = getattr(torch, args.dtype)
    current = getattr(importlib.import_module(f"act24.kernels.{kernel}"), kernel)
    baseline = getattr(load_copy(baseline_file), kernel)
    rows = []
    for case, inputs, launch, moved in cases(kernel, dtype, args.default_launch_only):
        a = as_bytes(baseline(**inputs, **launch))
        b = as_bytes(current(**inputs, **launch))
        same = len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
        times = alternating_medians({"baseline": lambda: baseline(**inputs, **launch),
                                     "current": lambda: current(**inputs, **launch)})
        row = {**case, "dtype": str(dtype), **launch, "identical": same, **{f"{k}_ms": ms for k, ms in times.items()}}
        row.update({f"{k}_GBps": moved / ms / 1e6 for k, ms in times.items()})
        row["ratio"] = row["baseline_ms"] / row["current_ms"]
        rows.append(row)
        print(row, flush=True)
    write_result(out, f"{kernel}_ab" + ("_float16" if dtype == torch.float16 else ""), {**header(), "shape": {"T": T, "d": d, "H": H}, "label": label,
                                        "baseline": baseline_file, "rounds": ROUNDS, "rows": rows})


if __name__ == "__main__":
    main()
