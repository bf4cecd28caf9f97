"""Where a kernel launches. Triton, and act24's CUDA kernel called on the current stream, launch on
the current device, not on their tensors' device: a launch for tensors on another GPU (a model spread
over devices in one process) makes their device current first."""

from __future__ import annotations

import contextlib

import torch


def on_device_of(t: torch.Tensor):
    """A context in which launches go to t's device (nothing to switch for CPU tensors: the interpreter)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
