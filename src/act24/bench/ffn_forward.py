"""FFN forward: dense eager, dense torch.compile, act24 sparse; and the packer alone.

Inputs: x ~ N(0, 1) except one coordinate fixed at 1.0, W1 ~ N(0, 1/d) with that
coordinate's column set to -1.28, so ~90% of relu(x @ W1.T)**2 is zero, as in a
trained Squared-ReLU FFN; W2 ~ N(0, 1/hidden). The packer is also timed on plain
random y1 (~50% zeros). The packer runs as the inference forward runs it (no per-feature
counting); `sparsify_counting_ms` is the training forward's packer, which counts.
"""

from __future__ import annotations

import torch

from .. import functional
from ..ffn.backend import use_fused_gemm1
from ..kernels.gemm_relu2_pack import gemm_relu2_pack
from ..reference import dense_ffn, squared_relu
from .common import ROUNDS, alternating_medians, graph_timings, median_ms

TOKENS = (2048, 4096, 8192, 16384, 32768)
SHAPES = ((2048, 8192), (4096, 16384), (8192, 32768))
SPARSE_BIAS = -1.28  # Phi(-1.28) ~ 0.10: ~90% of pre-activations negative


def realistic_operands(T: int, d: int, hidden: int, dtype=torch.bfloat16, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(T, d, device="cuda", generator=g)
    x[:, 0] = 1.0
    w1 = torch.randn(hidden, d, device="cuda", generator=g) / d**0.5
    w1[:, 0] = SPARSE_BIAS
    w2 = torch.randn(d, hidden, device="cuda", generator=g) / hidden**0.5
    return x.to(dtype), w1.to(dtype), w2.to(dtype)


def _packer_row(y1: torch.Tensor, count: bool = False) -> tuple[float, float]:
    T, H = y1.shape
    ms = median_ms(lambda: functional.sparsify_pack(y1, count=count))
    moved = T * H * y1.element_size() + T * H * 9 // 8 + (2 * H * 4 if count else 0)  # read y1; write packed (+ counts)
    return ms, moved / ms / 1e6


def compiled_baseline_and_operands(T: int, d: int, hidden: int):
    """The best dense baseline, compiled for this very shape (dynamic shapes measured slower), and
    realistic (x, w1, w2)."""
    torch._dynamo.reset()
    return torch.compile(dense_ffn, dynamic=False), *realistic_operands(T, d, hidden)


def forward_rows(tokens=TOKENS, shapes=SHAPES, progress=None, rounds: int = ROUNDS) -> list[dict]:
    rows = []
    for d, hidden in shapes:
        for T in tokens:
            compiled, x, w1, w2 = compiled_baseline_and_operands(T, d, hidden)
            with torch.inference_mode():
                y_dense = dense_ffn(x, w1, w2)
                y_sparse = functional.sparse_ffn_forward(x, w1, w2)
                rel_err = ((y_sparse.float() - y_dense.float()).norm() / y_dense.float().norm()).item()
                y1 = x @ w1.t()
                act_sparsity = (y1 <= 0).float().mean().item()
                timed = alternating_medians({"eager": lambda: dense_ffn(x, w1, w2),
                                             "compiled": lambda: compiled(x, w1, w2),
                                             "sparse": lambda: functional.sparse_ffn_forward(x, w1, w2)}, rounds)
                eager, comp, sparse = timed["eager"], timed["compiled"], timed["sparse"]
                # replayed from CUDA graphs: no host cost (what small shapes pay for)
                graphs = graph_timings(lambda: compiled(x, w1, w2), lambda: functional.sparse_ffn_forward(x, w1, w2),
                                       rounds)
                pack_ms, pack_gbps = _packer_row(y1)
                rand_ms, rand_gbps = _packer_row(torch.randn_like(y1))
                counting_ms, _ = _packer_row(y1, count=True)
                gemm1 = median_ms(lambda: x @ w1.t())
                y2 = squared_relu(y1)
                gemm2_dense = median_ms(lambda: y2 @ w2.t())
                packed = functional.sparsify_pack(y1, count=False)[0]
                gemm2_sparse = median_ms(lambda: functional.sparse_mm(packed, w2.t(), T))
                fused = use_fused_gemm1(x.device, x.dtype, T, d, hidden)
                fused_ms = median_ms(lambda: gemm_relu2_pack(x, w1)) if fused else None
            row = {
                "T": T, "d": d, "H": hidden,
                "dense_eager_ms": eager, "dense_compiled_ms": comp, "sparse_ms": sparse,
                "speedup_vs_compiled": comp / sparse, "speedup_vs_eager": eager / sparse,
                "sparsify_ms": pack_ms, "sparsify_GBps": pack_gbps,
                "sparsify_random_ms": rand_ms, "sparsify_random_GBps": rand_gbps, "sparsify_counting_ms": counting_ms,
                "gemm1_ms": gemm1, "gemm2_dense_ms": gemm2_dense, "gemm2_sparse_ms": gemm2_sparse,
                "gemm1_fused": fused, "fused_gemm1_pack_ms": fused_ms,
                "activation_sparsity": act_sparsity,
                "rel_diff_vs_dense": rel_err,
                **graphs,
            }
            rows.append(row)
            if progress:
                progress(row)
            torch.cuda.empty_cache()
    return rows


COLUMNS = [
    ("T", "T", "d"), ("d", "d", "d"), ("H", "H", "d"),
    ("dense_eager_ms", "eager ms", ".3f"), ("dense_compiled_ms", "compiled ms", ".3f"),
    ("sparse_ms", "act24 ms", ".3f"), ("speedup_vs_compiled", "x compiled", ".3f"),
    ("speedup_graph", "x compiled (CUDA graphs)", ".3f"), ("sparsify_ms", "pack ms", ".3f"), ("sparsify_GBps", "pack GB/s", ".0f"),
    ("sparsify_random_GBps", "pack GB/s (rand)", ".0f"),
    ("gemm2_dense_ms", "GEMM2 dense", ".3f"), ("gemm2_sparse_ms", "GEMM2 2:4", ".3f"),
    ("gemm1_ms", "GEMM1", ".3f"), ("fused_gemm1_pack_ms", "fused GEMM1+pack", ".3f"),
]
