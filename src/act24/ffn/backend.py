"""Which implementation runs the sparse FFN on a device, and why."""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Backend:
    name: str  # "reference" | "dense-fallback" | "cusparselt"
    reason: str


def cusparselt_version() -> int | None:
    try:
        if torch.backends.cusparselt.is_available():
            return torch.backends.cusparselt.version()
    except Exception:  # builds without the module
        pass
    return None


def triton_version() -> str | None:
    try:
        import triton
    except Exception:
        return None
    return triton.__version__


def packer_self_check(device: torch.device, dtype: torch.dtype) -> str | None:
    """Pack a probe with the kernel and with `torch._cslt_compress`; None if byte-identical, else why not."""
    from ..kernels.sparsify_pack import sparsify_pack
    from ..reference import masked_activation, squared_relu

    gen = torch.Generator(device=device).manual_seed(0)
    y1 = torch.randn(256, 512, device=device, generator=gen).to(dtype)
    y1[:64] -= 1.5  # sparse rows: groups with 0 and 1 non-zeros
    y1[64:68, :16] = 1.0  # ties
    y2 = squared_relu(y1)
    a = masked_activation(y2)
    try:
        ours = sparsify_pack(y1).packed
        theirs = torch._cslt_compress(a)
    except Exception as e:  # a kernel that cannot compile or run here
        return f"the packer failed its self-check: {type(e).__name__}: {e}"
    if ours.shape != theirs.shape or not torch.equal(ours.view(torch.int16), theirs.view(torch.int16)):
        return f"the packer's layout differs from torch._cslt_compress (cuSPARSELt {cusparselt_version()})"
    return None


def decide_cuda_backend(
    capability: tuple[int, int],
    cusparselt: int | None,
    triton: str | None,
    self_check: Callable[[], str | None],
) -> Backend:
    major, minor = capability
    if (major, minor) != (9, 0):
        return Backend("dense-fallback", f"compute capability {major}.{minor}: the fast kernels target sm90 (H100/H200)")
    if cusparselt is None:
        return Backend("dense-fallback", "this PyTorch build has no cuSPARSELt")
    if triton is None:
        return Backend("dense-fallback", "Triton is not installed")
    problem = self_check()
    if problem is not None:
        return Backend("dense-fallback", problem)
    return Backend("cusparselt", f"sm90 with cuSPARSELt {cusparselt} and Triton {triton}; packer self-check passed")


def _indexed(device: torch.device) -> torch.device:
    """"cuda" as "cuda:<current>": "cuda" and "cuda:0" get one decision, one self-check."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def backend_for(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> Backend:
    return _backend_for(_indexed(device), dtype)


@functools.lru_cache(maxsize=None)
def _backend_for(device: torch.device, dtype: torch.dtype) -> Backend:
    if device.type != "cuda":
        return Backend("reference", f"{device.type} device: the pure-PyTorch reference runs the sparse recipe")
    if dtype not in (torch.bfloat16, torch.float16):
        return Backend("dense-fallback", f"{dtype} activations: 2:4 tensor cores take bfloat16/float16 (use autocast)")
    return decide_cuda_backend(
        torch.cuda.get_device_capability(device),
        cusparselt_version(),
        triton_version(),
        lambda: packer_self_check(device, dtype),
    )


_warned: set[str] = set()


def warn_fallback_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"act24: sparse FFN runs densely ({reason})", RuntimeWarning, stacklevel=4)


@torch.compiler.assume_constant_result  # resolved once at trace time: no graph break under torch.compile
def sparse_path(device: torch.device, dtype: torch.dtype, exact: bool, d: int, hidden: int,
                trains_first_bias: bool = False) -> str:
    """How a sparse-mode FFN runs here: "recipe" (the plain-PyTorch recipe), "fast" (the sm90
    kernels) or "dense" (after one warning saying why).

    exact: keep the 2:4 semantics where the fast kernels cannot run (training; evaluation with
    the dispatch threshold at 0) instead of falling back to the dense FFN.
    trains_first_bias: training with a first-layer bias, which the fast training kernels do not take.
    """
    backend = backend_for(device, dtype)
    if backend.name == "reference":
        return "recipe"
    if backend.name == "cusparselt":
        from . import fast_forward  # needs Triton: imported only on the fast backend

        problem = fast_forward.supports(d, hidden)
        if problem is None and not trains_first_bias:
            return "fast"
        if exact:
            return "recipe"  # the 2:4 semantics hold for any shape or bias; only the speed-up needs the kernels
        warn_fallback_once(problem)
        return "dense"
    if exact and backend_for(device).name == "cusparselt":
        return "recipe"  # e.g. float32 training on a supported GPU: the recipe, not silently dense
    warn_fallback_once(backend.reason)
    return "dense"


# Fused GEMM1 (kernels/gemm_relu2_pack.py): GEMM1 with the packer as its epilogue, counting for training.
# Measured on the H200 at T=16384 (results/fused_gemm_pack.json): forward 1.18x against compiled dense at
# d=4096 (1.14x unfused) and 1.23x at d=2048 (1.10x), but 2% slower than unfused at d=8192, where its
# epilogue is no longer hidden behind the main loop. Off above this d.
FUSED_GEMM1_MAX_D = 4096
# Fused dy2 GEMM (kernels/gemm_relu2_grad_pack.py): the backward's dy2 = dy @ W2 with the token-wise stage
# as its epilogue. The same main loop as the fused GEMM1 over the same K = d: the same limit. Off unless
# ACT24_FUSED_DY2=1: on an H100 the training step read 0.9 ms slower with it at d=4096 and 0.06 ms at d=2048
# (results/fused_backward_ab_h100.json), although its parts alone add up to 0.3 ms less.
FUSED_DY2_MAX_D = 4096


def fused_gemm1_self_check(device: torch.device, dtype: torch.dtype, count: bool) -> str | None:
    """Build the fused GEMM1's variant and compare it with cuBLAS + the packer on integer inputs (exact
    sums, so the accumulation order cannot matter); None if the packed bytes (and counts, when counting)
    are identical, else why it is off. A missing toolchain raises cuda_build.BuildUnavailable."""
    from ..kernels.gemm_relu2_pack import gemm_relu2_pack
    from ..kernels.sparsify_pack import sparsify_pack

    x, w1 = _integer_operands(device, dtype, (256, 128), (512, 128))
    ours = gemm_relu2_pack(x, w1, count=count)
    theirs = sparsify_pack((x.float() @ w1.float().t()).to(dtype), count=count)
    if not torch.equal(ours.packed.view(torch.int16), theirs.packed.view(torch.int16)):
        return "the fused GEMM1's output differs from cuBLAS + the packer"
    if count and not (torch.equal(ours.kept_per_feature, theirs.kept_per_feature)
                      and torch.equal(ours.nonzeros_per_feature, theirs.nonzeros_per_feature)):
        return "the fused GEMM1's per-feature counts differ from the packer's"
    return None


def fused_dy2_self_check(device: torch.device, dtype: torch.dtype, count: bool = False) -> str | None:
    """Build the fused dy2 GEMM and compare its token-wise dy1 with cuBLAS + the backward packer's on integer
    inputs (exact sums); None if the bytes are identical, else why it is off."""
    from ..kernels.backward_pack import backward_pack
    from ..kernels.gemm_relu2_grad_pack import gemm_relu2_grad_pack
    from ..kernels.sparsify_pack import sparsify_pack

    y1, _ = _integer_operands(device, dtype, (256, 512), (1, 1))
    dy, w2 = _integer_operands(device, dtype, (256, 128), (128, 512), seed=1)
    packed = sparsify_pack(y1).packed
    ours = gemm_relu2_grad_pack(dy, w2, packed)
    none = torch.empty(0, dtype=torch.long, device=device)
    theirs = backward_pack(packed, (dy.float() @ w2.float()).to(dtype), torch.arange(256, device=device), none)
    if not torch.equal(ours.view(torch.int16), theirs.dy1_tokenwise.view(torch.int16)):
        return "the fused dy2 GEMM's token-wise dy1 differs from cuBLAS + the backward packer's"
    return None


def _integer_operands(device, dtype, a_shape, b_shape, seed: int = 0):
    """Small integers (exact products and sums in fp32), a's first 64 rows zero: all-zero groups; ties abound."""
    gen = torch.Generator(device=device).manual_seed(seed)
    a = torch.randint(-3, 4, a_shape, device=device, generator=gen).to(dtype)
    b = torch.randint(-2, 3, b_shape, device=device, generator=gen).to(dtype)
    a[:64] = 0
    return a, b


@dataclass(frozen=True)
class FusedKernel:
    """A CUTLASS kernel that replaces a GEMM and a Triton pass where its self-check passes."""

    name: str  # as messages name it
    switch: str  # the environment variable that turns it off ("0") or, where off by default, on ("1")
    self_check: Callable[[torch.device, torch.dtype, bool], str | None]
    fallback: str  # what runs instead, for the warning
    off_by_default_because: str | None = None  # set: off unless switch=1, for this measured reason


FUSED_GEMM1 = FusedKernel("the fused GEMM1", "ACT24_FUSED_GEMM1", fused_gemm1_self_check,
                          "GEMM1 and the packer run as two kernels")
FUSED_DY2 = FusedKernel("the fused dy2 GEMM", "ACT24_FUSED_DY2", fused_dy2_self_check,
                        "the backward's dy2 GEMM and its packer run as two kernels",
                        off_by_default_because="measured slower in the training step on an H100")

_fused_decisions: dict[tuple[str, torch.device, torch.dtype, bool], str | None] = {}


def fused_gemm1_reason(device: torch.device, dtype: torch.dtype, count: bool = False) -> str | None:
    """None if the forward may compute GEMM1 and the packing (counting per feature, for training or
    statistics, if `count`) in one kernel here, else why not.

    Decided once per device, dtype and `count` (ACT24_FUSED_GEMM1 is read then): each is a kernel of its
    own, built when first needed. Not while a CUDA graph is being captured, where the self-check could
    not run: such a call gets the two kernels and decides nothing."""
    return fused_reason(FUSED_GEMM1, device, dtype, count)


def fused_dy2_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """None if the training backward may compute dy2 = dy @ W2 and the token-wise dy1 in one kernel here, else
    why not; decided as fused_gemm1_reason (ACT24_FUSED_DY2)."""
    return fused_reason(FUSED_DY2, device, dtype, False)


def fused_reason(kernel: FusedKernel, device: torch.device, dtype: torch.dtype, variant: bool) -> str | None:
    device = _indexed(device)
    key = (kernel.name, device, dtype, variant)
    if key not in _fused_decisions:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return "not decided during CUDA-graph capture (run one call before capturing)"
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        with unset_fake_temporarily():  # tracing (export, make_fx) must not turn the self-check's tensors fake
            _fused_decisions[key] = _decide_fused(kernel, device, dtype, variant)
    return _fused_decisions[key]


def _decide_fused(kernel: FusedKernel, device: torch.device, dtype: torch.dtype, variant: bool) -> str | None:
    from ..kernels import cuda_build

    why_off = kernel.off_by_default_because
    if os.environ.get(kernel.switch, "0" if why_off else "1") == "0":
        return f"off unless {kernel.switch}=1 ({why_off})" if why_off else f"turned off by {kernel.switch}=0"
    if device.type != "cuda":
        return f"{device.type} device: {kernel.name} is a CUDA kernel"
    if dtype not in (torch.bfloat16, torch.float16):
        return f"{dtype} activations: {kernel.name} is built for bfloat16 and float16"
    backend = backend_for(device, dtype)
    if backend.name != "cusparselt":
        return f"the {backend.name} backend runs here ({backend.reason})"
    try:
        problem = kernel.self_check(device, dtype, variant)
    except cuda_build.BuildUnavailable as e:
        return str(e)  # a missing toolchain is a documented option, not worth a warning
    except Exception as e:  # nvcc failed, or the kernel cannot run here
        problem = f"{kernel.name} failed its self-check: {type(e).__name__}: {e}"
    if problem is not None:
        warnings.warn(f"act24: {kernel.fallback} ({problem})", RuntimeWarning, stacklevel=5)
    return problem


# Per GPU model, the largest tokens*d*hidden at which GEMM1 runs fused, in inference and training. On an H100
# CUTLASS's main loop loses to cuBLAS once the GEMM runs long at the 700 W power cap (a lower SM clock;
# results/fused_step_probe_h100.json). Alternated A/Bs there (results/fused_gemm1_ab_h100*.json,
# fused_backward_ab_h100.json) read the fused GEMM1 faster from 2^37 to 2^39 (inference +3.6..+11.5%, training
# -0.3..+1.7%) and slower at 2^40 (T=16384, d=4096: inference -2.3%, training -4.4%). The H200 gained from it at
# every size measured, up to 2^40.
FUSED_GEMM1_MAX_WORK = {"H100": 2**39}
NO_WORK_LIMIT = 2**62


@torch.compiler.assume_constant_result  # resolved once at trace time: no graph break under torch.compile
def fused_gemm1_max_work(device: torch.device) -> int:
    """The largest tokens*d*hidden the fused GEMM1 runs at on this device's GPU model."""
    if device.type == "cuda":
        name = _gpu_name(_indexed(device))
        for model, max_work in FUSED_GEMM1_MAX_WORK.items():
            if model in name:
                return max_work
    return NO_WORK_LIMIT


@functools.lru_cache(maxsize=None)
def _gpu_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device)


@torch.compiler.assume_constant_result  # arguments that are constants under torch.compile: no guard, no break
def _fused_gemm1_runs_here(device: torch.device, dtype: torch.dtype, count: bool) -> bool:
    return fused_gemm1_reason(device, dtype, count) is None


def fused_gemm1_allowed(device: torch.device, dtype: torch.dtype, d: int, count: bool = False) -> bool:
    """The fused GEMM1 runs here (its self-check passed) at this model width, whatever the token count."""
    return _fused_gemm1_runs_here(device, dtype, count) and d <= FUSED_GEMM1_MAX_D


def use_fused_gemm1(device: torch.device, dtype: torch.dtype, tokens: int, d: int, hidden: int, *,
                    count: bool = False) -> bool:
    """Whether GEMM1 of [tokens, d] activations and [hidden, d] weights runs with its packer as one kernel.
    Under torch.compile the sizes are guards (they may be symbolic), as in the sparse/dense dispatch."""
    if not fused_gemm1_allowed(device, dtype, d, count):
        return False
    max_work = fused_gemm1_max_work(device)
    return max_work == NO_WORK_LIMIT or tokens * d * hidden <= max_work  # no guard where there is no limit


@torch.compiler.assume_constant_result
def _fused_dy2_runs_here(device: torch.device, dtype: torch.dtype) -> bool:
    return fused_dy2_reason(device, dtype) is None


def use_fused_dy2(device: torch.device, dtype: torch.dtype, d: int) -> bool:
    return _fused_dy2_runs_here(device, dtype) and d <= FUSED_DY2_MAX_D
