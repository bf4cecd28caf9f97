"""The tiled transpose copy against torch (interpreter on CPU, real on GPU)."""

import pytest
import torch

from act24.kernels.transpose import transpose
from conftest import assert_equal_with_nan

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("M,N", [(64, 64), (128, 192), (100, 37), (1, 130), (0, 5)])
def test_transpose_equals_torch(M, N, dtype):
    x = torch.randn(M, N, generator=torch.Generator().manual_seed(M * 1000 + N)).to(dtype)
    x.view(-1)[::7] = float("nan")
    got = transpose(x.to(DEVICE)).cpu()
    assert got.is_contiguous() and got.shape == (N, M)
    assert_equal_with_nan(got, x.t())


def test_bad_input_is_rejected_with_the_rule():
    with pytest.raises(ValueError, match="must be 2-D"):
        transpose(torch.zeros(4, device=DEVICE))
    with pytest.raises(ValueError, match="x must be contiguous"):
        transpose(torch.zeros(8, 4, device=DEVICE).t())
