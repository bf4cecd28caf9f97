"""FFN forward + backward: dense eager, dense torch.compile, act24 sparse; a per-part breakdown and
the activation bytes each saves for the backward.

Operands as in the forward benchmark (~90% of relu(x @ W1.T)**2 is zero); dy ~ N(0, 1).
act24 runs its training path (GEMM1 with the packing as its epilogue where use_fused_gemm1 allows, else
GEMM1 then the Triton packer; dy2's GEMM with the token-wise dy1 as its epilogue then the feature-wise
packer where use_fused_dy2 allows, else dy2's GEMM then the whole backward packer; cuSPARSELt GEMMs, densest
5% of features dense).
"""

from __future__ import annotations

import torch

from .. import reference as ref
from ..ffn import fast_forward
from ..ffn.backend import use_fused_dy2, use_fused_gemm1
from ..gemm import cusparselt
from ..kernels.backward_pack import backward_pack, featurewise_pack
from ..kernels.gemm_relu2_grad_pack import gemm_relu2_grad_pack
from ..kernels.gemm_relu2_pack import gemm_relu2_pack
from ..kernels.sparsify_pack import sparsify_pack
from ..kernels.transpose import transpose
from ..ops.sparse_training_ops import dense_feature_selection
from .common import ROUNDS, alternating_medians, graph_timings, median_ms
from .ffn_forward import SHAPES, TOKENS, compiled_baseline_and_operands

DENSE_FRACTION = 0.05
PERM_SEED = 0
COLUMNS = [
    ("T", "T", "d"), ("d", "d", "d"), ("H", "H", "d"),
    ("dense_eager_ms", "eager ms", ".2f"), ("dense_compiled_ms", "compiled ms", ".2f"),
    ("sparse_ms", "act24 ms", ".2f"), ("speedup_vs_compiled", "x compiled", ".3f"),
    ("speedup_graph", "x compiled (CUDA graphs)", ".3f"), ("saved_fraction", "saved bytes vs dense", ".2f"),
]


def saved_activation_bytes(forward, exclude: tuple[torch.Tensor, ...]) -> int:
    """Bytes autograd keeps for the backward of `forward()`, counted once per storage; the tensors
    in `exclude` (the weights) are not activations. The input x is counted: every variant saves it."""
    seen: dict[tuple[int, int], int] = {}
    skip = {t.data_ptr() for t in exclude}

    def pack(t):
        if t.data_ptr() not in skip:
            seen[(t.data_ptr(), t.untyped_storage().nbytes())] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(seen.values())


def act24_train_ffn(num_dense: int):
    """act24's training FFN as the benchmarks call it: (x, w1, w2) -> y."""
    def forward(x, w1, w2):
        return fast_forward.sparse_train_forward(x, w1, w2, PERM_SEED, num_dense)[0]
    return forward


def train_step(forward, x, w1, w2, dy):
    def step():
        for t in (x, w1, w2):
            t.grad = None  # time the backward without gradient accumulation
        forward(x, w1, w2).backward(dy)
    return step


def backward_pack_inputs(x, w1, w2, dy, num_dense):
    """What the training step hands the backward packer: (y1, the forward's PackedActivation,
    dy2, the token grouping, the dense features)."""
    y1 = x @ w1.t()
    pk = sparsify_pack(y1)
    perm = ref.cached_token_permutation(x.shape[0], PERM_SEED, x.device)
    return y1, pk, dy @ w2, perm, dense_feature_selection(pk.kept_per_feature, num_dense, x.shape[0])


def _parts(x, w1, w2, dy, num_dense) -> dict:
    """Each piece of the act24 step alone (medians, ms)."""
    T, H = x.shape[0], w1.shape[0]
    y1, pk, dy2, perm, dense = backward_pack_inputs(x, w1, w2, dy, num_dense)
    ops = backward_pack(pk.packed, dy2, perm, dense)
    x_perm, dy_perm = x[perm], dy[perm]
    parts = {
        "gemm1_dense": median_ms(lambda: x @ w1.t()),
        "sparsify_pack": median_ms(lambda: sparsify_pack(y1)),
        "gemm2_sparse": median_ms(lambda: cusparselt.sparse_mm(pk.packed, w2.t(), T)),
        "dy2_dense": median_ms(lambda: dy @ w2),
        "dense_feature_selection": median_ms(lambda: dense_feature_selection(pk.kept_per_feature, num_dense, T)),
        "backward_pack": median_ms(lambda: backward_pack(pk.packed, dy2, perm, dense)),
        "dx_sparse": median_ms(lambda: cusparselt.sparse_mm(ops.dy1_tokenwise, w1, T)),
        "permute_x_dy": median_ms(lambda: (x[perm], dy[perm])),
        "dw1_sparse": median_ms(lambda: cusparselt.sparse_mm(ops.dy1_featurewise, x_perm, H)),
        "dw2_sparse": median_ms(lambda: cusparselt.sparse_mm(ops.a_featurewise, dy_perm, H)),
        "dense_features": median_ms(lambda: (ops.dy1_dense @ x_perm, ops.a_dense @ dy_perm)),
        "dw2_transpose": median_ms(lambda: transpose(torch.empty(H, x.shape[1], dtype=x.dtype, device=x.device))),
    }
    if use_fused_gemm1(x.device, x.dtype, *x.shape, H, count=True):  # what the step runs instead of the first two
        parts["fused_gemm1_pack"] = median_ms(lambda: gemm_relu2_pack(x, w1, count=True))
    if use_fused_dy2(x.device, x.dtype, x.shape[1]):  # what the step runs instead of dy2_dense + backward_pack
        parts["fused_dy2_pack"] = median_ms(lambda: gemm_relu2_grad_pack(dy, w2, pk.packed))
        parts["featurewise_pack"] = median_ms(lambda: featurewise_pack(pk.packed, ops.dy1_tokenwise, perm, dense))
    y2 = ref.squared_relu(y1)
    dense_parts = {
        "dense_gemm1": parts["gemm1_dense"],
        "dense_gemm2": median_ms(lambda: y2 @ w2.t()),
        "dense_dy2": parts["dy2_dense"],
        "dense_dx": median_ms(lambda: dy2 @ w1),
        "dense_dw1": median_ms(lambda: dy2.t() @ x),
        "dense_dw2": median_ms(lambda: dy.t() @ y2),
    }
    return {**parts, **dense_parts}


def train_rows(tokens=TOKENS, shapes=SHAPES, progress=None, rounds: int = ROUNDS) -> list[dict]:
    rows = []
    for d, hidden in shapes:
        for T in tokens:
            compiled, x, w1, w2 = compiled_baseline_and_operands(T, d, hidden)
            dy = torch.randn(T, d, device="cuda", dtype=x.dtype)
            num_dense = ref.dense_feature_count(hidden, DENSE_FRACTION)
            xs, w1s, w2s = (t.detach().requires_grad_() for t in (x, w1, w2))
            forwards = {"dense_eager": ref.dense_ffn, "dense_compiled": compiled, "sparse": act24_train_ffn(num_dense)}
            steps = {name: train_step(fn, xs, w1s, w2s, dy) for name, fn in forwards.items()}
            times = alternating_medians(steps, rounds)
            # the same steps replayed from CUDA graphs: no host cost (what small shapes pay for)
            graphs = graph_timings(steps["dense_compiled"], steps["sparse"], rounds)
            saved = {name: saved_activation_bytes(lambda: fn(xs, w1s, w2s), (w1s, w2s)) for name, fn in forwards.items()}
            row = {
                "T": T, "d": d, "H": hidden,
                "dense_eager_ms": times["dense_eager"], "dense_compiled_ms": times["dense_compiled"],
                "sparse_ms": times["sparse"],
                "speedup_vs_compiled": times["dense_compiled"] / times["sparse"],
                "speedup_vs_eager": times["dense_eager"] / times["sparse"],
                "saved_activation_bytes_dense": saved["dense_eager"],
                "saved_activation_bytes_dense_compiled": saved["dense_compiled"],
                "saved_activation_bytes_sparse": saved["sparse"],
                "saved_fraction": saved["sparse"] / saved["dense_eager"],
                "num_dense_features": num_dense,
                "gemm1_fused": use_fused_gemm1(x.device, x.dtype, T, d, hidden, count=True),
                "dy2_fused": use_fused_dy2(x.device, x.dtype, d),
                **graphs,
            }
            with torch.no_grad():
                row["parts"] = _parts(x, w1, w2, dy, num_dense)
            rows.append(row)
            if progress:
                progress(row)
            del compiled
            torch.cuda.empty_cache()
    return rows


def step_ab(T: int, d: int, H: int, arms: dict, rounds: int = ROUNDS) -> dict:
    """act24's training step at one shape under each arm — {name: a function returning a context
    manager that sets the arm up (a setting patched) for the whole step} — against compiled dense,
    alternated in one process: {"T", "d", "H", "ms": {name: median}, "speedup": {name: vs compiled}}."""
    compiled, x, w1, w2 = compiled_baseline_and_operands(T, d, H)
    num_dense = ref.dense_feature_count(H, DENSE_FRACTION)
    dy = torch.randn_like(x)
    xs, w1s, w2s = (t.detach().requires_grad_() for t in (x, w1, w2))
    step = train_step(act24_train_ffn(num_dense), xs, w1s, w2s, dy)

    def under(arm):
        def run():
            with arm():
                step()
        return run
    ms = alternating_medians({"compiled_dense": train_step(compiled, xs, w1s, w2s, dy),
                              **{name: under(arm) for name, arm in arms.items()}}, rounds)
    return {"T": T, "d": d, "H": H, "ms": ms, "speedup": {name: ms["compiled_dense"] / ms[name] for name in arms}}
