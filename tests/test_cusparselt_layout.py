"""CPU tests of the cuSPARSELt compressed layout (act24.reference.cusparselt_layout).

Golden fixtures in tests/data/ are torch._cslt_compress outputs recorded on an H200
(torch 2.11.0+cu130, cuSPARSELt 0.8.0) by scripts/probe_cslt_layout.py and
scripts/verify_cslt_layout.py.
"""

import pathlib

import pytest
import torch

from act24.reference.cusparselt_layout import (
    buffer_shape,
    compress_reference,
    from_cusparselt_layout,
    to_cusparselt_layout,
)

DATA = pathlib.Path(__file__).parent / "data"
PAIRS = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])


def _bytes(t):
    return t.contiguous().view(torch.uint8).reshape(-1)


def _random_2to4(M, K, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    idx = PAIRS[torch.randint(0, 6, (M * K // 4,), generator=g)].reshape(M, K // 2)
    vals = torch.randn(M, K // 2, generator=g).to(dtype)
    return vals, idx


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M,K", [(64, 64), (128, 256), (192, 64), (16, 128), (80, 192), (1008, 128)])
def test_round_trip(M, K, dtype):
    vals, idx = _random_2to4(M, K, dtype, seed=M + K)
    buf = to_cusparselt_layout(vals, idx)
    shape, S = buffer_shape(M, K)
    assert tuple(buf.shape) == shape and buf.dtype == dtype
    if M % 64 == 0:
        assert shape == (M, K * 9 // 16) and S == M * K * 9 // 8
    v2, i2 = from_cusparselt_layout(buf, M, K)
    assert torch.equal(_bytes(v2), _bytes(vals))
    assert torch.equal(i2.long(), idx)


def test_layout_structure():
    # values row-major; group (r, g) of a 64x32 block -> word 32*(r//16) + 4*(r%8) + g%4,
    # nibble 2*(g//4) + (r//8)%2; blocks row-major with K/32 per block-row
    M, K = 128, 64
    vals, idx = _random_2to4(M, K, torch.bfloat16, seed=0)
    buf = _bytes(to_cusparselt_layout(vals, idx))
    assert torch.equal(buf[: M * K], _bytes(vals))
    words = buf[M * K :].view(torch.int16).to(torch.int32) & 0xFFFF
    code = idx[:, 0::2] | (idx[:, 1::2] << 2)
    for r, g in [(0, 0), (8, 0), (0, 4), (9, 5), (17, 3), (63, 7), (64, 0), (70, 9), (127, 15)]:
        block = (r // 64) * (K // 32) + g // 8
        rr, gg = r % 64, g % 8
        w = words[block * 128 + 32 * (rr // 16) + 4 * (rr % 8) + gg % 4]
        nib = 2 * (gg // 4) + (rr // 8) % 2
        assert int((w >> (4 * nib)) & 0xF) == int(code[r, g])


def test_golden_exact_2to4():
    d = torch.load(DATA / "cslt_golden_exact_64x64_bfloat16.pt")
    vals = d["values"].view(torch.bfloat16)
    buf = to_cusparselt_layout(vals, d["indices"])
    assert tuple(buf.shape) == tuple(d["shape"])
    assert torch.equal(_bytes(buf), d["compressed"])
    v, i = from_cusparselt_layout(d["compressed"].view(torch.bfloat16).reshape(d["shape"]), 64, 64)
    assert torch.equal(_bytes(v), _bytes(vals)) and torch.equal(i, d["indices"])


@pytest.mark.parametrize("name", ["cslt_golden_relu2_64x128_bfloat16.pt", "cslt_golden_relu2_48x64_float16.pt"])
def test_golden_fewer_than_two_nonzeros(name):
    # relu^2 activations with groups of 0, 1 and 2 non-zeros; 48 rows also covers row padding
    d = torch.load(DATA / name)
    dense = d["dense"].view(getattr(torch, d["dtype"]))
    nnz = (dense.reshape(d["M"], -1, 4) != 0).sum(-1)
    assert (nnz == 0).any() and (nnz == 1).any() and (nnz == 2).any()
    buf = compress_reference(dense)
    shape, S = buffer_shape(d["M"], d["K"])
    assert tuple(buf.shape) == tuple(d["shape"]) == shape
    assert torch.equal(_bytes(buf)[:S], d["compressed"])  # bytes past S are uninitialised in torch


def test_fill_convention():
    # [0,0,0,0] -> (2,3); one non-zero at p -> (p,3), or (2,3) for p=3
    dense = torch.zeros(64, 64, dtype=torch.bfloat16)
    for p in range(4):
        dense[0, 4 * (p + 1) + p] = 1.0
    _, idx = from_cusparselt_layout(compress_reference(dense), 64, 64)
    assert idx[0, :10].tolist() == [2, 3, 0, 3, 1, 3, 2, 3, 2, 3]


def test_rejects_invalid():
    with pytest.raises(ValueError):
        compress_reference(torch.ones(64, 64, dtype=torch.bfloat16))  # 4 non-zeros per group
    with pytest.raises(ValueError):
        to_cusparselt_layout(torch.zeros(64, 48, dtype=torch.bfloat16), torch.zeros(64, 48, dtype=torch.long))
