import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from act24 import reference as ref
from conftest import adversarial_groups


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 12),
    groups=st.integers(1, 12),
    dtype=st.sampled_from([torch.float64, torch.float32, torch.bfloat16, torch.float16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_compress_round_trip(rows, groups, dtype, seed):
    x = adversarial_groups(rows, groups, dtype, seed=seed)
    mask = ref.tokenwise_mask(x)
    op = ref.compress(x, mask)
    assert op.shape == (rows, 4 * groups)
    assert op.values.shape == (rows, 2 * groups) and op.indices.dtype == torch.uint8
    assert torch.equal(ref.mask_of(op), mask)
    expected = torch.where(mask, x, torch.zeros((), dtype=dtype))
    assert torch.allclose(ref.decompress(op).double(), expected.double(), rtol=0, atol=0, equal_nan=True)
    # positions are ascending inside each group, values in the same order
    idx = op.indices.reshape(rows, groups, 2)
    assert (idx[..., 0] < idx[..., 1]).all()


def test_compress_known_example():
    x = torch.tensor([[0.0, 3.0, 0.0, 1.0, 5.0, 6.0, 0.0, 0.0]])
    op = ref.compress(x, ref.tokenwise_mask(x))
    assert op.values.tolist() == [[3.0, 1.0, 5.0, 6.0]]
    assert op.indices.tolist() == [[1, 3, 0, 1]]


def test_compress_rejects_bad_masks():
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match="exactly 2 positions"):
        ref.compress(x, torch.ones(2, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool tensor"):
        ref.compress(x, torch.ones(2, 8))
    with pytest.raises(ValueError, match="multiple of 4"):
        ref.compress(torch.randn(2, 6), torch.ones(2, 6, dtype=torch.bool))
