"""ReLU² + token-wise 2:4 selection + packing into cuSPARSELt's sm90 layout, in one pass.

Reads y1 [M, K] (16-bit) once and writes the packed operand of
a = where(tokenwise_mask(relu(y1)**2), relu(y1)**2, 0): exactly
`reference.cusparselt_layout.compress_reference(a)`, i.e. what `torch._cslt_compress(a)`
returns, byte for byte (groups left with <2 non-zeros name the highest zero positions,
as cuSPARSELt does).

Layout (see reference/cusparselt_layout.py): values row-major [M, K/2]; then 4-bit
metadata in blocks of 64 rows x 32 columns, row r = 16s + 8h + i and group g = 4j + q
of a block going to word 32s + 4i + q, nibble 2j + h. A program loads the four
(h, j) sub-tiles of its blocks separately, so the four nibbles of every metadata word
are in registers together and each word is written once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..reference.checks import check_multiple, check_ndim

ROW_BLOCK, COL_BLOCK = 64, 32  # one metadata block


@triton.jit
def _rank_lt2(x, y, z, strict_y: tl.constexpr, strict_z: tl.constexpr, strict_w: tl.constexpr, w):
    """True where fewer than 2 of the competitors beat x (ties broken by the strict flags)."""
    by = (y > x) if strict_y else (y >= x)
    bz = (z > x) if strict_z else (z >= x)
    bw = (w > x) if strict_w else (w >= x)
    return (by.to(tl.int32) + bz.to(tl.int32) + bw.to(tl.int32)) < 2


@triton.jit
def _round_to(x, dtype: tl.constexpr):
    """x (fp32) rounded to `dtype` to nearest-even, kept in fp32: where the reference rounds.

    bf16 is rounded with integer arithmetic because Triton's CPU interpreter truncates
    fp32 -> bf16 casts; on the GPU this is the same rounding the cast would do.
    """
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return tl.where(x != x, x, bits.to(tl.float32, bitcast=True))
    else:
        return x.to(dtype).to(tl.float32)


@triton.jit
def _select_group(y, R: tl.constexpr, C: tl.constexpr):
    """relu² and 2:4 selection of a [R, C] tile: (value0, value1, nibble, kept non-zeros, non-zeros), the last two [R, C]."""
    yf = y.to(tl.float32)
    r = tl.where(yf < 0, 0.0, yf)  # keeps NaN, like torch.relu
    y2 = _round_to(r * r, y.dtype)
    lo, hi = tl.split(tl.reshape(y2, (R, C // 4, 2, 2)))
    e0, e2 = tl.split(lo)
    e1, e3 = tl.split(hi)
    # ranking key: NaN above everything (y2 >= 0 otherwise); ties keep the lower index
    inf = float("inf")
    k0 = tl.where(e0 != e0, inf, e0)
    k1 = tl.where(e1 != e1, inf, e1)
    k2 = tl.where(e2 != e2, inf, e2)
    k3 = tl.where(e3 != e3, inf, e3)
    keep0 = _rank_lt2(k0, k1, k2, True, True, True, k3)
    keep1 = _rank_lt2(k1, k0, k2, False, True, True, k3)
    keep2 = _rank_lt2(k2, k0, k1, False, False, True, k3)
    keep3 = _rank_lt2(k3, k0, k1, False, False, False, k2)
    s0 = keep0 & (e0 != 0)
    s1 = keep1 & (e1 != 0)
    s2 = keep2 & (e2 != 0)
    s3 = keep3 & (e3 != 0)
    # cuSPARSELt's choice of positions: the kept non-zeros, then the highest zero positions
    c0 = tl.where(s0, 0, 7)
    c1 = tl.where(s1, 1, 6)
    c2 = tl.where(s2, 2, 5)
    c3 = tl.where(s3, 3, 4)
    ch0 = (c1 < c0).to(tl.int32) + (c2 < c0).to(tl.int32) + (c3 < c0).to(tl.int32) < 2
    ch1 = (c0 < c1).to(tl.int32) + (c2 < c1).to(tl.int32) + (c3 < c1).to(tl.int32) < 2
    ch2 = (c0 < c2).to(tl.int32) + (c1 < c2).to(tl.int32) + (c3 < c2).to(tl.int32) < 2
    ch3 = (c0 < c3).to(tl.int32) + (c1 < c3).to(tl.int32) + (c2 < c3).to(tl.int32) < 2
    a0 = tl.where(s0, e0, 0.0)
    a1 = tl.where(s1, e1, 0.0)
    a2 = tl.where(s2, e2, 0.0)
    a3 = tl.where(s3, e3, 0.0)
    v0 = tl.where(ch0, a0, tl.where(ch1, a1, a2))
    v1 = tl.where(ch3, a3, tl.where(ch2, a2, a1))
    idx0 = tl.where(ch0, 0, tl.where(ch1, 1, 2))
    idx1 = tl.where(ch3, 3, tl.where(ch2, 2, 1))
    nibble = idx0 | (idx1 << 2)
    kept = tl.reshape(tl.join(tl.join(s0, s2), tl.join(s1, s3)), (R, C))
    nonzero = tl.reshape(tl.join(tl.join(e0 != 0, e2 != 0), tl.join(e1 != 0, e3 != 0)), (R, C))
    return v0, v1, nibble, kept, nonzero


@triton.jit
def _subtile(y1_ptr, vals_ptr, kept_ptr, nnz_ptr, stride_y, M, K, row0, col0, h: tl.constexpr, j: tl.constexpr,
             RB: tl.constexpr, CB: tl.constexpr):
    R: tl.constexpr = 32 * RB
    C: tl.constexpr = 16 * CB
    a = tl.arange(0, R)
    rows = row0 + (a // 32) * 64 + ((a % 32) // 8) * 16 + 8 * h + (a % 8)
    b = tl.arange(0, C)
    cols = col0 + (b // 16) * 32 + 16 * j + (b % 16)
    in_rows = rows < M
    y = tl.load(y1_ptr + rows[:, None].to(tl.int64) * stride_y + cols[None, :], mask=in_rows[:, None], other=0.0)
    v0, v1, nibble, kept, nonzero = _select_group(y, R, C)
    # values: two per group, row-major [M, K/2]
    v = tl.reshape(tl.join(v0, v1), (R, C // 2)).to(vals_ptr.dtype.element_ty)
    vb = tl.arange(0, C // 2)
    vcols = col0 // 2 + (vb // 8) * 16 + 8 * j + (vb % 8)
    tl.store(vals_ptr + rows[:, None].to(tl.int64) * (K // 2) + vcols[None, :], v, mask=in_rows[:, None])
    # per-feature counts: the split of the backward needs them, the statistics too
    tl.atomic_add(kept_ptr + cols, tl.sum(kept.to(tl.int32), axis=0))
    tl.atomic_add(nnz_ptr + cols, tl.sum(nonzero.to(tl.int32), axis=0))
    return nibble


@triton.jit
def _sparsify_pack_kernel(y1_ptr, vals_ptr, meta_ptr, kept_ptr, nnz_ptr, stride_y, M, K,
                          RB: tl.constexpr, CB: tl.constexpr):
    row0 = tl.program_id(0) * 64 * RB
    col0 = tl.program_id(1) * 32 * CB
    n00 = _subtile(y1_ptr, vals_ptr, kept_ptr, nnz_ptr, stride_y, M, K, row0, col0, 0, 0, RB, CB)
    n10 = _subtile(y1_ptr, vals_ptr, kept_ptr, nnz_ptr, stride_y, M, K, row0, col0, 1, 0, RB, CB)
    n01 = _subtile(y1_ptr, vals_ptr, kept_ptr, nnz_ptr, stride_y, M, K, row0, col0, 0, 1, RB, CB)
    n11 = _subtile(y1_ptr, vals_ptr, kept_ptr, nnz_ptr, stride_y, M, K, row0, col0, 1, 1, RB, CB)
    word = n00 | (n10 << 4) | (n01 << 8) | (n11 << 12)  # nibble 2j + h
    a = tl.arange(0, 32 * RB)
    block_row = row0 // 64 + a // 32
    in_word = ((a % 32) // 8) * 32 + (a % 8) * 4  # 32s + 4i
    g = tl.arange(0, 4 * CB)
    block_col = col0 // 32 + g // 4
    offs = (block_row[:, None].to(tl.int64) * (K // 32) + block_col[None, :]) * 128 + in_word[:, None] + (g % 4)[None, :]
    tl.store(meta_ptr + offs, word.to(tl.int16), mask=(block_row * 64 < M)[:, None])


@dataclass(frozen=True)
class PackedActivation:
    """The packed 2:4 operand [rows, cols] plus what the forward counted on the way."""

    packed: torch.Tensor  # [rows * cols * 9 / 16] of the input dtype: values, then metadata
    rows: int
    cols: int
    kept_per_feature: torch.Tensor  # int32 [cols]: non-zeros the mask kept, per column
    nonzeros_per_feature: torch.Tensor  # int32 [cols]: non-zeros of relu(y1)**2 before the mask


def check_sparsify_input(y1: torch.Tensor) -> None:
    if not isinstance(y1, torch.Tensor):
        raise TypeError(f"y1 must be a torch.Tensor, got {type(y1).__name__}")
    if y1.dtype not in (torch.bfloat16, torch.float16):
        raise TypeError(f"y1 must be bfloat16 or float16 for the sparse tensor cores, got {y1.dtype}")
    check_ndim("y1", y1, ndim=2)
    check_multiple("y1", y1.shape[0], ROW_BLOCK, "the row (token) count")
    check_multiple("y1", y1.shape[1], 2 * COL_BLOCK, "the column (hidden) count")
    if y1.stride(1) != 1:
        raise ValueError(f"y1 must have unit stride along its last dimension, got strides {y1.stride()}")


def sparsify_pack(y1: torch.Tensor, *, rows_per_program: int = 1, cols_per_program: int = 4,
                  num_warps: int = 4) -> PackedActivation:
    """Pack relu(y1)**2 under the token-wise 2:4 mask for `torch._cslt_sparse_mm`, counting per feature."""
    check_sparsify_input(y1)
    M, K = y1.shape
    while K % (COL_BLOCK * cols_per_program):
        cols_per_program //= 2
    packed = torch.empty(M * K * 9 // 16, dtype=y1.dtype, device=y1.device)
    counts = torch.zeros(2, K, dtype=torch.int32, device=y1.device)
    grid = (triton.cdiv(M, ROW_BLOCK * rows_per_program), K // (COL_BLOCK * cols_per_program))
    _sparsify_pack_kernel[grid](
        y1, packed[: M * K // 2], packed[M * K // 2 :].view(torch.int16), counts[0], counts[1], y1.stride(0), M, K,
        RB=rows_per_program, CB=cols_per_program, num_warps=num_warps,
    )
    return PackedActivation(packed, M, K, counts[0], counts[1])
