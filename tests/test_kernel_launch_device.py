"""Every Triton launch goes through `on_device_of` its tensors: Triton launches on the current device,
so a model on a second GPU would otherwise run its kernels on the first (tests/test_gpu_two_devices.py
checks the outcome where two GPUs are)."""

import contextlib

import pytest
import torch

from act24.kernels import backward_pack, sparsify_pack, transpose
from act24.kernels.launch import on_device_of

BF16 = torch.bfloat16


def test_cpu_tensors_switch_no_device():
    with on_device_of(torch.zeros(1)):
        pass


@pytest.fixture
def launches(monkeypatch):
    seen = []
    for module in (sparsify_pack, backward_pack, transpose):
        monkeypatch.setattr(module, "on_device_of", lambda t: seen.append(t) or contextlib.nullcontext())
    return seen


def test_each_kernel_launches_on_its_tensors_device(launches):
    g = torch.Generator().manual_seed(0)
    y1 = torch.randn(64, 64, generator=g).to(BF16)
    packed = sparsify_pack.sparsify_pack(y1, count=True)
    assert launches[-1] is y1
    dy2 = torch.randn(64, 64, generator=g).to(BF16)
    perm = torch.randperm(64, generator=g)
    ops = backward_pack.backward_pack(packed.packed, dy2, perm, torch.tensor([3, 1]))
    assert launches[-1] is packed.packed
    backward_pack.featurewise_pack(packed.packed, ops.dy1_tokenwise, perm, torch.tensor([3, 1]))
    assert launches[-1] is packed.packed
    x = torch.randn(64, 32, generator=g).to(BF16)
    transpose.transpose(x)
    assert launches[-1] is x and len(launches) == 4
