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

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..reference.checks import check_multiple, check_ndim

ROW_BLOCK, COL_BLOCK = 64, 32  # one metadata block
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _round_to(x, dtype: tl.constexpr, INTEGER_ROUNDING: tl.constexpr):
    """x (fp32) rounded to `dtype` to nearest-even, kept in fp32: where the reference rounds.

    Triton's CPU interpreter truncates fp32 -> bf16 casts, so there bf16 is rounded with
    integer arithmetic; the GPU uses its conversion instruction (the same rounding).
    """
    if INTEGER_ROUNDING and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return tl.where(x != x, x, bits.to(tl.float32, bitcast=True))
    else:
        return x.to(dtype).to(tl.float32)


@triton.jit
def _beats(kj, ki):
    """Does position j beat a later position i? Larger wins; equal non-zeros: the lower index;
    equal zeros: the higher index (so groups with <2 non-zeros name the positions cuSPARSELt does)."""
    return (kj > ki) | ((kj == ki) & (ki != 0))


@triton.jit
def _select(y, R: tl.constexpr, C: tl.constexpr, INTEGER_ROUNDING: tl.constexpr):
    """relu² and 2:4 selection of a [R, C] tile: (value0, value1, nibble [R, C/4], kept non-zeros, non-zeros [R, C])."""
    yf = y.to(tl.float32)
    r = tl.where(yf < 0, 0.0, yf)  # keeps NaN, like torch.relu
    y2 = _round_to(r * r, y.dtype, INTEGER_ROUNDING)
    lo, hi = tl.split(tl.reshape(y2, (R, C // 4, 2, 2)))
    e0, e2 = tl.split(lo)
    e1, e3 = tl.split(hi)
    # ranking keys: NaN above every number
    k0 = tl.where(e0 != e0, float("inf"), e0)
    k1 = tl.where(e1 != e1, float("inf"), e1)
    k2 = tl.where(e2 != e2, float("inf"), e2)
    k3 = tl.where(e3 != e3, float("inf"), e3)
    b01 = _beats(k0, k1)
    b02 = _beats(k0, k2)
    b03 = _beats(k0, k3)
    b12 = _beats(k1, k2)
    b13 = _beats(k1, k3)
    b23 = _beats(k2, k3)
    one = tl.full(b01.shape, 1, tl.int32)
    keep0 = (one - b01 + one - b02 + one - b03) < 2
    keep1 = (b01.to(tl.int32) + one - b12 + one - b13) < 2
    keep2 = (b02.to(tl.int32) + b12 + one - b23) < 2
    keep3 = (b03.to(tl.int32) + b13 + b23) < 2
    v0 = tl.where(keep0, e0, tl.where(keep1, e1, e2))
    v1 = tl.where(keep3, e3, tl.where(keep2, e2, e1))
    nibble = tl.where(keep0, 0, tl.where(keep1, 1, 2)) | (tl.where(keep3, 3, tl.where(keep2, 2, 1)) << 2)
    nz0, nz1, nz2, nz3 = e0 != 0, e1 != 0, e2 != 0, e3 != 0
    kept = tl.reshape(tl.join(tl.join(keep0 & nz0, keep2 & nz2), tl.join(keep1 & nz1, keep3 & nz3)), (R, C))
    nonzero = tl.reshape(tl.join(tl.join(nz0, nz2), tl.join(nz1, nz3)), (R, C))
    return v0, v1, nibble, kept, nonzero


@triton.jit
def _subtile(y1_ptr, vals_ptr, stride_y, M, K, row0, col0, h: tl.constexpr, j: tl.constexpr,
             CB: tl.constexpr, INTEGER_ROUNDING: tl.constexpr):
    """Rows 16s + 8h + i, columns 32c + 16j + w of a 64-row block: select, store values, return nibbles."""
    R: tl.constexpr = 32
    C: tl.constexpr = 16 * CB
    a = tl.arange(0, R)
    rows = row0 + (a // 8) * 16 + 8 * h + (a % 8)
    b = tl.arange(0, C)
    cols = col0 + (b // 16) * 32 + 16 * j + (b % 16)
    in_rows = rows < M
    y = tl.load(y1_ptr + rows[:, None].to(tl.int64) * stride_y + cols[None, :], mask=in_rows[:, None], other=0.0)
    v0, v1, nibble, kept, nonzero = _select(y, R, C, INTEGER_ROUNDING)
    v = tl.reshape(tl.join(v0, v1), (R, C // 2))
    vb = tl.arange(0, C // 2)
    vcols = col0 // 2 + (vb // 8) * 16 + 8 * j + (vb % 8)
    tl.store(vals_ptr + rows[:, None].to(tl.int64) * (K // 2) + vcols[None, :], v.to(vals_ptr.dtype.element_ty),
             mask=in_rows[:, None])
    return nibble, tl.sum(kept.to(tl.int32), axis=0), tl.sum(nonzero.to(tl.int32), axis=0)


@triton.jit
def _sparsify_pack_kernel(y1_ptr, vals_ptr, meta_ptr, kept_ptr, nnz_ptr, stride_y, M, K,
                          BLOCKS: tl.constexpr, CB: tl.constexpr, INTEGER_ROUNDING: tl.constexpr):
    """A column strip of 32*CB columns over BLOCKS row blocks of 64; counts summed in registers."""
    col0 = tl.program_id(1) * 32 * CB
    C: tl.constexpr = 16 * CB
    kept0 = tl.zeros((C,), tl.int32)
    kept1 = tl.zeros((C,), tl.int32)
    nnz0 = tl.zeros((C,), tl.int32)
    nnz1 = tl.zeros((C,), tl.int32)
    a = tl.arange(0, 32)
    in_word = (a // 8) * 32 + (a % 8) * 4  # 32s + 4i
    g = tl.arange(0, 4 * CB)
    for blk in range(BLOCKS):
        block_row = tl.program_id(0) * BLOCKS + blk
        row0 = block_row * 64
        n00, k, z = _subtile(y1_ptr, vals_ptr, stride_y, M, K, row0, col0, 0, 0, CB, INTEGER_ROUNDING)
        kept0 += k
        nnz0 += z
        n10, k, z = _subtile(y1_ptr, vals_ptr, stride_y, M, K, row0, col0, 1, 0, CB, INTEGER_ROUNDING)
        kept0 += k
        nnz0 += z
        n01, k, z = _subtile(y1_ptr, vals_ptr, stride_y, M, K, row0, col0, 0, 1, CB, INTEGER_ROUNDING)
        kept1 += k
        nnz1 += z
        n11, k, z = _subtile(y1_ptr, vals_ptr, stride_y, M, K, row0, col0, 1, 1, CB, INTEGER_ROUNDING)
        kept1 += k
        nnz1 += z
        word = n00 | (n10 << 4) | (n01 << 8) | (n11 << 12)  # nibble 2j + h
        block_col = col0 // 32 + g // 4
        offs = (block_row.to(tl.int64) * (K // 32) + block_col[None, :]) * 128 + in_word[:, None] + (g % 4)[None, :]
        tl.store(meta_ptr + offs, word.to(tl.int16), mask=row0 < M)
    b = tl.arange(0, C)
    cols0 = col0 + (b // 16) * 32 + (b % 16)
    # one relaxed atomic per column and program: acq_rel atomics would fence every add
    tl.atomic_add(kept_ptr + cols0, kept0, sem="relaxed")
    tl.atomic_add(kept_ptr + cols0 + 16, kept1, sem="relaxed")
    tl.atomic_add(nnz_ptr + cols0, nnz0, sem="relaxed")
    tl.atomic_add(nnz_ptr + cols0 + 16, nnz1, sem="relaxed")


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


def sparsify_pack(y1: torch.Tensor, *, blocks_per_program: int = 8, cols_per_program: int = 4,
                  num_warps: int = 4) -> PackedActivation:
    """Pack relu(y1)**2 under the token-wise 2:4 mask for `torch._cslt_sparse_mm`, counting per feature.

    A program handles `blocks_per_program` blocks of 64 rows times 32*`cols_per_program` columns.
    """
    check_sparsify_input(y1)
    M, K = y1.shape
    while K % (COL_BLOCK * cols_per_program):
        cols_per_program //= 2
    packed = torch.empty(M * K * 9 // 16, dtype=y1.dtype, device=y1.device)
    kept = torch.zeros(K, dtype=torch.int32, device=y1.device)
    nonzeros = torch.zeros(K, dtype=torch.int32, device=y1.device)
    grid = (triton.cdiv(M, ROW_BLOCK * blocks_per_program), K // (COL_BLOCK * cols_per_program))
    _sparsify_pack_kernel[grid](
        y1, packed[: M * K // 2], packed[M * K // 2 :].view(torch.int16), kept, nonzeros, y1.stride(0), M, K,
        BLOCKS=blocks_per_program, CB=cols_per_program, INTEGER_ROUNDING=_INTERPRETED, num_warps=num_warps,
    )
    return PackedActivation(packed, M, K, kept, nonzeros)
