"""The packers' arithmetic on every 16-bit value, which must round exactly like the reference's 16-bit
torch ops: the forward's ReLU² (packed 16x2 instructions on the GPU) and the backward's 2*sqrt(a).
Each value is tried at each of the 4 positions of a group (the packed instructions handle
positions 0, 1 and 2, 3 as the low and high halves of two words)."""

import pytest
import torch

from act24 import reference as ref
from act24.kernels.backward_pack import backward_pack
from act24.kernels.sparsify_pack import sparsify_pack
from act24.reference.cusparselt_layout import from_cusparselt_layout

pytestmark = pytest.mark.gpu
ROWS = 64


def _every_pattern(dtype, non_negative=False):
    bits = torch.arange(2**15 if non_negative else 2**16, dtype=torch.int32)
    return bits.to(torch.int16).view(dtype)


def _groups(values, rest):
    """[ROWS, ...] of groups holding one of `values` each, at every position in turn, `rest` elsewhere."""
    n = values.numel()
    g = torch.full((4 * n, 4), rest, dtype=values.dtype)
    g[torch.arange(4 * n), torch.arange(4).repeat_interleave(n)] = values.repeat(4)
    return g.reshape(ROWS, -1).cuda()


def _dense(packed, M, K):
    vals, idx = from_cusparselt_layout(packed.cpu(), M, K)
    return ref.decompress(ref.CompressedOperand(vals, idx.long())), idx


def _assert_same_bits(got, want, inputs):
    """Bit-equal 16-bit values, NaN anywhere NaN is expected (payloads aside); names inputs that differ."""
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan), f"NaN differs for inputs {inputs[got.isnan() != nan][:8].tolist()}"
    differ = (got.view(torch.int16) != want.view(torch.int16)) & ~nan
    assert not differ.any(), f"{int(differ.sum())} values differ, e.g. for inputs {inputs[differ][:8].tolist()}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_forward_relu2_rounds_like_the_reference_for_every_value(dtype):
    y1 = _groups(_every_pattern(dtype), rest=-1.0)  # relu(-1)**2 = 0: each group keeps one value's square
    M, K = y1.shape
    got, got_idx = _dense(sparsify_pack(y1).packed, M, K)
    want, want_idx = _dense(torch._cslt_compress(ref.masked_activation(ref.squared_relu(y1))), M, K)
    wrong = (got_idx != want_idx).reshape(M, K // 4, 2).any(-1).reshape(-1)  # per group
    groups = y1.cpu().reshape(-1, 4)
    assert not wrong.any(), f"metadata differs from torch._cslt_compress in {int(wrong.sum())} groups, e.g. {groups[wrong][:4].tolist()}"
    _assert_same_bits(got, want, y1.cpu())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_backward_square_root_rounds_like_the_reference_for_every_value(dtype):
    a = _groups(_every_pattern(dtype, non_negative=True), rest=0.0)  # Inf, NaN and subnormals included
    T, H = a.shape
    dy2 = torch.ones(T, H, dtype=dtype, device="cuda")
    out = backward_pack(torch._cslt_compress(a), dy2, torch.arange(T, device="cuda"),
                        torch.empty(0, dtype=torch.long, device="cuda"))
    got, _ = _dense(out.dy1_tokenwise, T, H)
    want = torch.where(a != 0, dy2 * 2 * a.sqrt(), 0.0).cpu()  # the reference's 16-bit ops
    _assert_same_bits(got, want, a.cpu())
