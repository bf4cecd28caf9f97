"""GEMM1 with the packer as its epilogue: relu(x @ w1.T + b1)**2 under the token-wise 2:4 mask,
written straight into cuSPARSELt's sm90 layout. y1 never goes to memory.

The epilogue is the packer's (kernels/sparsify_pack.py) on a [BM, BN] accumulator tile: y1 is
rounded to the input dtype first, as the unfused path stores it, so both paths select from the
same values whenever the GEMMs agree; the selection and the layout are the reference's
(`reference.cusparselt_layout.compress_reference`). A tile of BM x BN covers whole 64 x 32
metadata blocks, so every word is assembled in registers and written once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from ..reference.checks import check_multiple, check_ndim
from .top2 import INTERPRETED, TL_DTYPE, magnitude_key16, packed_regions, round_to, rounded_bits16, select_2_of_4_keyed

ROW_BLOCK, COL_BLOCK = 64, 32  # one metadata block


class GemmPackConfig(NamedTuple):
    """Tile sizes and launch parameters of the fused kernel."""

    block_m: int = 128
    block_n: int = 256
    block_k: int = 64
    group_m: int = 8  # row tiles that sweep the columns together, for L2 reuse of w1
    num_stages: int = 3
    num_warps: int = 8
    tma: bool = True  # operands through Hopper's tensor memory accelerator (descriptors)
    warp_specialize: bool = False  # producer (loads) and consumer (MMA) warps


DEFAULT_CONFIG = GemmPackConfig()


@triton.jit
def _split4(t):
    """Positions 0..3 of the groups of 4 along t's last axis ([R, 4G] -> four [R, G])."""
    even, odd = tl.split(tl.reshape(t, (t.shape[0], t.shape[1] // 4, 2, 2)))
    p0, p2 = tl.split(even)
    p1, p3 = tl.split(odd)
    return p0, p1, p2, p3


@triton.jit
def _count(ptr, groups, flag0, flag1, flag2, flag3):
    """Add, per column 4g + p, the tile's rows whose position p is flagged (one relaxed atomic each)."""
    tl.atomic_add(ptr + 4 * groups, tl.sum(flag0.to(tl.int32), axis=0), sem="relaxed")
    tl.atomic_add(ptr + 4 * groups + 1, tl.sum(flag1.to(tl.int32), axis=0), sem="relaxed")
    tl.atomic_add(ptr + 4 * groups + 2, tl.sum(flag2.to(tl.int32), axis=0), sem="relaxed")
    tl.atomic_add(ptr + 4 * groups + 3, tl.sum(flag3.to(tl.int32), axis=0), sem="relaxed")


@triton.jit
def _dot(a, b, acc, INTERPRETED_RUN: tl.constexpr):
    """acc + a @ b.T; the CPU interpreter multiplies bf16 operands wrongly, so there they go in as fp32
    (exact: every 16-bit value is an fp32 value)."""
    if INTERPRETED_RUN:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b.T, acc)


@triton.jit
def _gemm_pack_kernel(x_ptr, w_ptr, x_desc, w_desc, b_ptr, vals_ptr, meta_ptr, kept_ptr, nnz_ptr,
                      M, N, valid_rows, stride_xm, stride_wn,
                      K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
                      STAGES: tl.constexpr, TMA: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, HAS_BIAS: tl.constexpr, COUNT: tl.constexpr,
                      DTYPE: tl.constexpr, INTERPRETED_RUN: tl.constexpr):
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BM)
    tiles_n = N // BN
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows
    off_m = pid_m * BM
    off_n = pid_n * BN

    acc = tl.zeros((BM, BN), tl.float32)
    if TMA:
        for k in tl.range(0, K, BK, num_stages=STAGES, warp_specialize=WARP_SPECIALIZE):
            a = x_desc.load([off_m, k])  # rows past M read as zeros
            b = w_desc.load([off_n, k])
            acc = _dot(a, b, acc, INTERPRETED_RUN)
    else:
        rows = off_m + tl.arange(0, BM)
        cols = off_n + tl.arange(0, BN)
        ks = tl.arange(0, BK)
        a_ptrs = x_ptr + rows[:, None].to(tl.int64) * stride_xm + ks[None, :]
        b_ptrs = w_ptr + cols[:, None].to(tl.int64) * stride_wn + ks[None, :]
        for k in tl.range(0, K, BK, num_stages=STAGES):
            a = tl.load(a_ptrs + k, mask=rows[:, None] < M, other=0.0)
            b = tl.load(b_ptrs + k)
            acc = _dot(a, b, acc, INTERPRETED_RUN)

    rows = off_m + tl.arange(0, BM)
    if HAS_BIAS:
        acc += tl.load(b_ptr + off_n + tl.arange(0, BN)).to(tl.float32)[None, :]
    # padded tokens (rows >= valid_rows) are zero: with a bias they would count as activations
    y = tl.where(rows[:, None] < valid_rows, round_to(acc, DTYPE, INTERPRETED_RUN), 0.0)
    r = tl.where(y < 0, 0.0, y)  # keeps NaN, like torch.relu
    bits = rounded_bits16(r * r, DTYPE, INTERPRETED_RUN)
    b0, b1, b2, b3 = _split4(bits)
    k0 = magnitude_key16(b0, DTYPE)
    k1 = magnitude_key16(b1, DTYPE)
    k2 = magnitude_key16(b2, DTYPE)
    k3 = magnitude_key16(b3, DTYPE)
    v0, v1, nibble, keep0, keep1, keep2, keep3 = select_2_of_4_keyed(k0, k1, k2, k3, b0, b1, b2, b3)

    groups = off_n // 4 + tl.arange(0, BN // 4)
    live = rows[:, None] < M
    tl.store(vals_ptr + rows[:, None].to(tl.int64) * (N // 4) + groups[None, :], v0 | (v1 << 16), mask=live)

    # nibble of (row 16S + 8h + i, group 8C + 4j + q) goes to word 32(S % 4) + 4i + q, bits 4(2j + h),
    # of block (row block S // 4, column block C)
    n6 = tl.reshape(nibble, (BM // 16, 2, 8, BN // 32, 2, 4))
    by_word = tl.permute(n6, (0, 2, 3, 5, 1, 4))  # [S, i, C, q, h, j]
    j0, j1 = tl.split(by_word)
    h0j0, h1j0 = tl.split(j0)
    h0j1, h1j1 = tl.split(j1)
    words = h0j0 | (h1j0 << 4) | (h0j1 << 8) | (h1j1 << 12)  # [S, i, C, q]
    S = tl.arange(0, BM // 16)[:, None, None, None]
    i = tl.arange(0, 8)[None, :, None, None]
    C = tl.arange(0, BN // 32)[None, None, :, None]
    q = tl.arange(0, 4)[None, None, None, :]
    block = (off_m // 64 + S // 4).to(tl.int64) * (N // 32) + off_n // 32 + C
    tl.store(meta_ptr + block * 128 + 32 * (S % 4) + 4 * i + q, words.to(tl.int16), mask=off_m + 16 * S < M)

    if COUNT:
        nz0, nz1, nz2, nz3 = k0 != 0, k1 != 0, k2 != 0, k3 != 0  # rows past M are zeros
        _count(kept_ptr, groups, keep0 & nz0, keep1 & nz1, keep2 & nz2, keep3 & nz3)
        _count(nnz_ptr, groups, nz0, nz1, nz2, nz3)


class PackedGemm(NamedTuple):
    """The packed 2:4 operand [rows, cols] and, when counted, per-column kept and non-zero counts."""

    packed: torch.Tensor
    kept_per_feature: torch.Tensor | None
    nonzeros_per_feature: torch.Tensor | None


def fusable(d: int, hidden: int, config: GemmPackConfig = DEFAULT_CONFIG) -> str | None:
    """None if the fused kernel takes an FFN of these sizes with `config`, else why not."""
    if d % config.block_k:
        return f"d={d} is not a multiple of block_k={config.block_k}"
    if hidden % config.block_n:
        return f"hidden={hidden} is not a multiple of block_n={config.block_n}"
    return None


def _check(x, w1, b1, config):
    for name, t in (("x", x), ("w1", w1)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        check_ndim(name, t, ndim=2)
        if t.dtype not in TL_DTYPE:
            raise TypeError(f"{name} must be bfloat16 or float16 for the sparse tensor cores, got {t.dtype}")
        if t.stride(1) != 1 or t.stride(0) % 8:
            raise ValueError(f"{name} must be row-major with a row stride that is a multiple of 8, got strides {t.stride()}")
    if w1.dtype != x.dtype or w1.device != x.device:
        raise ValueError(f"w1 must match x's dtype and device, got {w1.dtype} on {w1.device} and {x.dtype} on {x.device}")
    if w1.shape[1] != x.shape[1]:
        raise ValueError(f"w1 must be [hidden, {x.shape[1]}] to multiply x {tuple(x.shape)}, got {tuple(w1.shape)}")
    if b1 is not None and (b1.shape != (w1.shape[0],) or b1.device != x.device or not b1.is_contiguous()):
        raise ValueError(f"b1 must be a contiguous [{w1.shape[0]}] tensor on {x.device}, got {tuple(b1.shape)} on {b1.device}")
    check_multiple("x", x.shape[0], ROW_BLOCK, "the row (token) count")
    check_multiple("x", x.shape[1], config.block_k, "the column (model) count")
    check_multiple("w1", w1.shape[0], config.block_n, "the row (hidden) count")
    for name in ("block_m", "block_n"):
        if getattr(config, name) % ROW_BLOCK:
            raise ValueError(f"config.{name} must be a multiple of {ROW_BLOCK}, got {getattr(config, name)}")


def gemm_pack(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None = None, *, count: bool = True,
              valid_rows: int | None = None, config: GemmPackConfig = DEFAULT_CONFIG) -> PackedGemm:
    """Pack relu(x @ w1.T + b1)**2 under the token-wise 2:4 mask for `torch._cslt_sparse_mm`, in one
    kernel; rows from `valid_rows` on are taken as zero (padding tokens). Counts per hidden feature
    unless `count` is False."""
    _check(x, w1, b1, config)
    M, K = x.shape
    N = w1.shape[0]
    valid_rows = M if valid_rows is None else valid_rows
    BM, BN, BK = config.block_m, config.block_n, config.block_k
    packed = torch.empty(M, N * 9 // 16, dtype=x.dtype, device=x.device)
    kept, nonzeros = (torch.zeros(N if count else 0, dtype=torch.int32, device=x.device) for _ in range(2))
    x_desc = TensorDescriptor.from_tensor(x, [BM, BK]) if config.tma else None
    w_desc = TensorDescriptor.from_tensor(w1, [BN, BK]) if config.tma else None
    grid = (triton.cdiv(M, BM) * (N // BN),)
    _gemm_pack_kernel[grid](
        x, w1, x_desc, w_desc, b1 if b1 is not None else x, *packed_regions(packed, M, N), kept, nonzeros,
        M, N, valid_rows, x.stride(0), w1.stride(0),
        K=K, BM=BM, BN=BN, BK=BK, GROUP_M=config.group_m, STAGES=config.num_stages, TMA=config.tma,
        WARP_SPECIALIZE=config.warp_specialize,
        HAS_BIAS=b1 is not None, COUNT=count, DTYPE=TL_DTYPE[x.dtype], INTERPRETED_RUN=INTERPRETED,
        num_warps=config.num_warps,
    )
    return PackedGemm(packed, kept, nonzeros) if count else PackedGemm(packed, None, None)
