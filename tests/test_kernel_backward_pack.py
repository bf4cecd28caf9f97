"""The fused backward packer against the reference recipe (interpreter on CPU, real on GPU)."""

import pytest
import torch

from act24 import reference as ref
from act24.kernels.backward_pack import backward_pack
from act24.kernels.sparsify_pack import sparsify_pack
from act24.reference.cusparselt_layout import from_cusparselt_layout
from conftest import adversarial_groups, assert_equal_with_nan, relu2_inputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _decode(packed, M, K):
    """Packed [M, K] operand -> (dense [M, K], indices), checking every group names 2 ascending positions."""
    vals, idx = from_cusparselt_layout(packed.cpu().reshape(M, -1), M, K)
    pairs = idx.reshape(M, K // 4, 2).long()
    assert (pairs[..., 0] < pairs[..., 1]).all(), "metadata with invalid position pairs (unwritten words?)"
    return ref.decompress(ref.CompressedOperand(vals, idx.long())), idx


def _featurewise(x, perm):
    """x [T, H] -> [H, T]: rows = features, tokens in perm order, 2:4 along tokens (the reference's rule)."""
    return ref.masked_activation(x[perm].t().contiguous())


def _dy2(T, H, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    dy2 = torch.randn(T, H, generator=g)
    dy2[torch.rand(T, H, generator=g) < 0.1] = 0.0
    dy2[:8] = adversarial_groups(8, H // 4, torch.float32, seed=seed)  # ties, NaN, Inf, zeros
    return dy2.to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T,H,nb,num_dense", [(64, 64, 1, 3), (128, 64, 2, 0), (128, 128, 4, 8), (192, 128, 1, 5)])
def test_backward_operands_equal_the_reference(T, H, nb, num_dense, dtype):
    y1 = relu2_inputs(T, H, dtype, seed=T + H)
    dy2 = _dy2(T, H, dtype, seed=T * H)
    perm = ref.token_permutation(T, seed=T)
    dense = torch.randperm(H, generator=torch.Generator().manual_seed(H))[:num_dense]  # any order: the op's is topk's
    packed = sparsify_pack(y1.to(DEVICE)).packed
    out = backward_pack(packed, dy2.to(DEVICE), perm.to(DEVICE), dense.to(DEVICE), token_blocks_per_program=nb)

    y2 = ref.squared_relu(y1)
    a = ref.masked_activation(y2)
    dy1 = torch.where(a != 0, dy2 * 2 * a.sqrt(), torch.zeros((), dtype=dtype))

    # token-wise dy1: a's metadata, and the exact bits in a's positions (NaN payloads aside)
    _, a_idx = from_cusparselt_layout(packed.cpu().reshape(T, -1), T, H)
    expected_vals = dy1.reshape(T, H // 4, 4).gather(2, a_idx.long().reshape(T, H // 4, 2)).reshape(T, H // 2)
    got_vals, got_idx = from_cusparselt_layout(out.dy1_tokenwise.cpu().reshape(T, -1), T, H)
    assert torch.equal(got_idx, a_idx)
    assert torch.equal(got_vals.isnan(), expected_vals.isnan())
    numbers = ~expected_vals.isnan()
    assert torch.equal(got_vals[numbers].view(torch.int16), expected_vals[numbers].view(torch.int16))

    # feature-wise operands: 2:4 along perm-ordered tokens on top of the forward mask
    for got, x in ((out.dy1_featurewise, dy1), (out.a_featurewise, a)):
        dense_got, _ = _decode(got, H, T)
        assert_equal_with_nan(dense_got, _featurewise(x, perm))
    # the dense features, exact, rows in perm order
    assert_equal_with_nan(out.dy1_dense.cpu(), dy1[perm][:, dense].t())
    assert_equal_with_nan(out.a_dense.cpu(), a[perm][:, dense].t())


def test_featurewise_selection_never_readmits_what_the_forward_dropped():
    T, H = 64, 64
    y1 = torch.randn(T, H).to(torch.bfloat16)
    perm = ref.token_permutation(T, seed=1)
    packed = sparsify_pack(y1.to(DEVICE)).packed
    out = backward_pack(packed, torch.ones(T, H, dtype=torch.bfloat16, device=DEVICE), perm.to(DEVICE),
                        torch.empty(0, dtype=torch.long, device=DEVICE))
    forward_mask = ref.tokenwise_mask(ref.squared_relu(y1))
    dense_a, _ = _decode(out.a_featurewise, H, T)
    assert not (dense_a.t() != 0)[~forward_mask[perm]].any()
    per_group = (dense_a.reshape(H, T // 4, 4) != 0).sum(-1)
    assert per_group.max() <= 2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_featurewise_selection_ranks_nan_like_inf(dtype):
    """Along permuted tokens [Inf, Inf, NaN, 1] keeps the two Infs (NaN ties with Inf, the lower
    token wins) and [NaN, Inf, Inf, 1] keeps NaN and the first Inf: in a and in dy1."""
    T, H = 64, 64
    inf, nan = float("inf"), float("nan")
    perm = ref.token_permutation(T, seed=3)
    y1 = torch.full((T, H), -1.0)
    dy2 = torch.ones(T, H)
    for r, (first, second) in enumerate(zip([inf, inf, nan, 1.0], [nan, inf, inf, 1.0])):
        y1[perm[r], 0], y1[perm[4 + r], 4] = first, second  # a itself
        y1[perm[8 + r], 8], y1[perm[12 + r], 12] = 1.0, 1.0  # a = 1, dy1 = 2 * dy2
        dy2[perm[8 + r], 8], dy2[perm[12 + r], 12] = first, second
    y1, dy2 = y1.to(dtype), dy2.to(dtype)
    packed = sparsify_pack(y1.to(DEVICE)).packed
    out = backward_pack(packed, dy2.to(DEVICE), perm.to(DEVICE), torch.empty(0, dtype=torch.long, device=DEVICE))
    a = ref.squared_relu(y1)
    dy1 = torch.where(a != 0, dy2 * 2 * a.sqrt(), torch.zeros((), dtype=dtype))
    for got, x in ((out.a_featurewise, a), (out.dy1_featurewise, dy1)):
        dense_got, _ = _decode(got, H, T)
        assert_equal_with_nan(dense_got, _featurewise(x, perm))
    dense_a, _ = _decode(out.a_featurewise, H, T)
    assert dense_a[0, :4].tolist() == [inf, inf, 0.0, 0.0]
    assert dense_a[4, 4].isnan() and dense_a[4, 5:8].tolist() == [inf, 0.0, 0.0]


def test_bad_input_is_rejected_with_the_rule():
    bf = dict(dtype=torch.bfloat16, device=DEVICE)
    packed = torch.empty(64, 36, **bf)
    perm = torch.arange(64, device=DEVICE)
    none = torch.empty(0, dtype=torch.long, device=DEVICE)
    with pytest.raises(TypeError, match="bfloat16 or float16"):
        backward_pack(packed, torch.empty(64, 64, device=DEVICE), perm, none)
    with pytest.raises(ValueError, match="token\\) count must be a multiple of 64"):
        backward_pack(torch.empty(32, 36, **bf), torch.empty(32, 64, **bf), perm[:32], none)
    with pytest.raises(ValueError, match="packed_a must be the packed"):
        backward_pack(torch.empty(64, 32, **bf), torch.empty(64, 64, **bf), perm, none)
    with pytest.raises(ValueError, match="perm must be"):
        backward_pack(packed, torch.empty(64, 64, **bf), perm[:10], none)
    with pytest.raises(ValueError, match="dy2 must be contiguous"):
        backward_pack(packed, torch.empty(64, 128, **bf)[:, :64], perm, none)
    with pytest.raises(ValueError, match="max_registers must be None or in \\[24, 255\\]"):
        backward_pack(packed, torch.empty(64, 64, **bf), perm, none, max_registers=300)
