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
    ((64, 64), (64, 64), torch.float32, "x must be bfloat16 or float16", TypeError),
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


def test_mixed_dtypes_are_rejected():
    with pytest.raises(TypeError, match="x and w1 must share a dtype"):
        fused.check_inputs(torch.zeros(64, 64, dtype=torch.float16), torch.zeros(64, 64, dtype=BF16))


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


def test_each_variant_gets_its_own_library(tmp_path):
    """The cache key covers the -D definitions (a fake nvcc: `echo` prints a version of sorts)."""
    root = _fake_cutlass(tmp_path / "cutlass")
    (root / "include" / "cutlass" / "version.h").write_text("#define CUTLASS_MAJOR 4")
    keys = {cuda_build.library_key("gemm_relu2_pack", "echo", root, (*cuda_build.FLAGS, *flags))
            for flags in [(), ("-DACT24_FP16=1", "-DACT24_COUNT=0"), ("-DACT24_FP16=0", "-DACT24_COUNT=1")]}
    assert len(keys) == 3


VARIANT = ("ACT24_FP16=0", "ACT24_COUNT=0")  # what kernels/gemm_relu2_pack.py loads for bf16 inference


@pytest.mark.skipif(cuda_build.find_nvcc() is None or cuda_build.find_cutlass() is None,
                    reason="needs nvcc and CUTLASS's headers")
def test_the_kernel_compiles_once_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ACT24_CACHE_DIR", str(tmp_path))
    cuda_build.load_library.cache_clear()
    try:
        lib = cuda_build.load_library("gemm_relu2_pack", VARIANT)
        assert hasattr(lib, "act24_gemm_relu2_pack")
        built = list(tmp_path.glob("gemm_relu2_pack-*.so"))
        assert len(built) == 1 and not list(tmp_path.glob("*.partial"))
        stamp = built[0].stat().st_mtime_ns
        cuda_build.load_library.cache_clear()
        monkeypatch.setattr(cuda_build, "_build", lambda *args: pytest.fail("rebuilt a cached library"))
        cuda_build.load_library("gemm_relu2_pack", VARIANT)
        assert built[0].stat().st_mtime_ns == stamp
    finally:
        cuda_build.load_library.cache_clear()


# --- when the forward uses it ---

def test_reasons_it_stays_off(monkeypatch, fresh_decision):
    monkeypatch.delenv("ACT24_FUSED_GEMM1", raising=False)
    assert "a CUDA kernel" in backend.fused_gemm1_reason(torch.device("cpu"), BF16)
    monkeypatch.setattr(backend, "backend_for", lambda device, dtype=BF16: backend.Backend("reference", "test"))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)  # a CPU build has no CUDA
    assert "reference backend" in backend.fused_gemm1_reason(torch.device("cuda", 0), BF16)
    assert "built for bfloat16 and float16" in backend.fused_gemm1_reason(torch.device("cuda", 0), torch.float32)
    backend._fused_decisions.clear()
    monkeypatch.setenv("ACT24_FUSED_GEMM1", "0")
    assert "ACT24_FUSED_GEMM1=0" in backend.fused_gemm1_reason(torch.device("cpu"), BF16)


def test_on_an_h100_it_runs_only_up_to_the_measured_problem_size(monkeypatch):
    monkeypatch.setattr(backend, "fused_gemm1_reason", lambda device, dtype, count=False: None)
    monkeypatch.setattr(backend, "_gpu_name", lambda device: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(backend, "_indexed", lambda device: device)
    gpu = torch.device("cuda", 0)
    limit = backend.FUSED_GEMM1_MAX_WORK["H100"]
    for count in (False, True):  # inference and training alike
        assert backend.use_fused_gemm1(gpu, BF16, limit // (4096 * 16384), 4096, 16384, count=count)
        assert backend.use_fused_gemm1(gpu, BF16, limit // (2048 * 8192), 2048, 8192, count=count)
        assert not backend.use_fused_gemm1(gpu, BF16, limit // (4096 * 16384) + 1, 4096, 16384, count=count)
        assert not backend.use_fused_gemm1(gpu, BF16, 2 * limit // (2048 * 8192), 2048, 8192, count=count)
    monkeypatch.setattr(backend, "_gpu_name", lambda device: "NVIDIA H200")
    assert backend.use_fused_gemm1(gpu, BF16, 2**20, 4096, 16384, count=True)


def test_used_only_up_to_the_measured_model_width(monkeypatch):
    monkeypatch.setattr(backend, "fused_gemm1_reason", lambda device, dtype, count=False: None)
    cpu, width = torch.device("cpu"), backend.FUSED_GEMM1_MAX_D
    assert backend.use_fused_gemm1(cpu, BF16, 2**20, width, 4 * width)
    assert not backend.use_fused_gemm1(cpu, BF16, 64, 2 * width, 4 * width)


def test_under_torch_compile_the_token_count_is_a_guard_not_a_constant(monkeypatch):
    """A size limit read once at trace time would keep the first call's answer for every token count; one
    specialised per size would compile once per count. A guard compiles once per side of the limit."""
    from torch._dynamo.testing import CompileCounter

    monkeypatch.setattr(backend, "fused_gemm1_reason", lambda device, dtype, count=False: None)
    monkeypatch.setattr(backend, "fused_dy2_reason", lambda device, dtype: None)
    monkeypatch.setattr(backend, "fused_gemm1_max_work", torch.compiler.assume_constant_result(lambda device: 64 * 64 * 256))
    torch._dynamo.reset()
    counter = CompileCounter()
    try:
        @torch.compile(dynamic=True, fullgraph=True, backend=counter)
        def branch(x):
            return x * 2 if backend.use_fused_gemm1(x.device, x.dtype, x.shape[0], x.shape[1], 256) else x * 3

        for tokens, fused_expected in ((32, True), (64, True), (96, False), (48, True), (80, False)):
            x = torch.ones(tokens, 64, dtype=BF16)
            assert branch(x)[0, 0].item() == (2 if fused_expected else 3), tokens
        assert counter.frame_count == 2

        @torch.compile(dynamic=True, fullgraph=True, backend="eager")
        def dy2_branch(x):  # the model width is symbolic here too
            return x * 2 if backend.use_fused_dy2(x.device, x.dtype, x.shape[1]) else x * 3

        assert dy2_branch(torch.ones(8, 64, dtype=BF16))[0, 0].item() == 2
        assert dy2_branch(torch.ones(8, 2 * backend.FUSED_DY2_MAX_D, dtype=BF16))[0, 0].item() == 3
    finally:
        torch._dynamo.reset()  # no compiled code holding the patched functions outlives the test


def test_info_states_the_size_limit_of_this_gpu_model(monkeypatch):
    from act24.cli import info

    monkeypatch.setattr(backend, "_indexed", lambda device: device)
    monkeypatch.setattr(backend, "_gpu_name", lambda device: "NVIDIA H100 80GB HBM3")
    assert "tokens*d*hidden <= 2^39" in info._work_limit(torch.device("cuda", 0))
    monkeypatch.setattr(backend, "_gpu_name", lambda device: "NVIDIA H200")
    assert info._work_limit(torch.device("cuda", 0)) == ""


def _stand_in_fused(calls):
    def run(x, w1, *, count=False):  # what the kernel computes, from the packer (interpreted on the CPU)
        calls.append((tuple(x.shape), count))
        return sparsify_pack((x.float() @ w1.float().t()).to(x.dtype), count=count)
    return run


def _as_op(kernel):
    def op(x, w1, count=False):
        out = kernel(x, w1, count=count)
        return out.packed, out.kept_per_feature, out.nonzeros_per_feature
    return op


@pytest.mark.parametrize("T, count, dtype", [(64, False, BF16), (100, False, BF16), (100, True, BF16),
                                             (100, True, torch.float16)])
def test_inference_forward_takes_the_fused_kernel_when_allowed(monkeypatch, T, count, dtype):
    calls = []
    monkeypatch.setattr(fast_forward, "use_fused_gemm1", lambda *args, **kwargs: True)
    monkeypatch.setattr(ops, "gemm_relu2_pack", _as_op(_stand_in_fused(calls)))
    monkeypatch.setattr(ops, "sparse_mm", lambda packed, b, rows: decoded_mm(packed, b, rows))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-3, 4, (T, 64), generator=g).to(dtype)
    w1 = torch.randint(-2, 3, (128, 64), generator=g).to(dtype)
    w2 = torch.randn(64, 128, generator=g).to(dtype)
    y, kept, nonzeros = fast_forward.sparse_forward(x, w1, w2, count=count)
    assert calls == [((64 * ((T + 63) // 64), 64), count)]  # tokens padded to the layout's 64-row blocks
    assert y.shape == (T, 64) and y.dtype == dtype
    y2 = torch.relu((x.float() @ w1.float().t()).to(dtype).float()) ** 2
    expected = masked_activation(y2).to(dtype)
    assert rel_err(y, (expected.float() @ w2.float().t())) < 1e-2
    if count:  # the padded zero tokens count nothing
        assert torch.equal(kept, (expected != 0).sum(0).int()) and torch.equal(nonzeros, (y2 != 0).sum(0).int())
    else:
        assert kept is None and nonzeros is None


def test_a_first_layer_bias_keeps_the_two_kernels(monkeypatch):
    monkeypatch.setattr(fast_forward, "use_fused_gemm1", lambda *args, **kwargs: True)
    monkeypatch.setattr(ops, "gemm_relu2_pack", lambda x, w1, count=False: pytest.fail("the fused kernel ran"))
    monkeypatch.setattr(ops, "sparse_mm", lambda packed, b, rows: decoded_mm(packed, b, rows))
    x, w1, w2 = torch.randn(64, 64).to(BF16), torch.randn(128, 64).to(BF16), torch.randn(64, 128).to(BF16)
    fast_forward.sparse_forward(x, w1, w2, torch.randn(128).to(BF16), count=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU tests cover the real kernel")
@pytest.mark.parametrize("tokens", [128, 100])
def test_training_forward_takes_the_counting_fused_kernel(monkeypatch, tokens):
    """Same loss, gradients and counts as GEMM1 then the packer, the kernel replaced by its definition."""
    import act24

    fast, dense = backend.Backend("cusparselt", "test"), backend.Backend("dense-fallback", "32-bit")
    monkeypatch.setattr(backend, "backend_for", lambda device, dtype=BF16: fast if dtype == BF16 else dense)
    monkeypatch.setattr("act24.gemm.cusparselt.sparse_mm", decoded_mm)
    calls = []
    monkeypatch.setattr(fused, "gemm_relu2_pack", _stand_in_fused(calls))
    g = torch.Generator().manual_seed(2)
    ffn = act24.SquaredReLUFFN(64, 128, sparse=True, perm_seed=1, dense_fraction=0.1, dtype=BF16, track_stats=True)
    with torch.no_grad():
        ffn.w1.copy_(torch.randint(-2, 3, (128, 64), generator=g))
    x = torch.randint(-3, 4, (tokens, 64), generator=g).to(BF16)
    dy = torch.randn(tokens, 64, generator=g).to(BF16)
    results = []
    for allowed in (False, True):
        monkeypatch.setattr(fast_forward, "use_fused_gemm1", lambda *args, **kwargs: allowed)
        xr = x.clone().requires_grad_()
        ffn.zero_grad()
        ffn(xr).backward(dy)
        results.append((xr.grad, ffn.w1.grad.clone(), ffn.w2.grad.clone(), ffn.last_stats))
    assert calls == [((128, 64), True)]
    (dx0, dw10, dw20, stats0), (dx1, dw11, dw21, stats1) = results
    assert torch.equal(dx0, dx1) and torch.equal(dw10, dw11) and torch.equal(dw20, dw21)
    assert stats0.dropped_fraction == stats1.dropped_fraction > 0
    assert stats0.activation_sparsity == stats1.activation_sparsity
    assert torch.equal(stats0.feature_density, stats1.feature_density)


# --- on a Hopper GPU: bytes against the packer, bad input, the self-check's fallback ---

def integer_operands(M, N, K, seed=0, dtype=BF16):
    """Integer-valued x and w1: every product and partial sum is exact in fp32, so any accumulation
    order gives the same y1; with all-zero rows, an Inf in x, a NaN in w1 and repeated rows."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randint(-3, 4, (M, K), device="cuda", generator=g).to(dtype)
    w1 = torch.randint(-2, 3, (N, K), device="cuda", generator=g).to(dtype)
    x[1] = 0
    x[2, 5] = float("inf")
    w1[7, 3] = float("nan")
    x[3] = x[4]
    return x, w1


TOOLCHAIN_MISSING = ("nvcc was not found", "CUTLASS's headers")


def _require_fused(dtype, count=False):
    """Skip where the kernel cannot be built here; fail where it was built and then turned off."""
    reason = backend.fused_gemm1_reason(torch.device("cuda"), dtype, count)
    if reason is not None and reason.startswith(TOOLCHAIN_MISSING):
        pytest.skip(reason)
    assert reason is None, reason


def _fused_or_skip(x, w1, count=False):
    try:
        return fused.gemm_relu2_pack(x, w1, count=count)
    except cuda_build.BuildUnavailable as e:
        pytest.skip(str(e))


@pytest.mark.gpu
@pytest.mark.parametrize("M, N, K", [(64, 64, 8), (192, 320, 136), (1024, 4096, 512), (4096, 16384, 4096)])
@pytest.mark.parametrize("count", [False, True])
@pytest.mark.parametrize("dtype", [BF16, torch.float16])
def test_gpu_bytes_and_counts_equal_the_packer_on_exact_sums(M, N, K, count, dtype):
    x, w1 = integer_operands(M, N, K, dtype=dtype)
    got = _fused_or_skip(x, w1, count)
    expected = sparsify_pack((x.float() @ w1.float().t()).to(dtype), count=count)
    assert got.packed.shape == expected.packed.shape
    assert torch.equal(got.packed.view(torch.int16), expected.packed.view(torch.int16))
    if count:
        assert torch.equal(got.kept_per_feature, expected.kept_per_feature)
        assert torch.equal(got.nonzeros_per_feature, expected.nonzeros_per_feature)
        assert 0 < int(got.kept_per_feature.sum()) < int(got.nonzeros_per_feature.sum())
    else:
        assert got.kept_per_feature is None and got.nonzeros_per_feature is None


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [BF16, torch.float16])
def test_gpu_realistic_operands_match_the_reference(dtype):
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(1024, 2048, device="cuda", generator=g).to(dtype)
    w1 = (torch.randn(4096, 2048, device="cuda", generator=g) / 2048**0.5 - 0.02).to(dtype)
    got = unpack_dense(_fused_or_skip(x, w1).packed, 1024, 4096).float()
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
@pytest.mark.parametrize("count", [False, True])
def test_gpu_self_check_failure_falls_back_with_one_warning(monkeypatch, fresh_decision, count):
    real = fused.gemm_relu2_pack

    def corrupted(x, w1, count=False):
        out = real(x, w1, count=count)
        if count:
            out.kept_per_feature[0] += 1
        else:
            out.packed.view(torch.int16)[-1] ^= 1  # one metadata bit
        return out
    monkeypatch.setattr(fused, "gemm_relu2_pack", corrupted)
    device = torch.device("cuda", torch.cuda.current_device())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reason = backend.fused_gemm1_reason(device, BF16, count)
        assert backend.fused_gemm1_reason(device, BF16, count) == reason  # decided once
    if reason is not None and reason.startswith(TOOLCHAIN_MISSING):
        pytest.skip(reason)
    assert reason == ("the fused GEMM1's per-feature counts differ from the packer's" if count
                      else "the fused GEMM1's output differs from cuBLAS + the packer")
    assert sum("two kernels" in str(w.message) for w in caught) == 1
    assert not backend.use_fused_gemm1(device, BF16, 1024, 1024, 4096, count=count)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1000, 4096])
def test_gpu_module_inference_runs_the_fused_kernel(monkeypatch, T):
    from act24 import SquaredReLUFFN
    from act24.ffn import dispatch

    _require_fused(BF16)
    calls = []
    real = ops.gemm_relu2_pack
    monkeypatch.setattr(ops, "gemm_relu2_pack", lambda x, w1, count=False: calls.append(x.shape) or real(x, w1, count))
    ffn = SquaredReLUFFN(1024, 4096, sparse=True).cuda().to(BF16).eval()
    x = torch.randn(T, 1024, device="cuda", dtype=BF16)
    with torch.inference_mode(), dispatch.sparse_threshold_override(0):
        y = ffn(x)
        assert calls == [(64 * ((T + 63) // 64), 1024)]
        monkeypatch.setattr(fast_forward, "use_fused_gemm1", lambda *args, **kwargs: False)
        unfused = ffn(x)
    assert rel_err(y, unfused) < 1e-2  # the same up to GEMM1's accumulation order


@pytest.mark.gpu
def test_gpu_op_registration_and_no_gradient():
    x, w1 = integer_operands(128, 256, 64)
    _fused_or_skip(x, w1)
    for count in (False, True):
        torch.library.opcheck(ops.gemm_relu2_pack, (x, w1, count), test_utils=("test_schema", "test_faketensor"))
    from act24.ops import sparse_training_ops

    w2 = torch.randn(64, 256, device="cuda", dtype=BF16)
    torch.library.opcheck(sparse_training_ops.sparse_ffn_train_forward,
                          (x.nan_to_num(0, posinf=0), w1.nan_to_num(0), w2, torch.tensor(0), 12, True),
                          test_utils=("test_schema", "test_faketensor"))
    packed, _, _ = ops.gemm_relu2_pack(x.float().requires_grad_().to(BF16), w1)
    with pytest.raises(RuntimeError, match="no gradient"):
        packed.float().sum().backward()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [BF16, torch.float16])
def test_gpu_training_with_the_fused_kernel_matches_the_two_kernels(monkeypatch, dtype):
    """On integer operands (exact GEMM1) the counting kernel gives the training step the same bytes:
    the same output, gradients and statistics as GEMM1 then the packer."""
    import act24

    _require_fused(dtype, count=True)
    ffn = act24.SquaredReLUFFN(512, 2048, sparse=True, perm_seed=1, dtype=dtype, device="cuda", track_stats=True)
    g = torch.Generator(device="cuda").manual_seed(3)
    x = torch.randint(-1, 2, (1000, 512), device="cuda", generator=g).to(dtype)  # |y1| << 256: no fp16 overflow
    with torch.no_grad():
        ffn.w1.copy_(torch.randint(-1, 2, (2048, 512), device="cuda", generator=g))
    dy = torch.randn(1000, 512, device="cuda", dtype=dtype)
    calls, real = [], fused.gemm_relu2_pack
    monkeypatch.setattr(fused, "gemm_relu2_pack", lambda x, w1, count=False: calls.append(count) or real(x, w1, count=count))
    results = []
    for allowed in (False, True):
        monkeypatch.setattr(fast_forward, "use_fused_gemm1",
                            lambda *args, allowed=allowed, **kwargs: allowed)
        xr = x.clone().requires_grad_()
        ffn.zero_grad()
        y = ffn(xr)
        y.backward(dy)
        results.append((y.detach(), xr.grad, ffn.w1.grad.clone(), ffn.w2.grad.clone(), ffn.last_stats))
    assert calls == [True]  # the second step's forward, counting
    (*grads0, stats0), (*grads1, stats1) = results
    for a, b in zip(grads0, grads1):
        assert torch.equal(a, b)
    assert stats0.dropped_fraction == stats1.dropped_fraction > 0
    assert torch.equal(stats0.feature_density, stats1.feature_density)
