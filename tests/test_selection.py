import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from act24 import reference as ref
from conftest import adversarial_groups, sort_based_top2

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES)
def test_tokenwise_mask_matches_sort_definition_on_adversarial_groups(dtype):
    x = adversarial_groups(64, 32, dtype, seed=1)
    mask = ref.tokenwise_mask(x)
    assert torch.equal(mask, sort_based_top2(x))
    assert (mask.reshape(64, 32, 4).sum(-1) == 2).all()


def test_tokenwise_mask_tie_and_nan_policy():
    x = torch.tensor(
        [
            [2.0, 2.0, 2.0, 2.0],  # ties: lower index wins
            [0.0, 0.0, 0.0, 0.0],  # all zero: still exactly two positions
            [0.0, -3.0, 3.0, 1.0],  # magnitude, not sign
            [1.0, float("nan"), 5.0, 0.0],  # NaN ranks first
            [float("inf"), float("nan"), 1.0, 2.0],  # NaN and Inf both kept
        ]
    )
    expected = torch.tensor(
        [[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool
    )
    assert torch.equal(ref.tokenwise_mask(x), expected)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 9),
    groups=st.integers(1, 9),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
)
def test_tokenwise_mask_property(rows, groups, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    # few distinct values so ties are common
    x = torch.randint(-3, 4, (rows, groups * 4), generator=g).to(dtype)
    assert torch.equal(ref.tokenwise_mask(x), sort_based_top2(x))


def test_tokenwise_mask_batched_leading_dims():
    x = torch.randn(2, 3, 16)
    assert torch.equal(ref.tokenwise_mask(x), ref.tokenwise_mask(x.reshape(6, 16)).reshape(2, 3, 16))


def test_token_permutation_is_a_fixed_seedable_bijection():
    p = ref.token_permutation(1000, seed=7)
    assert torch.equal(torch.sort(p).values, torch.arange(1000))
    assert torch.equal(p, ref.token_permutation(1000, seed=7))
    assert not torch.equal(p, ref.token_permutation(1000, seed=8))


def test_featurewise_mask_two_per_token_group_and_never_readmits():
    T, H = 64, 24
    y2 = torch.relu(torch.randn(T, H, dtype=torch.float64)) ** 2
    m = ref.tokenwise_mask(y2)
    a = torch.where(m, y2, 0.0)
    perm = ref.token_permutation(T, seed=3)
    keep = ref.featurewise_mask(a, perm)
    # exactly 2 per group of 4 permuted tokens, per feature
    assert (keep[perm].reshape(T // 4, 4, H).sum(1) == 2).all()
    # a value the forward dropped is never brought back into the operand
    operand = torch.where(keep, a, 0.0)
    assert not ((operand != 0) & ~m).any()
    # independent definition: sort along the grouped token axis
    grouped = a[perm].reshape(T // 4, 4, H).transpose(1, 2)
    expected_grouped = sort_based_top2(grouped).transpose(1, 2).reshape(T, H)
    expected = torch.empty_like(expected_grouped)
    expected[perm] = expected_grouped
    assert torch.equal(keep, expected)


def test_featurewise_mask_groups_follow_the_permutation():
    # tokens 0..3 in sequence would be one group; a different permutation regroups them
    T, H = 8, 4
    a = torch.rand(T, H, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    k1 = ref.featurewise_mask(a, torch.arange(T))
    k2 = ref.featurewise_mask(a, torch.tensor([0, 4, 1, 5, 2, 6, 3, 7]))
    assert (k1[:4].sum(0) == 2).all()
    assert not torch.equal(k1, k2)


def test_dense_feature_count_and_densest_features():
    assert ref.dense_feature_count(8192, 0.05) == 410
    assert ref.dense_feature_count(8192, 0.05, multiple=64) == 448
    assert ref.dense_feature_count(16, 0.05, multiple=64) == 16
    assert ref.dense_feature_count(100, 0.0) == 0
    with pytest.raises(ValueError, match="dense_fraction"):
        ref.dense_feature_count(100, 1.5)
    counts = torch.tensor([5, 9, 1, 9, 7, 0])
    assert ref.densest_features(counts, 3).tolist() == [1, 3, 4]
    # the split takes the densest: no left-out feature has more non-zeros than a chosen one
    counts = torch.randint(0, 50, (200,))
    chosen = ref.densest_features(counts, 10)
    rest = torch.ones(200, dtype=torch.bool)
    rest[chosen] = False
    assert counts[chosen].min() >= counts[rest].max()
    # ties go to the lower index: the first num_dense of a stable sort by decreasing count
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        counts = torch.randint(0, 6, (int(torch.randint(1, 300, (), generator=g)),), generator=g, dtype=torch.int32)
        n = int(torch.randint(1, counts.numel() + 1, (), generator=g))
        stable = torch.sort(-counts.long(), stable=True).indices[:n].sort().values
        assert torch.equal(ref.densest_features(counts, n), stable)
        assert torch.equal(ref.densest_features(counts, n, max_count=5), stable)  # 32-bit keys
        as_set = ref.densest_features(counts, n, max_count=5, in_index_order=False)
        assert torch.equal(as_set.sort().values, stable)


def test_densest_features_with_32_bit_keys_at_their_limit():
    # the largest bound whose keys fit 32 bits, and counts at that bound: the same choice as 64-bit keys
    h = 1024
    bound = (2**31 - 1) // h - 1
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(bound - 3, bound + 1, (h,), generator=g, dtype=torch.int32)
    for n in (1, 51, h):
        assert torch.equal(ref.densest_features(counts, n, max_count=bound), ref.densest_features(counts, n))
    # a bound too large for 32-bit keys falls back to 64-bit ones rather than overflowing: in 32 bits
    # feature 7's key would wrap negative and feature 0 would win
    big = torch.zeros(h, dtype=torch.int64)
    big[7] = 2**31 // h + 1
    assert ref.densest_features(big, 1, max_count=int(big.max())).tolist() == [7]


def test_selection_bad_input():
    with pytest.raises(ValueError, match="multiple of 4"):
        ref.tokenwise_mask(torch.randn(4, 6))
    with pytest.raises(TypeError, match="floating dtype"):
        ref.tokenwise_mask(torch.ones(4, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        ref.tokenwise_mask(torch.randn(8))
    with pytest.raises(ValueError, match="token count"):
        ref.featurewise_mask(torch.randn(6, 8), torch.arange(6))
    with pytest.raises(ValueError, match="perm must be an int64/int32 tensor of shape"):
        ref.featurewise_mask(torch.randn(8, 8), torch.arange(4))
    with pytest.raises(ValueError, match="each token exactly once"):
        ref.featurewise_mask(torch.randn(8, 8), torch.zeros(8, dtype=torch.long))
