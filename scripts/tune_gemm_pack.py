"""Time the fused GEMM1 + pack kernel's configurations against cuBLAS GEMM1 + the packer, then the
FFN forward built on each (cuSPARSELt GEMM2 after either) against compiled dense, on realistic
inputs (~90% zeros after ReLU², see act24.bench.ffn_forward). Writes OUT/gemm_pack_sweep.json.

Usage: PYTHONPATH=src python scripts/tune_gemm_pack.py OUT [--quick]
"""

import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from act24 import functional
from act24.bench.common import header, median_ms, write_result
from act24.bench.ffn_forward import compiled_baseline_and_operands
from act24.kernels.gemm_pack import GemmPackConfig, gemm_pack

# (block_m, block_n, block_k, num_stages, num_warps)
TILES = [(128, 256, 64, 3, 8), (128, 256, 64, 4, 8), (128, 128, 64, 4, 4), (128, 128, 64, 5, 8),
         (256, 128, 64, 3, 8), (128, 128, 128, 3, 8), (64, 256, 64, 4, 4)]


@triton.jit
def _plain_gemm(x_desc, w_desc, y_desc, M, N, K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                BK: tl.constexpr, GROUP_M: tl.constexpr, STAGES: tl.constexpr, WS: tl.constexpr):
    """The fused kernel's main loop with a plain bf16 store: what the GEMM alone costs in Triton."""
    pid = tl.program_id(0)
    tiles_n = N // BN
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = tl.minimum(tl.cdiv(M, BM) - first_m, GROUP_M)
    off_m = (first_m + (pid % per_group) % group_rows) * BM
    off_n = ((pid % per_group) // group_rows) * BN
    acc = tl.zeros((BM, BN), tl.float32)
    for k in tl.range(0, K, BK, num_stages=STAGES, warp_specialize=WS):
        acc = tl.dot(x_desc.load([off_m, k]), w_desc.load([off_n, k]).T, acc)
    y_desc.store([off_m, off_n], acc.to(tl.bfloat16))


def plain_gemm(x, w1, c: GemmPackConfig):
    (M, K), N = x.shape, w1.shape[0]
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    descs = [TensorDescriptor.from_tensor(t, b) for t, b in ((x, [c.block_m, c.block_k]), (w1, [c.block_n, c.block_k]),
                                                              (y, [c.block_m, c.block_n]))]
    _plain_gemm[(triton.cdiv(M, c.block_m) * (N // c.block_n),)](
        *descs, M, N, K=K, BM=c.block_m, BN=c.block_n, BK=c.block_k, GROUP_M=c.group_m, STAGES=c.num_stages,
        WS=c.warp_specialize, num_warps=c.num_warps)
    return y
SHAPES = [(16384, 4096, 16384), (16384, 8192, 32768), (16384, 2048, 8192), (4096, 4096, 16384)]
QUICK_SHAPES = SHAPES[:1]


def _row(config, fn):
    try:
        return {"config": config._asdict() if config else None, "ms": median_ms(fn)}
    except Exception as e:  # a configuration that does not compile or fit is reported, not fatal
        return {"config": config._asdict() if config else None, "error": f"{type(e).__name__}: {str(e)[:300]}"}


def main(out: str, quick: bool) -> None:
    rows = []
    best = {}
    for si, (T, d, H) in enumerate(QUICK_SHAPES if quick else SHAPES):
        compiled, x, w1, w2 = compiled_baseline_and_operands(T, d, H)
        with torch.inference_mode():
            base = {"T": T, "d": d, "H": H}
            gemm1 = median_ms(lambda: F.linear(x, w1))
            unfused = median_ms(lambda: functional.sparsify_pack(F.linear(x, w1), count=False))
            dense = median_ms(lambda: compiled(x, w1, w2))
            sparse = median_ms(lambda: functional.sparse_ffn_forward(x, w1, w2))
            rows.append({**base, "kind": "baselines", "cublas_gemm1_ms": gemm1, "gemm1_then_pack_ms": unfused,
                         "dense_compiled_ms": dense, "sparse_unfused_ms": sparse})
            print(rows[-1], flush=True)
            configs = [GemmPackConfig(block_m=bm, block_n=bn, block_k=bk, num_stages=st, num_warps=wa, warp_specialize=ws)
                       for bm, bn, bk, st, wa in TILES for ws in (False, True)]
            if si > 0:
                configs = best["top"]
            timed = []
            for config in configs:
                r = {**base, "kind": "fused", **_row(config, lambda: gemm_pack(x, w1, count=False, config=config))}
                rows.append(r)
                print(r, flush=True)
                if "ms" in r:
                    timed.append((r["ms"], config))
            if not timed:
                continue
            timed.sort(key=lambda t: t[0])
            if si == 0:
                best["top"] = [c for _, c in timed[:3]]
            ms, config = timed[0]
            for _, c in timed[:3]:
                r = {**base, "kind": "plain triton gemm", **_row(c, lambda: plain_gemm(x, w1, c))}
                rows.append(r)
                print(r, flush=True)
            counting = median_ms(lambda: gemm_pack(x, w1, count=True, config=config))
            packed = gemm_pack(x, w1, count=False, config=config).packed
            reference = functional.sparsify_pack(F.linear(x, w1), count=False)[0]
            agree = (packed[:, : H // 2] == reference[:, : H // 2]).float().mean().item()
            fused_forward = median_ms(lambda: functional.sparse_mm(gemm_pack(x, w1, count=False, config=config).packed,
                                                                   w2.t(), T))
            rows.append({**base, "kind": "best", "config": config._asdict(), "fused_ms": ms, "fused_counting_ms": counting,
                         "values_equal_to_unfused": agree, "fused_forward_ms": fused_forward,
                         "speedup_fused_vs_compiled": dense / fused_forward, "speedup_unfused_vs_compiled": dense / sparse})
            print(rows[-1], flush=True)
        torch.cuda.empty_cache()
    write_result(out, "gemm_pack_sweep", {**header(), "input": "realistic: relu(x @ W1.T)**2 ~90% zeros", "rows": rows})


if __name__ == "__main__":
    main(sys.argv[1], "--quick" in sys.argv)
