import os

import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels run on CPU tensors through the interpreter; must be set before triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9:
        return
    # the GPU tests exercise the sm90 kernels: other GPUs run the dense fallback
    skip = pytest.mark.skip(reason="needs a Hopper (sm90) GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def adversarial_groups(rows: int, groups: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    """[rows, 4*groups] mixing every hard case: ties, all-zero groups, 1/3/4 non-zeros,
    negatives, NaN and Inf, next to plain random values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, groups, 4, generator=g, dtype=torch.float64)
    kind = torch.randint(0, 8, (rows, groups), generator=g)
    x[kind == 0] = 0.0  # all zero
    x[kind == 1] = torch.tensor([0.0, 0.0, 0.0, 1.5], dtype=torch.float64)  # one non-zero
    x[kind == 2] = torch.tensor([2.0, 2.0, 2.0, 2.0], dtype=torch.float64)  # 4-way tie
    x[kind == 3] = torch.tensor([0.0, -3.0, 3.0, 1.0], dtype=torch.float64)  # tie across sign
    x[kind == 4, 0] = 0.0  # three non-zeros
    special = torch.rand(rows, groups, 4, generator=g)
    if dtype.is_floating_point:
        x[(kind == 5) & (special[..., 0] < 0.5)] = torch.tensor([float("nan"), 1.0, float("inf"), 0.0], dtype=torch.float64)
        x[(kind == 5) & (special[..., 0] >= 0.5)] = torch.tensor([-float("inf"), 5.0, 0.0, float("inf")], dtype=torch.float64)
    return x.reshape(rows, groups * 4).to(dtype)


def decoded_mm(packed: torch.Tensor, b: torch.Tensor, m: int) -> torch.Tensor:
    """CPU stand-in for the cuSPARSELt 2:4 GEMM: the packed [m, b.shape[0]] operand decoded, times b."""
    from act24.reference.cusparselt_layout import unpack_dense

    return (unpack_dense(packed.reshape(m, -1), m, b.shape[0]).float() @ b.float()).to(b.dtype)


def assert_equal_with_nan(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal values, NaN where expected has NaN (payloads aside)."""
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(got.nan_to_num(), expected.nan_to_num())


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 difference of a from b, in float64."""
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def sort_based_top2(x: torch.Tensor) -> torch.Tensor:
    """Independent definition of the selection: stable sort by descending magnitude (NaN largest)."""
    groups = x.reshape(*x.shape[:-1], -1, 4).double().abs()
    groups = torch.where(torch.isnan(groups), torch.full_like(groups, float("inf")), groups)
    order = torch.sort(-groups, dim=-1, stable=True).indices[..., :2]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order, True)
    return mask.reshape(x.shape)


def relu2_inputs(rows: int, cols: int, dtype, seed: int = 0) -> torch.Tensor:
    """Pre-activations y1 whose relu(y1)**2 covers every hard case of the 2:4 selection."""
    g = torch.Generator().manual_seed(seed)
    y = adversarial_groups(rows, cols // 4, torch.float32, seed=seed)
    # mostly negative rows, like a trained ReLU² FFN (~90% zeros), and plain random rows
    shifted = torch.randn(rows, cols, generator=g) - 1.3
    pick = torch.rand(rows, 1, generator=g) < 0.3
    return torch.where(pick, shifted, y).to(dtype)


@pytest.fixture
def text_dir(tmp_path):
    """A small text corpus: 25 documents of ~4.5 kB (one in 20 goes to validation)."""
    d = tmp_path / "text"
    d.mkdir()
    for i in range(25):
        (d / f"doc{i}.txt").write_text(f"document {i}: " + "the quick brown fox jumps over the lazy dog. " * 100)
    return d


@pytest.fixture
def fresh_decision():
    """The fused kernels' per-device decisions forgotten before and after a test."""
    from act24.ffn import backend

    backend._fused_decisions.clear()
    yield
    backend._fused_decisions.clear()
