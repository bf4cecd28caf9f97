"""The packers' arithmetic on every 16-bit value, which must round exactly like the reference's 16-bit
torch ops: the forward's ReLU² (packed 16x2 instructions on the GPU) and the backward's 2*sqrt(a)."""

import pytest
import torch

from act24 import reference as ref
from act24.kernels.backward_pack import backward_pack
from act24.kernels.sparsify_pack import sparsify_pack
from act24.reference.cusparselt_layout import from_cusparselt_layout

pytestmark = pytest.mark.gpu
ROWS = 64  # 64 x 4096 groups: every pattern of 2**16 (forward) or 2**15 (backward) once at least


def _every_pattern(dtype, count, non_negative=False):
    bits = torch.arange(count, dtype=torch.int32)
    if non_negative:
        bits = bits & 0x7FFF
    return bits.to(torch.int16).view(dtype)


def _groups(values, rest):
    """[ROWS, 4 * n] with value v at position 0 of each group and `rest` at positions 1-3."""
    g = torch.full((values.numel(), 4), rest, dtype=values.dtype)
    g[:, 0] = values
    return g.reshape(ROWS, -1).cuda()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_forward_relu2_rounds_like_the_reference_for_every_value(dtype):
    y1 = _groups(_every_pattern(dtype, ROWS * 4096), rest=-1.0)  # relu(-1)**2 = 0: v's square is kept
    packed = sparsify_pack(y1).packed
    expected = torch._cslt_compress(ref.masked_activation(ref.squared_relu(y1)))
    got = packed.view(torch.int16)
    want = expected.view(torch.int16)
    if not torch.equal(got, want):
        vals_got, _ = from_cusparselt_layout(packed.cpu(), *y1.shape)
        vals_want, _ = from_cusparselt_layout(expected.cpu(), *y1.shape)
        differ = (vals_got.view(torch.int16) != vals_want.view(torch.int16)).reshape(-1, 2)[:, 0]
        inputs = y1.cpu().reshape(-1, 4)[:, 0][differ]
        pytest.fail(f"{int(differ.sum())} values differ, e.g. inputs {inputs[:8].tolist()}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_backward_square_root_rounds_like_the_reference_for_every_value(dtype):
    a = _groups(_every_pattern(dtype, ROWS * 4096, non_negative=True), rest=0.0)  # Inf and NaN included
    T, H = a.shape
    packed_a = torch._cslt_compress(a)
    dy2 = torch.ones(T, H, dtype=dtype, device="cuda")
    out = backward_pack(packed_a, dy2, torch.arange(T, device="cuda"), torch.empty(0, dtype=torch.long, device="cuda"))
    got, _ = from_cusparselt_layout(out.dy1_tokenwise.cpu(), T, H)
    got = got.reshape(-1, 2)[:, 0]  # each group keeps position 0 (a) and a zero
    values = a.reshape(-1, 4)[:, 0]
    want = torch.where(values != 0, 1.0 * 2 * values.sqrt(), 0.0).cpu()  # the reference's 16-bit ops
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan)
    differ = got[~nan].view(torch.int16) != want[~nan].view(torch.int16)
    assert not differ.any(), f"{int(differ.sum())} values differ, e.g. a = {values.cpu()[~nan][differ][:8].tolist()}"
