"""Which implementation runs the sparse FFN on a device, and why."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Backend:
    name: str  # "reference" | "dense-fallback" | "cusparselt"
    reason: str


def cusparselt_version() -> int | None:
    try:
        if torch.backends.cusparselt.is_available():
            return torch.backends.cusparselt.version()
    except Exception:  # older builds without the module
        pass
    return None


def triton_version() -> str | None:
    try:
        import triton
    except Exception:
        return None
    return triton.__version__


@functools.lru_cache(maxsize=None)
def backend_for(device: torch.device) -> Backend:
    if device.type != "cuda":
        return Backend("reference", f"{device.type} device: the pure-PyTorch reference runs the sparse recipe")
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) != (9, 0):
        return Backend("dense-fallback", f"compute capability {major}.{minor}: the fast kernels target sm90 (H100/H200)")
    if cusparselt_version() is None:
        return Backend("dense-fallback", "this PyTorch build has no cuSPARSELt")
    if triton_version() is None:
        return Backend("dense-fallback", "Triton is not installed")
    return Backend("dense-fallback", "the fast sm90 kernels are not part of this version yet")


_warned: set[str] = set()


def warn_fallback_once(backend: Backend) -> None:
    if backend.name == "dense-fallback" and backend.reason not in _warned:
        _warned.add(backend.reason)
        warnings.warn(f"act24: sparse FFN runs densely ({backend.reason})", RuntimeWarning, stacklevel=3)
