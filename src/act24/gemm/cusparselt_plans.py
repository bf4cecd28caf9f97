"""cuSPARSELt matmuls through plans built once per problem, called straight into the library torch loaded.

`torch._cslt_sparse_mm` builds a cuSPARSELt plan (descriptors, algorithm selection, plan) on
every call: ~0.4 ms of host time, which small problems and deep models cannot hide. Here a plan
is built once per (shape, dtype, dense layout, algorithm, device, thread) and every later call
is a single `cusparseLtMatmul`. The descriptors mirror torch's exactly (sparse A row-major with
ld = K; B row-major, or its transpose with op TRANSPOSE; D row-major), so the packed operands
that `torch._cslt_compress` and act24's packers write are valid for them. Before first use on a
device and dtype, and for each new plan, the results are compared with `torch._cslt_sparse_mm`
bit for bit (`cusparselt.planned_calls_ok`, `cusparselt.sparse_mm`); on any difference, or where the library cannot be loaded, callers
stay on torch's path. Enum values are those of cuSPARSELt 0.6 and later (0.5 numbered the compute
types differently), which `library()` requires.
"""

from __future__ import annotations

import collections
import ctypes
import threading
from dataclasses import dataclass

import torch

# enum values of cusparseLt.h / cusparse.h / library_types.h
_SUCCESS = 0
_CUDA_TYPE = {torch.float16: 2, torch.bfloat16: 14}  # CUDA_R_16F, CUDA_R_16BF
_ORDER_ROW = 2
_OP_N, _OP_T = 0, 1
_SPARSITY_50 = 0
_COMPUTE_32F = 2
_ALG_DEFAULT = 0
_ALG_CONFIG_ID, _SPLIT_K, _SPLIT_K_MODE = 0, 3, 4
_MIN_VERSION = 600
# opaque structs: 512 bytes (16-byte aligned) in cuSPARSELt 0.7+, 1024 before; the larger size fits both
_OPAQUE_BYTES = 1024
_FUNCTIONS = {
    "cusparseLtInit": (ctypes.c_void_p,),
    "cusparseLtDestroy": (ctypes.c_void_p,),
    "cusparseLtStructuredDescriptorInit": (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                           ctypes.c_int64, ctypes.c_uint32, ctypes.c_int, ctypes.c_int, ctypes.c_int),
    "cusparseLtDenseDescriptorInit": (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                      ctypes.c_int64, ctypes.c_uint32, ctypes.c_int, ctypes.c_int),
    "cusparseLtMatmulDescriptorInit": (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                       ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int),
    "cusparseLtMatmulAlgSelectionInit": (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int),
    "cusparseLtMatmulAlgSetAttribute": (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                        ctypes.c_size_t),
    "cusparseLtMatmulPlanInit": (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p),
    "cusparseLtMatmulGetWorkspace": (ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)),
    "cusparseLtGetErrorString": (ctypes.c_int,),
    "cusparseLtMatDescriptorDestroy": (ctypes.c_void_p,),
    "cusparseLtMatmulAlgSelectionDestroy": (ctypes.c_void_p,),
    "cusparseLtMatmulPlanDestroy": (ctypes.c_void_p,),
    "cusparseLtMatmul": (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_int32),
}


class LibraryError(RuntimeError):
    """cuSPARSELt cannot be called directly here (missing, too old, or without the expected symbols)."""


class StatusError(RuntimeError):
    """A cuSPARSELt call returned an error status (e.g. an algorithm this problem does not have)."""


SUPPORTED_DTYPES = tuple(_CUDA_TYPE)


def _opaque():
    """A zeroed 16-byte-aligned buffer for one of cuSPARSELt's opaque structs (it keeps its backing alive)."""
    raw = (ctypes.c_uint8 * (_OPAQUE_BYTES + 16))()
    return (ctypes.c_uint8 * _OPAQUE_BYTES).from_buffer(raw, -ctypes.addressof(raw) % 16)


def _loaded_library_path() -> str | None:
    """Where the process mapped libcusparseLt from (torch loads it with its CUDA libraries)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if "libcusparseLt" in line:
                    return line.split()[-1]
    except OSError:
        pass
    return None


_lib = None
_lib_error: str | None = None
_lib_lock = threading.Lock()


def library():
    """The cuSPARSELt library torch uses, with argument types declared; raises LibraryError."""
    global _lib, _lib_error
    with _lib_lock:
        if _lib is None and _lib_error is None:
            try:
                version = torch.backends.cusparselt.version()  # also makes sure torch has loaded it
                if version is None or version < _MIN_VERSION:
                    raise LibraryError(f"cuSPARSELt {version}, planned calls need {_MIN_VERSION} or later")
                lib = ctypes.CDLL(_loaded_library_path() or "libcusparseLt.so.0")
                for name, argtypes in _FUNCTIONS.items():
                    fn = getattr(lib, name)
                    fn.argtypes, fn.restype = argtypes, ctypes.c_int
                lib.cusparseLtGetErrorString.restype = ctypes.c_char_p
                _lib = lib
            except (OSError, AttributeError, RuntimeError) as e:
                _lib_error = f"{type(e).__name__}: {e}"
    if _lib is None:
        raise LibraryError(f"cuSPARSELt could not be called directly: {_lib_error}")
    return _lib


def _check(status: int, what: str) -> None:
    if status != _SUCCESS:
        message = (library().cusparseLtGetErrorString(status) or b"").decode(errors="replace")
        raise StatusError(f"cuSPARSELt {what} failed: status {status} ({message})")


class _Handle:
    """A cuSPARSELt handle for one device, released with its owner (a thread's handle table)."""

    def __init__(self, device: torch.device):
        self.struct, self._live = _opaque(), False
        with torch.cuda.device(device):
            _check(library().cusparseLtInit(ctypes.byref(self.struct)), f"init on {device}")
        self._live = True

    def __del__(self):
        try:
            if self._live:
                _lib.cusparseLtDestroy(ctypes.byref(self.struct))
        except Exception:  # interpreter shutdown: the library may already be gone
            pass


_local = threading.local()  # cuSPARSELt handles are not thread-safe: one per thread and device, like torch's


def _handle(device: torch.device) -> _Handle:
    handles = _local.__dict__.setdefault("handles", {})
    if device not in handles:
        handles[device] = _Handle(device)
    return handles[device]


@dataclass(frozen=True)
class PlanKey:
    m: int
    k: int
    n: int
    dtype: torch.dtype
    b_row_major: bool
    alg_id: int
    split_k: int
    split_k_mode: int
    device: torch.device

    def __str__(self) -> str:
        layout = "row" if self.b_row_major else "column"
        return (f"[{self.m}, {self.k}] 2:4 @ [{self.k}, {self.n}] {layout}-major, {self.dtype}, alg {self.alg_id}"
                f"{f', split-K {self.split_k} mode {self.split_k_mode}' if self.split_k != 1 else ''}, {self.device}")


class Plan:
    """Descriptors, algorithm and plan of one problem; kept alive together (the plan points into them)
    and destroyed together when the plan is dropped."""

    def __init__(self, key: PlanKey):
        self.key, self._destroy = key, []  # _destroy: what was initialised, released in __del__
        with torch.cuda.device(key.device):  # descriptors and plans are built for the current device
            self._build(library(), key)

    def _build(self, lib, key: PlanKey) -> None:
        self.handle = _handle(key.device)
        h = ctypes.byref(self.handle.struct)
        self.a_desc, self.b_desc, self.out_desc, self.matmul, self.selection, self.plan = (
            _opaque() for _ in range(6))
        kind = _CUDA_TYPE[key.dtype]
        _check(lib.cusparseLtStructuredDescriptorInit(h, ctypes.byref(self.a_desc), key.m, key.k, key.k, 16, kind,
                                                      _ORDER_ROW, _SPARSITY_50), f"sparse descriptor of {key}")
        self._destroy.append(("cusparseLtMatDescriptorDestroy", self.a_desc))
        b_rows, b_cols = (key.k, key.n) if key.b_row_major else (key.n, key.k)
        _check(lib.cusparseLtDenseDescriptorInit(h, ctypes.byref(self.b_desc), b_rows, b_cols, b_cols, 16, kind,
                                                 _ORDER_ROW), f"dense descriptor of {key}")
        self._destroy.append(("cusparseLtMatDescriptorDestroy", self.b_desc))
        _check(lib.cusparseLtDenseDescriptorInit(h, ctypes.byref(self.out_desc), key.m, key.n, key.n, 16, kind,
                                                 _ORDER_ROW), f"output descriptor of {key}")
        self._destroy.append(("cusparseLtMatDescriptorDestroy", self.out_desc))
        _check(lib.cusparseLtMatmulDescriptorInit(h, ctypes.byref(self.matmul), _OP_N,
                                                  _OP_N if key.b_row_major else _OP_T, ctypes.byref(self.a_desc),
                                                  ctypes.byref(self.b_desc), ctypes.byref(self.out_desc),
                                                  ctypes.byref(self.out_desc), _COMPUTE_32F),
               f"matmul descriptor of {key}")
        _check(lib.cusparseLtMatmulAlgSelectionInit(h, ctypes.byref(self.selection), ctypes.byref(self.matmul),
                                                    _ALG_DEFAULT), f"algorithm selection of {key}")
        self._destroy.append(("cusparseLtMatmulAlgSelectionDestroy", self.selection))
        self._set(lib, _ALG_CONFIG_ID, "algorithm id", key.alg_id)
        if key.split_k != 1:
            self._set(lib, _SPLIT_K, "split-K", key.split_k)
            if key.split_k_mode > 0:
                self._set(lib, _SPLIT_K_MODE, "split-K mode", key.split_k_mode)
        _check(lib.cusparseLtMatmulPlanInit(h, ctypes.byref(self.plan), ctypes.byref(self.matmul),
                                            ctypes.byref(self.selection)), f"plan of {key}")
        self._destroy.append(("cusparseLtMatmulPlanDestroy", self.plan))
        size = ctypes.c_size_t()
        _check(lib.cusparseLtMatmulGetWorkspace(h, ctypes.byref(self.plan), ctypes.byref(size)),
               f"workspace query of {key}")
        self.workspace_bytes = size.value
        self._matmul = lib.cusparseLtMatmul  # bound once: run() is the hot path
        self.alpha, self.beta = ctypes.c_float(1.0), ctypes.c_float(0.0)

    def _set(self, lib, attribute: int, name: str, value: int) -> None:
        v = ctypes.c_int(value)
        _check(lib.cusparseLtMatmulAlgSetAttribute(ctypes.byref(self.handle.struct), ctypes.byref(self.selection),
                                                    attribute, ctypes.byref(v), ctypes.sizeof(v)),
               f"setting {name} {value} of {self.key}")

    def __del__(self):
        # host-side state only: kernels already queued (or captured in a CUDA graph) do not use it
        try:
            for name, struct in reversed(self._destroy):
                getattr(_lib, name)(ctypes.byref(struct))
        except Exception:  # interpreter shutdown: the library may already be gone
            pass

    def run(self, packed: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if b.device.index != torch.cuda.current_device():  # the launch goes to the current device
            with torch.cuda.device(b.device):
                return self.run(packed, b)
        out = torch.empty(self.key.m, self.key.n, dtype=b.dtype, device=b.device)
        workspace = torch.empty(self.workspace_bytes, dtype=torch.uint8, device=b.device) if self.workspace_bytes else None
        stream = ctypes.c_void_p(torch.cuda.current_stream(b.device).cuda_stream)
        _check(self._matmul(
            ctypes.byref(self.handle.struct), ctypes.byref(self.plan), ctypes.byref(self.alpha), packed.data_ptr(),
            b.data_ptr(), ctypes.byref(self.beta), out.data_ptr(), out.data_ptr(),
            None if workspace is None else workspace.data_ptr(), ctypes.byref(stream), 1), f"matmul {self.key}")
        return out


MAX_PLANS = 128  # per thread; prefill lengths vary, and each distinct row count gets a plan


def plan_for(key: PlanKey) -> Plan:
    """The plan of `key`, built on first use; the least recently used is dropped past MAX_PLANS."""
    plans = _local.__dict__.setdefault("plans", collections.OrderedDict())
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = Plan(key)
        if len(plans) > MAX_PLANS:
            plans.popitem(last=False)
    else:
        plans.move_to_end(key)
    return plan


def planned_calls() -> dict:
    """This thread's plans by call signature (`cusparselt.sparse_mm`'s fast path), emptied when it reaches
    MAX_PLANS. Its entries keep their plans alive: a thread holds at most 2 x MAX_PLANS plans."""
    calls = _local.__dict__.setdefault("calls", {})
    if len(calls) >= MAX_PLANS:
        calls.clear()
    return calls
