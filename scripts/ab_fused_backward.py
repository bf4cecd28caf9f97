"""The FFN training step with each combination of the two fused kernels — GEMM1 with the forward packer as
its epilogue, and the backward's dy2 GEMM with the token-wise dy1 as its epilogue — against compiled dense,
alternated in one process; then the parts the fused dy2 GEMM replaces, each alone. Writes
OUT/fused_backward_ab.json.

Usage: ACT24_FUSED_DY2=1 PYTHONPATH=src python scripts/ab_fused_backward.py OUT [T,d,H ...] (default
16384,4096,16384 and 16384,2048,8192; bfloat16; without ACT24_FUSED_DY2=1 the fused dy2 GEMM stays off)
"""

import argparse
import contextlib
from unittest import mock

import torch

from act24.bench.common import header, median_ms, write_result
from act24.bench.ffn_train import DENSE_FRACTION, PERM_SEED, backward_pack_inputs, step_ab
from act24.bench.ffn_forward import compiled_baseline_and_operands
from act24.ffn import backend, fast_forward
from act24.kernels.backward_pack import backward_pack, featurewise_pack
from act24.kernels.gemm_relu2_grad_pack import gemm_relu2_grad_pack
from act24.kernels.top2 import packed_regions
from act24.reference import dense_feature_count


def arm(gemm1: bool, dy2: bool):
    """A context manager factory: each fused kernel on wherever it can run (its self-check passed; the
    package's size limits per GPU model ignored), or off."""
    forced = {"use_fused_gemm1": lambda device, dtype, tokens, d, hidden, *, count=False:
              backend.fused_gemm1_allowed(device, dtype, d, count),
              "use_fused_dy2": lambda device, dtype, d: backend.fused_dy2_reason(device, dtype) is None}

    def setup():
        stack = contextlib.ExitStack()
        for name, allowed in (("use_fused_gemm1", gemm1), ("use_fused_dy2", dy2)):
            stack.enter_context(mock.patch.object(fast_forward, name, forced[name] if allowed
                                                  else lambda *args, **kwargs: False))
        return stack
    return setup


def parts(T: int, d: int, H: int) -> dict:
    _, x, w1, w2 = compiled_baseline_and_operands(T, d, H)
    dy = torch.randn_like(x)
    with torch.no_grad():
        _, pk, dy2, perm, dense = backward_pack_inputs(x, w1, w2, dy, dense_feature_count(H, DENSE_FRACTION))
        ops = backward_pack(pk.packed, dy2, perm, dense)
        fused = gemm_relu2_grad_pack(dy, w2, pk.packed)
        # the values differ from the cuBLAS path's by dy2's accumulation order only; the metadata is a's
        (ours, our_meta), (theirs, their_meta) = (packed_regions(p, T, H) for p in (fused, ops.dy1_tokenwise))
        ours, theirs = (v.view(x.dtype).float() for v in (ours, theirs))
        return {
            "fused_dy2_runs_here": backend.fused_dy2_reason(x.device, x.dtype) is None,
            "fused_gemm1_runs_here": backend.fused_gemm1_reason(x.device, x.dtype, True) is None,
            "metadata_equal": torch.equal(our_meta, their_meta),
            "values_rel_l2_vs_cublas_path": ((ours - theirs).norm() / theirs.norm()).item(),
            "dy2_dense": median_ms(lambda: dy @ w2),
            "backward_pack": median_ms(lambda: backward_pack(pk.packed, dy2, perm, dense)),
            "fused_dy2_pack": median_ms(lambda: gemm_relu2_grad_pack(dy, w2, pk.packed)),
            "featurewise_pack": median_ms(lambda: featurewise_pack(pk.packed, fused, perm, dense)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("shapes", nargs="*", default=["16384,4096,16384", "16384,2048,8192"], help="T,d,H")
    args = parser.parse_args()
    arms = {"unfused": arm(False, False), "gemm1": arm(True, False), "dy2": arm(False, True), "both": arm(True, True)}
    rows = []
    for shape in args.shapes:
        T, d, H = map(int, shape.split(","))
        row = step_ab(T, d, H, arms)
        row["parts"] = parts(T, d, H)
        print(row, flush=True)
        rows.append(row)
        torch.cuda.empty_cache()
    write_result(args.out, "fused_backward_ab", {**header(), "mode": "training step", "perm_seed": PERM_SEED,
                                                 "rows": rows})


if __name__ == "__main__":
    main()
