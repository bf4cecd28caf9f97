"""Argument checks shared by every layer: each error names the argument and the rule; and the
one-line summary of a caught error that a message quotes."""

from __future__ import annotations

import functools
import operator

import torch

FLOAT_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message ("" when it has none): library errors run to many lines."""
    return next(iter(str(error).splitlines()), "")


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """value as an int (any integer type, not a bool or a float) within [low, high)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None
    if (low is not None and value < low) or (high is not None and value >= high):
        bounds = f"in [{low}, {high})" if low is not None and high is not None else (
            f">= {low}" if low is not None else f"< {high}")
        raise ValueError(f"{name} must be an int {bounds}, got {value}")
    return value


def check_float(name: str, t: torch.Tensor, dtypes=FLOAT_DTYPES) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name} must have a floating dtype in ({allowed}), got {t.dtype}")


def check_ndim(name: str, t: torch.Tensor, ndim: int | None = None, min_ndim: int | None = None) -> None:
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if min_ndim is not None and t.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(t.shape)}")


def check_multiple(name: str, size: int, multiple: int, what: str) -> None:
    if size % multiple != 0:
        raise ValueError(f"{name}: {what} must be a multiple of {multiple}, got {size}")


def check_same_device(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; move both to one device")


def check_same_dtype(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; they must match")


def check_hopper(name: str, t: torch.Tensor, why: str) -> None:
    """Raise if CUDA tensor `t` is not on a Hopper GPU (the kernels' sm90 layout and instructions)."""
    if t.is_cuda:
        index = t.device.index if t.device.index is not None else torch.cuda.current_device()
        major, minor = _capability(index)
        if major != 9:
            raise RuntimeError(f"{name} is on cuda:{index}, {torch.cuda.get_device_name(index)} (compute capability "
                               f"{major}.{minor}): {why} and needs a Hopper GPU (compute capability 9.x)")


@functools.lru_cache(maxsize=None)
def _capability(device_index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device_index)  # cached: checked on every call
