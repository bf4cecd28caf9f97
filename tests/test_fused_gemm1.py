"""The fused GEMM1 (GEMM1 with the packer as its epilogue): argument rules, the build's discovery of
nvcc and CUTLASS, when the forward uses it, and (on a Hopper GPU) its bytes against the packer's."""

import pathlib
import warnings

import pytest
import torch

from act24.ffn import backend, fast_forward
from act24.kernels import cuda_build
from act24.kernels import gemm_relu2_pack as fused
from act24.kernels.sparsify_pack import sparsify_pack
from act24.ops import sparse_ffn_ops as ops
from act24.reference import masked_activation
from act24.reference.cusparselt_layout import unpack_dense

from conftest import decoded_mm, rel_err

BF16 = torch.bfloat16


# --- argument rules (CPU: every rule but the device ones is checked before the device) ---

@pytest.mark.parametrize("x_shape, w1_shape, dtype, match, error", [
    ((64, 64), (64, 64), torch.float16, "x must be bfloat16", TypeError),
    ((64,), (64, 64), BF16, "x must be 2-D", ValueError),
    ((64, 64), (64, 32), BF16, "must share d", ValueError),
    ((100, 64), (64, 64), BF16, "x: the row \\(token\\) count must be a multiple of 64", ValueError),
    ((64, 64), (96, 64), BF16, "w1: the row \\(hidden\\) count must be a multiple of 64", ValueError),
    ((64, 12), (64, 12), BF16, "x: the column \\(model\\) count must be a multiple of 8", ValueError),
    ((0, 64), (64, 64), BF16, "x must have at least one row", ValueError),
    ((64, 64), (64, 64), BF16, "x must be on a CUDA device", ValueError),
])
def test_bad_input_names_the_argument_and_the_rule(x_shape, w1_shape, dtype, match, error):
    with pytest.raises(error, match=match):
        fused.check_inputs(torch.zeros(x_shape, dtype=dtype), torch.zeros(w1_shape, dtype=BF16))


def test_non_contiguous_input_is_rejected():
    x = torch.zeros(128, 64, dtype=BF16)[::2]
    with pytest.raises(ValueError, match="x must be contiguous"):
        fused.check_inputs(x, torch.zeros(64, 64, dtype=BF16))


# --- the build: nvcc and CUTLASS discovery, clear errors when either is missing ---

def _fake_cutlass(root: pathlib.Path) -> pathlib.Path:
    (root / "include" / "cutlass").mkdir(parents=True)
    (root / "include" / "cutlass" / "cutlass.h").write_text("")
    return root


def test_cutlass_is_found_through_the_environment(tmp_path, monkeypatch):
    root = _fake_cutlass(tmp_path / "cutlass")
    monkeypatch.setenv("ACT24_CUTLASS_DIR", str(root))
    assert cuda_build.find_cutlass() == root
    monkeypatch.setenv("ACT24_CUTLASS_DIR", str(tmp_path / "missing"))
    monkeypatch.setenv("CUTLASS_PATH", str(root))
    assert cuda_build.find_cutlass() == root


@pytest.mark.parametrize("missing, match", [("nvcc", "nvcc was not found"), ("cutlass", "CUTLASS's headers")])
def test_missing_toolchain_raises_build_unavailable(monkeypatch, missing, match):
    monkeypatch.setattr(cuda_build, "find_nvcc", lambda: None if missing == "nvcc" else "/usr/bin/nvcc")
    monkeypatch.setattr(cuda_build, "find_cutlass", lambda: None)
    cuda_build.load_library.cache_clear()  # a library loaded by an earlier test would answer instead
    try:
        with pytest.raises(cuda_build.BuildUnavailable, match=match):
            cuda_build.load_library("gemm_relu2_pack")
    finally:
        cuda_build.load_library.cache_clear()


@pytest.mark.skipif(cuda_build.find_nvcc() is None or cuda_build.find_cutlass() is None,
                    reason="needs nvcc and CUTLASS's headers")
def test_the_kernel_compiles_once_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ACT24_CACHE_DIR", str(tmp_path))
    cuda_build.load_library.cache_clear()
    try:
        lib = cuda_build.load_library("gemm_relu2_pack")
        assert hasattr(lib, "act24_gemm_relu2_pack")
        built = list(tmp_path.glob("gemm_relu2_pack-*.so"))
        assert len(built) == 1 and not list(tmp_path.glob("*.partial"))
        stamp = built[0].stat().st_mtime_ns
        cuda_build.load_library.cache_clear()
        monkeypatch.setattr(cuda_build, "_build", lambda *args: pytest.fail("rebuilt a cached library"))
        cuda_build.load_library("gemm_relu2_pack")
        assert built[0].stat().st_mtime_ns == stamp
    finally:
        cuda_build.load_library.cache_clear()


# --- when the forward uses it ---

@pytest.fixture
def fresh_decision():
    backend._fused_gemm1_decisions.clear()
    yield
    backend._fused_gemm1_decisions.clear()


def test_reasons_it_stays_off(monkeypatch, fresh_decision):
    monkeypatch.delenv("ACT24_FUSED_GEMM1", raising=False)
    assert "reference backend" in backend.fused_gemm1_reason(torch.device("cpu"), BF16)
    assert "built for bfloat16" in backend.fused_gemm1_reason(torch.device("cpu"), torch.float16)
    backend._fused_gemm1_decisions.clear()
    monkeypatch.setenv("ACT24_FUSED_GEMM1", "0")
    assert "ACT24_FUSED_GEMM1=0" in backend.fused_gemm1_reason(torch.device("cpu"), BF16)


def test_used_only_up_to_the_measured_model_width(monkeypatch):
    monkeypatch.setattr(backend, "fused_gemm1_reason", lambda device, dtype: None)
    assert backend.use_fused_gemm1(torch.device("cpu"), BF16, backend.FUSED_GEMM1_MAX_D)
    assert not backend.use_fused_gemm1(torch.device("cpu"), BF16, 2 * backend.FUSED_GEMM1_MAX_D)


def _stand_in_fused(calls):
    def run(x, w1):  # what the kernel computes, from the packer (interpreted on the CPU)
        calls.append(tuple(x.shape))
        return sparsify_pack((x.float() @ w1.float().t()).to(x.dtype), count=False).packed
    return run


@pytest.mark.parametrize("T", [64, 100])
def test_inference_forward_takes_the_fused_kernel_when_allowed(monkeypatch, T):
    calls = []
    monkeypatch.setattr(fast_forward, "use_fused_gemm1", lambda device, dtype, d: True)
    monkeypatch.setattr(ops, "gemm_relu2_pack", _stand_in_fused(calls))
    monkeypatch.setattr(ops, "sparse_mm", lambda packed, b, rows: decoded_mm(packed, b, rows))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-3, 4, (T, 64), generator=g).to(BF16)
    w1 = torch.randint(-2, 3, (128, 64), generator=g).to(BF16)
    w2 = torch.randn(64, 128, generator=g).to(BF16)
    y, kept, nonzeros = fast_forward.sparse_forward(x, w1, w2, count=False)
    assert calls == [(64 * ((T + 63) // 64), 64)]  # tokens padded to the layout's 64-row blocks
    assert kept is None and nonzeros is None and y.shape == (T, 64)
    expected = masked_activation(torch.relu((x.float() @ w1.float().t()).to(BF16).float()) ** 2).to(BF16)
    assert rel_err(y, (expected.float() @ w2.float().t())) < 1e-2


@pytest.mark.parametrize("case", ["count", "bias", "float16"])
def test_counting_bias_or_float16_keep_the_two_kernels(monkeypatch, case):
    monkeypatch.setattr(fast_forward, "use_fused_gemm1", lambda device, dtype, d: True)
    monkeypatch.setattr(ops, "gemm_relu2_pack", lambda x, w1: pytest.fail("the fused kernel ran"))
    monkeypatch.setattr(ops, "sparse_mm", lambda packed, b, rows: decoded_mm(packed, b, rows))
    dtype = torch.float16 if case == "float16" else BF16
    x, w1, w2 = torch.randn(64, 64).to(dtype), torch.randn(128, 64).to(dtype), torch.randn(64, 128).to(dtype)
    b1 = torch.randn(128).to(dtype) if case == "bias" else None
    fast_forward.sparse_forward(x, w1, w2, b1, count=case == "count")


# --- on a Hopper GPU: bytes against the packer, bad input, the self-check's fallback ---

def integer_operands(M, N, K, seed=0):
    """Integer-valued x and w1: every product and partial sum is exact in fp32, so any accumulation
    order gives the same y1; with all-zero rows, an Inf in x, a NaN in w1 and repeated rows."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randint(-3, 4, (M, K), device="cuda", generator=g).to(BF16)
    w1 = torch.randint(-2, 3, (N, K), device="cuda", generator=g).to(BF16)
    x[1] = 0
    x[2, 5] = float("inf")
    w1[7, 3] = float("nan")
    x[3] = x[4]
    return x, w1


def _fused_or_skip(x, w1):
    try:
        return fused.gemm_relu2_pack(x, w1)
    except cuda_build.BuildUnavailable as e:
        pytest.skip(str(e))


@pytest.mark.gpu
@pytest.mark.parametrize("M, N, K", [(64, 64, 8), (192, 320, 136), (1024, 4096, 512), (4096, 16384, 4096)])
def test_gpu_bytes_equal_the_packer_on_exact_sums(M, N, K):
    x, w1 = integer_operands(M, N, K)
    got = _fused_or_skip(x, w1)
    expected = sparsify_pack((x.float() @ w1.float().t()).to(BF16), count=False).packed
    assert got.shape == expected.shape
    assert torch.equal(got.view(torch.int16), expected.view(torch.int16))


@pytest.mark.gpu
def test_gpu_realistic_operands_match_the_reference():
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(1024, 2048, device="cuda", generator=g).to(BF16)
    w1 = (torch.randn(4096, 2048, device="cuda", generator=g) / 2048**0.5 - 0.02).to(BF16)
    got = unpack_dense(_fused_or_skip(x, w1), 1024, 4096).float()
    y1 = x @ w1.t()
    unfused = unpack_dense(sparsify_pack(y1, count=False).packed, 1024, 4096).float()
    reference = masked_activation(torch.relu(y1.float()) ** 2)
    assert rel_err(got, reference) < 1e-2
    assert ((got != 0) == (unfused != 0)).float().mean() > 0.999  # masks differ only at near-ties


@pytest.mark.gpu
def test_gpu_bad_input_is_rejected():
    x, w1 = integer_operands(64, 64, 64)
    with pytest.raises(ValueError, match="w1 must be on a CUDA device, got cpu"):
        fused.gemm_relu2_pack(x, w1.cpu())
    with pytest.raises(ValueError, match="16-byte aligned"):
        fused.gemm_relu2_pack(torch.zeros(64 * 64 + 1, dtype=BF16, device="cuda")[1:].view(64, 64), w1)


@pytest.mark.gpu
def test_gpu_self_check_failure_falls_back_with_one_warning(monkeypatch, fresh_decision):
    real = fused.gemm_relu2_pack

    def corrupted(x, w1):
        out = real(x, w1)
        out.view(torch.int16)[-1] ^= 1  # one metadata bit
        return out
    monkeypatch.setattr(fused, "gemm_relu2_pack", corrupted)
    device = torch.device("cuda", torch.cuda.current_device())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reason = backend.fused_gemm1_reason(device, BF16)
        assert backend.fused_gemm1_reason(device, BF16) == reason  # decided once
    if reason is not None and reason.startswith(("nvcc was not found", "CUTLASS's headers")):
        pytest.skip(reason)
    assert reason == "the fused GEMM1's output differs from cuBLAS + the packer"
    assert sum("two kernels" in str(w.message) for w in caught) == 1
    assert not backend.use_fused_gemm1(device, BF16, 1024)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1000, 4096])
def test_gpu_module_inference_runs_the_fused_kernel(monkeypatch, T):
    from act24 import SquaredReLUFFN
    from act24.ffn import dispatch

    if backend.fused_gemm1_reason(torch.device("cuda"), BF16) is not None:
        pytest.skip(backend.fused_gemm1_reason(torch.device("cuda"), BF16))
    calls = []
    real = ops.gemm_relu2_pack
    monkeypatch.setattr(ops, "gemm_relu2_pack", lambda x, w1: calls.append(x.shape) or real(x, w1))
    ffn = SquaredReLUFFN(1024, 4096, sparse=True).cuda().to(BF16).eval()
    x = torch.randn(T, 1024, device="cuda", dtype=BF16)
    with torch.inference_mode(), dispatch.sparse_threshold_override(0):
        y = ffn(x)
        assert calls == [(64 * ((T + 63) // 64), 1024)]
        monkeypatch.setattr(fast_forward, "use_fused_gemm1", lambda device, dtype, d: False)
        unfused = ffn(x)
    assert rel_err(y, unfused) < 1e-2  # the same up to GEMM1's accumulation order


@pytest.mark.gpu
def test_gpu_op_registration_and_no_gradient():
    x, w1 = integer_operands(128, 256, 64)
    _fused_or_skip(x, w1)
    torch.library.opcheck(ops.gemm_relu2_pack, (x, w1), test_utils=("test_schema", "test_faketensor"))
    packed = ops.gemm_relu2_pack(x.float().requires_grad_().to(BF16), w1)
    with pytest.raises(RuntimeError, match="no gradient"):
        packed.float().sum().backward()
