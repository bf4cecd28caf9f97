"""GEMM1 with the packer as epilogue, against the reference (interpreter on CPU, real on GPU).

Exact comparisons need a GEMM without rounding: identity weights (y1 = x, so the packer's
adversarial inputs go through unchanged) or small integers (every product and sum exact in fp32).
"""

import pytest
import torch

from act24 import reference as ref
from act24.kernels.gemm_pack import DEFAULT_CONFIG, GemmPackConfig, fusable, gemm_pack
from act24.reference.cusparselt_layout import compress_reference, from_cusparselt_layout
from conftest import assert_equal_with_nan, relu2_inputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SMALL = GemmPackConfig(block_m=64, block_n=64, block_k=32, group_m=2, num_stages=2, num_warps=4)
WIDE = GemmPackConfig(block_m=128, block_n=128, block_k=32, group_m=8, num_stages=2, num_warps=4)
CONFIGS = [SMALL, WIDE._replace(tma=False)] + ([DEFAULT_CONFIG, WIDE] if DEVICE == "cuda" else [WIDE])


def _packed_reference(y1: torch.Tensor):
    """(packed bytes, kept per feature, non-zeros per feature) of the unfused path on y1."""
    y2 = ref.squared_relu(y1.cpu())
    a = ref.masked_activation(y2)
    return compress_reference(a), (a != 0).sum(0).tolist(), (y2 != 0).sum(0).tolist()


def _assert_packs(out, y1, dtype):
    packed, kept, nonzeros = _packed_reference(y1.to(dtype))
    M, N = y1.shape
    got = out.packed.cpu().reshape(-1)
    expected = packed.reshape(-1)
    nan = expected.isnan()
    nan[M * N // 2:] = False  # metadata words are integers
    assert torch.equal(got.isnan() & nan, nan)
    assert torch.equal(got[~nan].view(torch.int16), expected[~nan].view(torch.int16))
    if out.kept_per_feature is not None:
        assert out.kept_per_feature.cpu().tolist() == kept
        assert out.nonzeros_per_feature.cpu().tolist() == nonzeros


def _integers(rows, cols, seed, low=-2, high=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (rows, cols), generator=g).float()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.block_m}x{c.block_n}x{c.block_k}{'-tma' if c.tma else ''}")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_adversarial_activations_pack_byte_for_byte(config, dtype):
    """Identity weights: y1 = x holds ties, all-zero groups, 1, 3 and 4 non-zeros and negatives."""
    M, N = 192, 256  # a partial last row tile with block_m = 128
    y1 = relu2_inputs(M, N, torch.float32, seed=N + config.block_n).nan_to_num(0.0, 0.0, 0.0)
    out = gemm_pack(y1.to(dtype).to(DEVICE), torch.eye(N, dtype=dtype, device=DEVICE), config=config)
    _assert_packs(out, y1, dtype)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.block_m}x{c.block_n}x{c.block_k}{'-tma' if c.tma else ''}")
def test_integer_gemm_with_bias_and_padding_tokens_packs_byte_for_byte(config):
    """Exact integer products: the packed bytes and counts equal the unfused path's; rows from
    `valid_rows` on are padding and count nothing, even with a bias."""
    M, K, N, valid = 320, 128, 512, 300
    x, w1, b1 = _integers(M, K, 1), _integers(N, K, 2), _integers(1, N, 3)[0]
    x[valid:] = 0
    dtype = torch.bfloat16
    out = gemm_pack(*(t.to(dtype).to(DEVICE) for t in (x, w1, b1)), valid_rows=valid, config=config)
    y1 = x @ w1.t() + b1
    y1[valid:] = 0
    _assert_packs(out, y1, dtype)
    uncounted = gemm_pack(*(t.to(dtype).to(DEVICE) for t in (x, w1, b1)), valid_rows=valid, count=False, config=config)
    assert uncounted.kept_per_feature is None
    assert torch.equal(uncounted.packed.view(torch.int16), out.packed.view(torch.int16))


def test_nan_and_inf_follow_the_input_policy():
    """An Inf token gives +Inf, -Inf (0 after relu) and NaN (Inf * 0) pre-activations: NaN and +Inf
    rank above every finite value, as in the unfused packer."""
    M, K, N = 64, 64, 64
    x = _integers(M, K, 4)
    x[5, 0] = float("inf")
    w1 = _integers(N, K, 5)  # column 0 holds -2..2: -Inf, NaN and +Inf in row 5
    out = gemm_pack(x.bfloat16().to(DEVICE), w1.bfloat16().to(DEVICE), config=SMALL)
    y1 = (x @ w1.t()).bfloat16()
    vals, idx = from_cusparselt_layout(out.packed.cpu().reshape(M, -1), M, N)
    assert_equal_with_nan(ref.decompress(ref.CompressedOperand(vals, idx)), ref.masked_activation(ref.squared_relu(y1)))
    assert y1[5].isnan().any() and y1[5].isinf().any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_random_operands_match_the_unfused_path(dtype):
    """Real-valued GEMMs round differently from cuBLAS or the CPU: the kept sets agree but for
    near-ties, and the decoded operand is the reference's up to rounding."""
    M, K, N = 128, 256, 256
    g = torch.Generator().manual_seed(6)
    x = torch.randn(M, K, generator=g).to(dtype)
    w1 = (torch.randn(N, K, generator=g) / K**0.5).to(dtype)
    config = CONFIGS[-1]
    out = gemm_pack(x.to(DEVICE), w1.to(DEVICE), config=config)
    a = ref.masked_activation(ref.squared_relu((x.float() @ w1.float().t()).to(dtype)))
    vals, idx = from_cusparselt_layout(out.packed.cpu().reshape(M, -1), M, N)
    got = ref.decompress(ref.CompressedOperand(vals, idx))
    assert ((got != 0) == (a != 0)).float().mean() > 0.995
    assert ((got.float() - a.float()).norm() / a.float().norm()).item() < 1e-2
    assert ((got != 0).reshape(M, -1, 4).sum(-1) <= 2).all()


def test_bad_input_is_rejected_with_the_rule():
    x = torch.zeros(64, 64, dtype=torch.bfloat16, device=DEVICE)
    w1 = torch.zeros(256, 64, dtype=torch.bfloat16, device=DEVICE)
    with pytest.raises(TypeError, match="x must be bfloat16 or float16"):
        gemm_pack(x.float(), w1)
    with pytest.raises(ValueError, match="w1 must match x's dtype"):
        gemm_pack(x, w1.half())
    with pytest.raises(ValueError, match="w1 must be \\[hidden, 64\\]"):
        gemm_pack(x, w1[:, :32])
    with pytest.raises(ValueError, match="row \\(token\\) count must be a multiple of 64"):
        gemm_pack(x[:48], w1)
    with pytest.raises(ValueError, match="row \\(hidden\\) count must be a multiple of 256"):
        gemm_pack(x, w1[:128])
    with pytest.raises(ValueError, match="x must be row-major"):
        gemm_pack(torch.zeros(64, 64, dtype=torch.bfloat16, device=DEVICE).t(), w1)
    with pytest.raises(ValueError, match="b1 must be a contiguous \\[256\\]"):
        gemm_pack(x, w1, torch.zeros(128, dtype=torch.bfloat16, device=DEVICE))
    assert fusable(4096, 16384) is None
    assert "block_n" in fusable(4096, 16384 + 64)
