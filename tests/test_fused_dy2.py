"""The fused dy2 GEMM (dy2 = dy @ W2 with the backward's token-wise stage as its epilogue) and the
feature-wise pass after it: argument rules, when the backward uses it, the feature-wise pass against the
whole backward packer (interpreter on CPU), and on a Hopper GPU the kernel's bytes against cuBLAS + the
backward packer."""

import warnings

import pytest
import torch

from act24 import reference as ref
from act24.ffn import backend, fast_forward
from act24.kernels import cuda_build
from act24.kernels import gemm_relu2_grad_pack as fused
from act24.kernels.backward_pack import backward_pack, featurewise_pack
from act24.kernels.sparsify_pack import sparsify_pack
from act24.kernels.top2 import packed_regions
from conftest import adversarial_groups, assert_equal_with_nan, relu2_inputs

BF16 = torch.bfloat16
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _packed(T, H, dtype, seed=0, device=DEVICE):
    return sparsify_pack(relu2_inputs(T, H, dtype, seed=seed).to(device)).packed


# --- argument rules (CPU: every rule but the device ones is checked before the device) ---

@pytest.mark.parametrize("dy_shape, w2_shape, packed_shape, dtype, match, error", [
    ((64, 64), (64, 64), (64, 36), torch.float32, "dy must be bfloat16 or float16", TypeError),
    ((64,), (64, 64), (64, 36), BF16, "dy must be 2-D", ValueError),
    ((64, 64), (32, 64), (64, 36), BF16, "must share d", ValueError),
    ((100, 64), (64, 64), (100, 36), BF16, "dy: the row \\(token\\) count must be a multiple of 64", ValueError),
    ((64, 64), (64, 96), (64, 54), BF16, "w2: the column \\(hidden\\) count must be a multiple of 64", ValueError),
    ((64, 12), (12, 64), (64, 36), BF16, "dy: the column \\(model\\) count must be a multiple of 8", ValueError),
    ((64, 64), (64, 64), (64, 32), BF16, "packed_a must be the packed", ValueError),
    ((64, 64), (64, 64), (64, 36), BF16, "dy must be on a CUDA device", ValueError),
])
def test_bad_input_names_the_argument_and_the_rule(dy_shape, w2_shape, packed_shape, dtype, match, error):
    with pytest.raises(error, match=match):
        fused.check_inputs(torch.zeros(dy_shape, dtype=dtype), torch.zeros(w2_shape, dtype=BF16),
                           torch.zeros(packed_shape, dtype=BF16))


def test_mixed_dtypes_and_strides_are_rejected():
    with pytest.raises(TypeError, match="must share a dtype"):
        fused.check_inputs(torch.zeros(64, 64, dtype=torch.float16), torch.zeros(64, 64, dtype=BF16),
                           torch.zeros(64, 36, dtype=BF16))
    with pytest.raises(ValueError, match="w2 must be contiguous"):
        fused.check_inputs(torch.zeros(64, 64, dtype=BF16), torch.zeros(64, 128, dtype=BF16)[:, ::2],
                           torch.zeros(64, 36, dtype=BF16))


def test_featurewise_pass_rejects_operands_that_do_not_match():
    perm, none = torch.arange(64), torch.empty(0, dtype=torch.long)
    with pytest.raises(ValueError, match="dy1_tokenwise is packed like packed_a"):
        featurewise_pack(torch.zeros(64, 36, dtype=BF16), torch.zeros(64, 72, dtype=BF16), perm, none)
    with pytest.raises(TypeError, match="packed_a has dtype torch.float16 but dy1_tokenwise has torch.bfloat16"):
        featurewise_pack(torch.zeros(64, 36, dtype=torch.float16), torch.zeros(64, 36, dtype=BF16), perm, none)
    with pytest.raises(ValueError, match="dy1_tokenwise: the column \\(hidden\\) count must be a multiple of 64"):
        featurewise_pack(torch.zeros(64, 18, dtype=BF16), torch.zeros(64, 18, dtype=BF16), perm, none)
    with pytest.raises(ValueError, match="perm must be"):
        featurewise_pack(torch.zeros(64, 36, dtype=BF16), torch.zeros(64, 36, dtype=BF16), perm[:8], none)


# --- the feature-wise pass: the whole packer's feature-wise operands from its token-wise dy1 ---

@pytest.mark.parametrize("dtype", [BF16, torch.float16])
@pytest.mark.parametrize("T,H,num_dense", [(64, 64, 3), (192, 128, 0), (128, 128, 8)])
def test_featurewise_pass_equals_the_whole_packer(T, H, num_dense, dtype):
    g = torch.Generator().manual_seed(T + H)
    dy2 = torch.randn(T, H, generator=g)
    dy2[:8] = adversarial_groups(8, H // 4, seed=T)  # ties, NaN, Inf, zeros
    dy2 = dy2.to(dtype).to(DEVICE)
    packed = _packed(T, H, dtype, seed=T)
    perm = ref.token_permutation(T, seed=H).to(DEVICE)
    dense = torch.randperm(H, generator=g)[:num_dense].to(DEVICE)
    whole = backward_pack(packed, dy2, perm, dense)
    tokenwise = whole.dy1_tokenwise.clone()  # the pass must read it, not share the whole packer's buffer
    after = featurewise_pack(packed, tokenwise, perm, dense)
    assert after.dy1_tokenwise is tokenwise and torch.equal(tokenwise.view(torch.int16),
                                                            whole.dy1_tokenwise.view(torch.int16))
    for name in ("dy1_featurewise", "a_featurewise"):
        assert torch.equal(getattr(after, name).view(torch.int16), getattr(whole, name).view(torch.int16)), name
    assert_equal_with_nan(after.dy1_dense, whole.dy1_dense)
    assert_equal_with_nan(after.a_dense, whole.a_dense)


def test_featurewise_pass_reads_the_given_dy1():
    """Another token-wise dy1 (the same positions, other values) gives that dy1's feature-wise operand."""
    T, H = 64, 64
    packed, perm, none = _packed(T, H, BF16), ref.token_permutation(T, seed=0).to(DEVICE), torch.empty(0, dtype=torch.long)
    first = backward_pack(packed, torch.ones(T, H, dtype=BF16, device=DEVICE), perm, none.to(DEVICE))
    second = backward_pack(packed, torch.full((T, H), -3.0, dtype=BF16, device=DEVICE), perm, none.to(DEVICE))
    after = featurewise_pack(packed, second.dy1_tokenwise, perm, none.to(DEVICE))
    assert torch.equal(after.dy1_featurewise.view(torch.int16), second.dy1_featurewise.view(torch.int16))
    assert not torch.equal(after.dy1_featurewise.view(torch.int16), first.dy1_featurewise.view(torch.int16))


# --- when the backward uses it ---

def test_reasons_it_stays_off(monkeypatch, fresh_decision):
    monkeypatch.delenv("ACT24_FUSED_DY2", raising=False)
    assert "off unless ACT24_FUSED_DY2=1" in backend.fused_dy2_reason(torch.device("cpu"), BF16)
    backend._fused_decisions.clear()
    monkeypatch.setenv("ACT24_FUSED_DY2", "1")
    assert "the fused dy2 GEMM is a CUDA kernel" in backend.fused_dy2_reason(torch.device("cpu"), BF16)
    monkeypatch.setattr(backend, "backend_for", lambda device, dtype=BF16: backend.Backend("reference", "test"))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)  # a CPU build has no CUDA
    assert "reference backend" in backend.fused_dy2_reason(torch.device("cuda", 0), BF16)
    backend._fused_decisions.clear()
    monkeypatch.setenv("ACT24_FUSED_DY2", "0")
    assert "off unless ACT24_FUSED_DY2=1" in backend.fused_dy2_reason(torch.device("cpu"), BF16)
    assert backend.fused_gemm1_reason(torch.device("cpu"), BF16) != backend.fused_dy2_reason(torch.device("cpu"), BF16)


def test_used_only_up_to_the_measured_model_width(monkeypatch):
    monkeypatch.setattr(backend, "fused_dy2_reason", lambda device, dtype: None)
    assert backend.use_fused_dy2(torch.device("cpu"), BF16, backend.FUSED_DY2_MAX_D)
    assert not backend.use_fused_dy2(torch.device("cpu"), BF16, 2 * backend.FUSED_DY2_MAX_D)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU tests cover the real kernel")
@pytest.mark.parametrize("tokens", [128, 100])
def test_training_backward_takes_the_fused_dy2_gemm(monkeypatch, tokens):
    """Same gradients as dy2's GEMM then the whole packer, the kernel replaced by its definition."""
    import act24

    fast, dense = backend.Backend("cusparselt", "test"), backend.Backend("dense-fallback", "32-bit")
    monkeypatch.setattr(backend, "backend_for", lambda device, dtype=BF16: fast if dtype == BF16 else dense)
    monkeypatch.setattr("act24.gemm.cusparselt.sparse_mm", __import__("conftest").decoded_mm)
    monkeypatch.setattr(fast_forward, "use_fused_gemm1", lambda *args, **kwargs: False)
    calls = []

    def stand_in(dy, w2, packed_a):  # what the kernel computes, from the whole packer
        calls.append(tuple(dy.shape))
        T = dy.shape[0]
        return backward_pack(packed_a, (dy.float() @ w2.float()).to(dy.dtype), torch.arange(T),
                             torch.empty(0, dtype=torch.long)).dy1_tokenwise
    monkeypatch.setattr(fused, "gemm_relu2_grad_pack", stand_in)
    g = torch.Generator().manual_seed(2)
    ffn = act24.SquaredReLUFFN(64, 128, sparse=True, perm_seed=1, dense_fraction=0.1, dtype=BF16)
    x = torch.randn(tokens, 64, generator=g).to(BF16)
    dy = torch.randint(-2, 3, (tokens, 64), generator=g).to(BF16)  # with integer w2: an exact dy2
    with torch.no_grad():
        ffn.w2.copy_(torch.randint(-2, 3, (64, 128), generator=g))
    results = []
    for allowed in (False, True):
        monkeypatch.setattr(fast_forward, "use_fused_dy2", lambda device, dtype, d: allowed)
        xr = x.clone().requires_grad_()
        ffn.zero_grad()
        ffn(xr).backward(dy)
        results.append((xr.grad, ffn.w1.grad.clone(), ffn.w2.grad.clone()))
    assert calls == [(128, 64)]  # padded to the layout's 64-row blocks
    for a, b in zip(*results):
        assert torch.equal(a, b)


# --- on a Hopper GPU: bytes against cuBLAS + the backward packer, bad input, the self-check's fallback ---

TOOLCHAIN_MISSING = ("nvcc was not found", "CUTLASS's headers")


@pytest.fixture(autouse=True)
def opted_in(monkeypatch, fresh_decision):
    """The kernel is opt-in (ACT24_FUSED_DY2=1): these tests decide with it on unless they say otherwise."""
    monkeypatch.setenv("ACT24_FUSED_DY2", "1")


def _fused_or_skip(dy, w2, packed):
    try:
        return fused.gemm_relu2_grad_pack(dy, w2, packed)
    except cuda_build.BuildUnavailable as e:
        pytest.skip(str(e))


def _integer_dy_w2(T, d, H, dtype, seed=0):
    """Integer-valued dy and w2: dy2 is exact in fp32 in any accumulation order; with NaN and Inf."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    dy = torch.randint(-3, 4, (T, d), device="cuda", generator=g).to(dtype)
    w2 = torch.randint(-2, 3, (d, H), device="cuda", generator=g).to(dtype)
    dy[1] = 0
    dy[2, 5] = float("inf")
    w2[3, 7] = float("nan")
    return dy, w2


def _whole_packer(dy, w2, packed):
    T = dy.shape[0]
    return backward_pack(packed, (dy.float() @ w2.float()).to(dy.dtype), torch.arange(T, device="cuda"),
                         torch.empty(0, dtype=torch.long, device="cuda")).dy1_tokenwise


@pytest.mark.gpu
@pytest.mark.parametrize("T, d, H", [(64, 8, 64), (192, 136, 320), (1024, 512, 4096), (4096, 4096, 16384)])
@pytest.mark.parametrize("dtype", [BF16, torch.float16])
def test_gpu_bytes_equal_the_whole_packer_on_exact_sums(T, d, H, dtype):
    dy, w2 = _integer_dy_w2(T, d, H, dtype)
    packed = _packed(T, H, dtype, seed=d)
    got = _fused_or_skip(dy, w2, packed)
    expected = _whole_packer(dy, w2, packed)
    assert got.shape == expected.shape
    vals, meta = packed_regions(got, T, H)
    want_vals, want_meta = packed_regions(expected, T, H)
    assert torch.equal(meta, want_meta)
    assert_equal_with_nan(vals.view(dtype), want_vals.view(dtype))  # NaN payloads aside
    assert (vals != 0).any()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [BF16, torch.float16])
def test_gpu_every_16_bit_activation_gets_the_packers_gradient(dtype):
    """a's value pairs set to every 16-bit pattern (the square roots' rounding, subnormals, Inf, NaN)."""
    T, d, H = 256, 64, 512
    dy, w2 = _integer_dy_w2(T, d, H, dtype, seed=4)
    packed = _packed(T, H, dtype).clone()
    vals, _ = packed_regions(packed, T, H)
    vals.view(torch.int16).copy_(torch.arange(-32768, 32768, dtype=torch.int32, device="cuda").to(torch.int16))
    got_vals, got_meta = packed_regions(_fused_or_skip(dy, w2, packed), T, H)
    want_vals, want_meta = packed_regions(_whole_packer(dy, w2, packed), T, H)
    assert torch.equal(got_meta, want_meta)
    assert_equal_with_nan(got_vals.view(dtype), want_vals.view(dtype))


@pytest.mark.gpu
def test_gpu_realistic_operands_match_the_cublas_path():
    T, d, H = 1024, 2048, 4096
    g = torch.Generator(device="cuda").manual_seed(1)
    dy = torch.randn(T, d, device="cuda", generator=g).to(BF16)
    w2 = (torch.randn(d, H, device="cuda", generator=g) / d**0.5).to(BF16)
    packed = _packed(T, H, BF16, seed=5)
    got, _ = packed_regions(_fused_or_skip(dy, w2, packed), T, H)
    want, _ = packed_regions(backward_pack(packed, dy @ w2, torch.arange(T, device="cuda"),
                                           torch.empty(0, dtype=torch.long, device="cuda")).dy1_tokenwise, T, H)
    got, want = got.view(BF16).float(), want.view(BF16).float()
    finite = want.isfinite()
    assert torch.equal(got.isfinite(), finite)
    assert ((got - want)[finite].norm() / want[finite].norm()).item() < 1e-2  # dy2's accumulation order


@pytest.mark.gpu
def test_gpu_bad_input_is_rejected():
    dy, w2 = _integer_dy_w2(64, 64, 64, BF16)
    packed = _packed(64, 64, BF16)
    with pytest.raises(ValueError, match="packed_a must be on a CUDA device, got cpu"):
        fused.gemm_relu2_grad_pack(dy, w2, packed.cpu())
    with pytest.raises(ValueError, match="16-byte aligned"):
        fused.gemm_relu2_grad_pack(torch.zeros(64 * 64 + 1, dtype=BF16, device="cuda")[1:].view(64, 64), w2, packed)


@pytest.mark.gpu
def test_gpu_self_check_failure_falls_back_with_one_warning(monkeypatch, fresh_decision):
    real = fused.gemm_relu2_grad_pack

    def corrupted(dy, w2, packed):
        out = real(dy, w2, packed)
        out.view(torch.int16)[0] ^= 1  # one value bit
        return out
    monkeypatch.setattr(fused, "gemm_relu2_grad_pack", corrupted)
    device = torch.device("cuda", torch.cuda.current_device())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reason = backend.fused_dy2_reason(device, BF16)
        assert backend.fused_dy2_reason(device, BF16) == reason  # decided once
    if reason is not None and reason.startswith(TOOLCHAIN_MISSING):
        pytest.skip(reason)
    assert reason == "the fused dy2 GEMM's token-wise dy1 differs from cuBLAS + the backward packer's"
    assert sum("two kernels" in str(w.message) for w in caught) == 1
    assert not backend.use_fused_dy2(device, BF16, 1024)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [BF16, torch.float16])
def test_gpu_training_with_the_fused_dy2_gemm_matches_the_two_kernels(monkeypatch, dtype):
    """On integer dy and w2 (an exact dy2) the fused kernel gives the backward the same bytes: the same
    gradients as dy2's GEMM then the whole packer."""
    import act24

    reason = backend.fused_dy2_reason(torch.device("cuda"), dtype)
    if reason is not None and reason.startswith(TOOLCHAIN_MISSING):
        pytest.skip(reason)
    assert reason is None, reason
    ffn = act24.SquaredReLUFFN(512, 2048, sparse=True, perm_seed=1, dtype=dtype, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(3)
    x = torch.randn(1000, 512, device="cuda", generator=g).to(dtype)
    dy = torch.randint(-1, 2, (1000, 512), device="cuda", generator=g).to(dtype)
    with torch.no_grad():
        ffn.w2.copy_(torch.randint(-1, 2, (512, 2048), device="cuda", generator=g))
    calls, real = [], fused.gemm_relu2_grad_pack
    monkeypatch.setattr(fused, "gemm_relu2_grad_pack", lambda *args: calls.append(args[0].shape) or real(*args))
    results = []
    for allowed in (False, True):
        monkeypatch.setattr(fast_forward, "use_fused_dy2", lambda device, dtype, d, allowed=allowed: allowed)
        xr = x.clone().requires_grad_()
        ffn.zero_grad()
        ffn(xr).backward(dy)
        results.append((xr.grad, ffn.w1.grad.clone(), ffn.w2.grad.clone()))
    assert calls == [(1024, 512)]  # tokens padded to the layout's 64-row blocks
    for a, b in zip(*results):
        assert torch.equal(a, b)
