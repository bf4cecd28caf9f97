"""The fused ReLU² + 2:4 + pack kernel against the reference (interpreter on CPU, real on GPU)."""

import pytest
import torch

from act24 import reference as ref
from act24.reference.cusparselt_layout import compress_reference, from_cusparselt_layout
from act24.kernels.sparsify_pack import MAX_BLOCKS_PER_PROGRAM, sparsify_pack
from conftest import assert_equal_with_nan, relu2_inputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _expected(y1):
    y2 = ref.squared_relu(y1)
    a = ref.masked_activation(y2)
    return y2, a


def _same_bytes(got, expected, M, K):
    """Packed buffers equal byte for byte, except NaN payloads (the GPU's NaN arithmetic canonicalises them)."""
    got, expected = got.cpu().reshape(-1), expected.reshape(-1)
    vals = M * K // 2
    nan = expected[:vals].isnan()
    assert torch.equal(got[:vals].isnan(), nan)
    assert torch.equal(got[:vals][~nan].view(torch.int16), expected[:vals][~nan].view(torch.int16))
    assert torch.equal(got[vals:].view(torch.int16), expected[vals:].view(torch.int16))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "M,K,blocks,cols", [(64, 64, 1, 2), (128, 192, 1, 1), (192, 128, 2, 4), (64, 256, 4, 2), (320, 64, 2, 1)]
)
def test_packed_bytes_equal_the_reference(M, K, blocks, cols, dtype):
    y1 = relu2_inputs(M, K, dtype, seed=M * 7 + K).to(DEVICE)
    out = sparsify_pack(y1, blocks_per_program=blocks, cols_per_program=cols)
    y2, a = _expected(y1.cpu())
    _same_bytes(out.packed, compress_reference(a), M, K)
    # decoded operand is the masked activation, NaN and Inf included
    vals, idx = from_cusparselt_layout(out.packed.cpu().reshape(M, -1), M, K)
    dense = ref.decompress(ref.CompressedOperand(vals, idx))
    assert_equal_with_nan(dense, a)
    assert out.kept_per_feature.cpu().tolist() == (a != 0).sum(0).tolist()
    assert out.nonzeros_per_feature.cpu().tolist() == (y2 != 0).sum(0).tolist()


def test_counters_hold_at_the_most_blocks_per_program():
    """127 row blocks in one program: every 8-bit counter field reaches 254 without spilling over."""
    M, K = MAX_BLOCKS_PER_PROGRAM * 64, 64
    y1 = torch.ones(M, K, dtype=torch.bfloat16)  # every value non-zero, 2 of each 4 kept
    out = sparsify_pack(y1.to(DEVICE), blocks_per_program=MAX_BLOCKS_PER_PROGRAM, cols_per_program=1)
    assert out.nonzeros_per_feature.cpu().tolist() == [M] * K
    assert out.kept_per_feature.cpu().tolist() == [M, M, 0, 0] * (K // 4)  # ties keep the lower index


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_without_counting_the_packed_bytes_are_the_same(dtype):
    y1 = relu2_inputs(192, 128, dtype, seed=5).to(DEVICE)
    counted = sparsify_pack(y1, blocks_per_program=2)
    uncounted = sparsify_pack(y1, count=False, blocks_per_program=2)
    assert uncounted.kept_per_feature is None and uncounted.nonzeros_per_feature is None
    _same_bytes(uncounted.packed, counted.packed.cpu(), 192, 128)


def test_input_policy_nan_inf_negative():
    y1 = torch.full((64, 64), -1.0, dtype=torch.bfloat16)
    y1[0, :8] = torch.tensor([float("nan"), 2.0, 3.0, 1.0, float("inf"), -float("inf"), 2.0, 2.0])
    out = sparsify_pack(y1.to(DEVICE))
    vals, idx = from_cusparselt_layout(out.packed.cpu().reshape(64, -1), 64, 64)
    assert idx[0, :4].tolist() == [0, 2, 0, 2]  # NaN ranks first; inf beats 4.0; -inf is 0 after relu
    assert vals[0, 0].isnan() and vals[0, 1] == 9.0 and vals[0, 2] == float("inf") and vals[0, 3] == 4.0
    assert idx[1, :2].tolist() == [2, 3]  # an all-zero group names positions 2, 3 like cuSPARSELt


def test_bad_input_is_rejected_with_the_rule():
    with pytest.raises(TypeError, match="bfloat16 or float16"):
        sparsify_pack(torch.randn(64, 64, device=DEVICE))
    with pytest.raises(ValueError, match="row \\(token\\) count must be a multiple of 64"):
        sparsify_pack(torch.randn(48, 64, device=DEVICE, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="column \\(hidden\\) count must be a multiple of 64"):
        sparsify_pack(torch.randn(64, 96, device=DEVICE, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="unit stride"):
        sparsify_pack(torch.randn(128, 64, device=DEVICE, dtype=torch.bfloat16).t())
    with pytest.raises(ValueError, match="must be 2-D"):
        sparsify_pack(torch.randn(64, device=DEVICE, dtype=torch.bfloat16))
    y1 = torch.randn(64, 64, device=DEVICE, dtype=torch.bfloat16)
    for bad in (0, 3, -1):
        with pytest.raises(ValueError, match="cols_per_program must be a power of 2"):
            sparsify_pack(y1, cols_per_program=bad)
    with pytest.raises(ValueError, match="num_warps must be a power of 2"):
        sparsify_pack(y1, num_warps=3)
    with pytest.raises(ValueError, match="blocks_per_program must be in"):
        sparsify_pack(y1, blocks_per_program=MAX_BLOCKS_PER_PROGRAM + 1)
