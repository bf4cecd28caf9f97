"""Time the fused GEMM1 + pack kernel's configurations against cuBLAS GEMM1 + the packer, then the
FFN forward built on each (cuSPARSELt GEMM2 after either) against compiled dense, on realistic
inputs (~90% zeros after ReLU², see act24.bench.ffn_forward). Writes OUT/gemm_pack_sweep.json.

Usage: PYTHONPATH=src python scripts/tune_gemm_pack.py OUT [--quick]
"""

import sys

import torch
import torch.nn.functional as F

from act24 import functional
from act24.bench.common import header, median_ms, write_result
from act24.bench.ffn_forward import compiled_baseline_and_operands
from act24.kernels.gemm_pack import GemmPackConfig, gemm_pack

TILES = [(128, 256, 64, 3, 8), (128, 256, 64, 4, 8), (128, 128, 64, 4, 4), (128, 128, 64, 5, 8),
         (256, 128, 64, 3, 8), (128, 256, 128, 2, 8)]
SHAPES = [(16384, 4096, 16384), (16384, 8192, 32768), (16384, 2048, 8192), (4096, 4096, 16384)]


def _row(config, fn):
    try:
        return {"config": config._asdict() if config else None, "ms": median_ms(fn)}
    except Exception as e:  # a configuration that does not compile or fit is reported, not fatal
        return {"config": config._asdict() if config else None, "error": f"{type(e).__name__}: {str(e)[:300]}"}


def main(out: str, quick: bool) -> None:
    rows = []
    best = {}
    for si, (T, d, H) in enumerate(SHAPES):
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
            configs = [GemmPackConfig(*t, tma=tma) for tma in (True, False) for t in TILES]
            if si > 0 or quick:
                configs = best.get("top", configs[:2])
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
