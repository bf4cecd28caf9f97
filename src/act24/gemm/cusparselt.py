"""2:4 sparse GEMM through cuSPARSELt (`torch._cslt_sparse_mm`).

out[M, N] = A[M, K] @ B[K, N] where A is 2:4 sparse along K and given packed in
cuSPARSELt's layout ([M, K*9/16], as `torch._cslt_compress` returns it for M and K
multiples of 64, the only shapes used here). The best algorithm differs per shape and
some raise on some shapes, so every algorithm that runs is timed once per (power of two of rows,
K, N, dtype, layout, device), and the fastest is cached. `transpose_result` is
never used: it measured slower than dense on the H200.

Calls go through plans built once per problem (`cusparselt_plans`), which saves torch's
per-call plan construction, wherever they were checked equal to `torch._cslt_sparse_mm` on
that device and dtype; elsewhere through `torch._cslt_sparse_mm` itself.
"""

from __future__ import annotations

import statistics
import threading
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from ..reference.checks import check_same_device, first_line
from . import cusparselt_plans


@dataclass(frozen=True)
class Algorithm:
    alg_id: int
    split_k: int = 1
    split_k_mode: int = -1


class NoAlgorithmError(RuntimeError):
    pass


_cache: dict[tuple, Algorithm] = {}


def _b_layout(b: torch.Tensor) -> str:
    if b.is_contiguous():
        return "row"
    if b.t().is_contiguous():
        return "col"
    raise ValueError(
        f"dense operand must be contiguous or the transpose of a contiguous tensor, got strides {b.stride()}"
    )


_SCHEMA_ARGS = {a.name for a in torch.ops.aten._cslt_sparse_mm.default._schema.arguments}


# False: every call through torch._cslt_sparse_mm (benchmarks compare the two)
DIRECT_CALLS = True
_direct_checked: dict[tuple, bool] = {}
_first_use = threading.RLock()  # one self-check and one algorithm search at a time (they time the GPU)


def _plan_key(packed, b, alg: Algorithm) -> cusparselt_plans.PlanKey:
    return cusparselt_plans.PlanKey(packed.shape[0], b.shape[0], b.shape[1], b.dtype, b.is_contiguous(), alg.alg_id,
                                    alg.split_k, alg.split_k_mode, b.device)


def _torch_call(packed, b, alg: Algorithm) -> Callable[[], torch.Tensor]:
    kwargs = {"alg_id": alg.alg_id}
    if alg.split_k != 1:  # split-K arguments changed names across torch versions
        kwargs["split_k"] = alg.split_k
        if "split_k_mode" in _SCHEMA_ARGS:
            kwargs["split_k_mode"] = alg.split_k_mode
        elif "split_k_one_kernel" in _SCHEMA_ARGS:
            kwargs["split_k_one_kernel"] = bool(alg.split_k_mode)
    return lambda: torch._cslt_sparse_mm(packed, b, **kwargs)


_generation = 0  # bumped whenever planned calls are turned off somewhere: saved fast-path calls expire
_verified: set[cusparselt_plans.PlanKey] = set()  # plans whose result was compared with torch's


def _use_torch(dtype: torch.dtype, device: torch.device, reason: str) -> None:
    global _generation
    warnings.warn(f"act24: cuSPARSELt called through torch for {dtype} on {device} "
                  f"(0.4-0.8 ms more host time per call): {reason}", stacklevel=2)
    _direct_checked[(dtype, device)] = False
    _generation += 1


def _disagreement(packed, b, alg: Algorithm) -> str | None:
    """None if a planned call with `alg` gives torch's result bit for bit (the plan is kept and marked
    verified), else how they differ."""
    key = _plan_key(packed, b, alg)
    ours = cusparselt_plans.plan_for(key).run(packed, b)
    theirs = _torch_call(packed, b, alg)()
    if torch.equal(ours, theirs):
        _verified.add(key)
        return None
    diff = (ours.float() - theirs.float()).abs().max().item()
    return f"planned calls differ from torch._cslt_sparse_mm for {key} (max abs difference {diff:.3g})"


def planned_calls_ok(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether calls may be planned on this device and dtype: checked once against torch, bit for bit, on a
    non-square probe in both dense layouts. Not decided inside a CUDA-graph capture (the probe synchronises)."""
    key = (dtype, device)
    if key in _direct_checked:
        return _direct_checked[key]
    if dtype not in cusparselt_plans.SUPPORTED_DTYPES or (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
        return False
    with _first_use:
        if key not in _direct_checked:
            try:
                g = torch.Generator(device=device).manual_seed(0)
                a = torch.randn(64, 128, dtype=dtype, device=device, generator=g)
                packed = torch._cslt_compress(a * (torch.arange(128, device=device) % 4 < 2))  # 2:4 along rows
                b = torch.randn(128, 192, dtype=dtype, device=device, generator=g)
                reason = next(filter(None, (_disagreement(packed, bb, Algorithm(0))
                                            for bb in (b, b.t().contiguous().t()))), None)
            except torch.OutOfMemoryError:
                raise
            except RuntimeError as e:  # the library, a status, or torch's own 2:4 ops failing here
                reason = f"{type(e).__name__}: {first_line(e)}"
            if reason:
                _use_torch(dtype, device, reason)
            else:
                _direct_checked[key] = True
    return _direct_checked[key]


def _runner(packed, b, alg: Algorithm, *, keep_plan: bool = True) -> Callable[[], torch.Tensor]:
    """A call of the product with `alg`: a planned call where planned calls passed their check (the plan
    kept for later calls unless `keep_plan` is False: the algorithm search times candidates it drops),
    else torch._cslt_sparse_mm."""
    if DIRECT_CALLS and planned_calls_ok(b.dtype, b.device):
        key = _plan_key(packed, b, alg)
        plan = cusparselt_plans.plan_for(key) if keep_plan else cusparselt_plans.Plan(key)
        return lambda: plan.run(packed, b)
    return _torch_call(packed, b, alg)


def _run(packed, b, alg: Algorithm) -> torch.Tensor:
    return _runner(packed, b, alg)()


def _time_ms(fn: Callable[[], object], reps: int = 3) -> float:
    fn()  # warm-up: plan creation, workspace
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def choose_fastest(candidates: Iterable[Algorithm], time_candidate: Callable[[Algorithm], float]) -> Algorithm:
    """The candidate with the lowest time; candidates that raise are skipped."""
    best, best_ms, errors = None, float("inf"), []
    for alg in candidates:
        try:
            ms = time_candidate(alg)
        except RuntimeError as e:  # cuSPARSELt reports unsupported configurations as errors
            errors.append(f"{alg}: {first_line(e)}")
            continue
        if ms < best_ms:
            best, best_ms = alg, ms
    if best is None:
        raise NoAlgorithmError("no cuSPARSELt algorithm runs for this problem: " + "; ".join(errors[:3]))
    return best


def _candidates(packed, b) -> list[Algorithm]:
    searched = torch._C._cusparselt.mm_search(packed, b, None, None, None, False)
    # (alg_id, split_k, split_k_mode or one-kernel flag, number of algorithms)
    first = Algorithm(int(searched[0]), int(searched[1]), int(searched[2]) if len(searched) > 3 else -1)
    max_alg = int(searched[-1]) if len(searched) > 3 else first.alg_id + 1
    plain = [Algorithm(a) for a in range(max(max_alg, 1))]
    return [first] + [a for a in plain if a != first]


def rows_bucket(m: int) -> int:
    """The power of two at or above m: one algorithm search serves every row count up to it (prefill
    lengths vary, and a search costs tens of milliseconds)."""
    return 1 << max(m - 1, 1).bit_length()


def _search(packed: torch.Tensor, b: torch.Tensor) -> Algorithm:
    """The fastest algorithm for this exact problem; where calls are planned, checked against torch's
    result once (the self-check probes algorithm 0 only)."""
    try:
        cands = _candidates(packed, b)
    except RuntimeError:  # the search itself can fail on some shapes
        cands = [Algorithm(a) for a in range(4)]
    # timed on b's device: CUDA events record on the current device's stream
    with torch.cuda.device(b.device):
        alg = choose_fastest(cands, lambda a: _time_ms(_runner(packed, b, a, keep_plan=False)))
        if DIRECT_CALLS and planned_calls_ok(b.dtype, b.device):
            reason = _disagreement(packed, b, alg)
            if reason:
                _use_torch(b.dtype, b.device, reason)
                alg = choose_fastest(cands, lambda a: _time_ms(_torch_call(packed, b, a)))
    return alg


def _cache_key(rows, b: torch.Tensor) -> tuple:
    """rows: ("rows", m) for one row count, ("bucket", power of two) for the search shared by a bucket."""
    return (rows, b.shape[0], b.shape[1], b.dtype, _b_layout(b), b.device)


def algorithm_for(packed: torch.Tensor, b: torch.Tensor, m: int) -> Algorithm:
    """The cached algorithm of this exact row count, else of its power-of-two bucket (searched on first use)."""
    bucket = _cache_key(("bucket", rows_bucket(m)), b)
    alg = _cache.get(_cache_key(("rows", m), b)) or _cache.get(bucket)
    if alg is None:
        with _first_use:
            alg = _cache.get(bucket)
            if alg is None:
                alg = _cache[bucket] = _search(packed, b)
    return alg


def _check_operands(packed: torch.Tensor, b: torch.Tensor, m: int) -> None:
    k = b.shape[0]
    if m % 64 or k % 64:
        raise ValueError(f"the sparse operand's rows ({m}) and columns ({k}) must be multiples of 64")
    if packed.shape != (m, k * 9 // 16):
        raise ValueError(f"packed operand must have shape ({m}, {k * 9 // 16}) for a [{m}, {k}] matrix, got {tuple(packed.shape)}")
    if packed.dtype != b.dtype:
        raise TypeError(f"packed operand is {packed.dtype} but the dense operand is {b.dtype}")
    check_same_device("packed operand", packed, "the dense operand", b)


def sparse_mm(packed: torch.Tensor, b: torch.Tensor, m: int) -> torch.Tensor:
    """A @ B for the packed 2:4 operand A [m, K] and dense B [K, N] (row- or column-major)."""
    # a call exactly like an earlier planned one (shapes, strides, dtypes, devices) goes straight to
    # its plan: the checks and lookups below cost more host time than the matmul call itself
    call = (m, packed.shape, packed.stride(), packed.dtype, packed.device, b.shape, b.stride(), b.dtype, b.device)
    calls = cusparselt_plans.planned_calls()
    saved = calls.get(call) if DIRECT_CALLS else None
    if saved is not None and saved[0] == _generation:
        return saved[1].run(packed, b)
    _check_operands(packed, b, m)
    alg = algorithm_for(packed, b, m)
    try:
        out = _run(packed, b, alg)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError:
        if _cache.get(_cache_key(("rows", m), b)) is not None:
            raise
        # the bucket's algorithm was found at another row count and does not run at this one
        with _first_use:
            alg = _cache[_cache_key(("rows", m), b)] = _search(packed, b)
        out = _run(packed, b, alg)
    capturing = b.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    if DIRECT_CALLS and planned_calls_ok(b.dtype, b.device) and not capturing:
        key = _plan_key(packed, b, alg)
        if key not in _verified:  # each plan's result compared with torch's once (not inside a capture)
            theirs = _torch_call(packed, b, alg)()
            if not torch.equal(out, theirs):
                _use_torch(b.dtype, b.device, f"planned calls differ from torch._cslt_sparse_mm for {key}")
                return theirs
            _verified.add(key)
        calls[call] = (_generation, cusparselt_plans.plan_for(key))
    return out
