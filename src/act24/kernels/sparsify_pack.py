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
from .top2 import bits16, round_to, select_2_of_4

ROW_BLOCK, COL_BLOCK = 64, 32  # one metadata block
_TL_DTYPE = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _element(word, i: tl.constexpr, DTYPE: tl.constexpr, INTEGER_ROUNDING: tl.constexpr):
    """Element i of a group of four 16-bit values held in one int64: relu² (fp32, rounded to DTYPE)."""
    y = (word >> (16 * i)).to(tl.int16).to(DTYPE, bitcast=True).to(tl.float32)
    r = tl.where(y < 0, 0.0, y)  # keeps NaN, like torch.relu
    return round_to(r * r, DTYPE, INTEGER_ROUNDING)


@triton.jit
def _subtile_rows(row0, h: tl.constexpr):
    a = tl.arange(0, 32)
    return row0 + (a // 8) * 16 + 8 * h + (a % 8)  # rows 16s + 8h + i of the block


@triton.jit
def _subtile_groups(col0, j: tl.constexpr, CB: tl.constexpr):
    b = tl.arange(0, 4 * CB)
    return col0 // 4 + (b // 4) * 8 + 4 * j + (b % 4)  # groups 8c + 4j + q of the strip


@triton.jit
def _load_subtile(y1_ptr, row_words, row0, M, col0, h: tl.constexpr, j: tl.constexpr, CB: tl.constexpr):
    """The (h, j) sub-tile of a 64-row block as int64 words, one group of 4 values each."""
    rows = _subtile_rows(row0, h)
    groups = _subtile_groups(col0, j, CB)
    return tl.load(y1_ptr + rows[:, None].to(tl.int64) * row_words + groups[None, :],
                   mask=(rows < M)[:, None], other=0, eviction_policy="evict_first")


@triton.jit
def _pack_subtile(word, vals_ptr, M, K, row0, col0, h: tl.constexpr, j: tl.constexpr,
                  CB: tl.constexpr, DTYPE: tl.constexpr, INTEGER_ROUNDING: tl.constexpr):
    """Select 2 of 4 in every group of a sub-tile and store the values. Returns the nibbles [32, 4*CB]
    and the kept and non-zero flags of the four positions, packed 8 bits each — nothing crosses threads."""
    rows = _subtile_rows(row0, h)
    groups = _subtile_groups(col0, j, CB)
    in_rows = rows < M
    e0 = _element(word, 0, DTYPE, INTEGER_ROUNDING)
    e1 = _element(word, 1, DTYPE, INTEGER_ROUNDING)
    e2 = _element(word, 2, DTYPE, INTEGER_ROUNDING)
    e3 = _element(word, 3, DTYPE, INTEGER_ROUNDING)
    v0, v1, nibble, keep0, keep1, keep2, keep3 = select_2_of_4(e0, e1, e2, e3)
    tl.store(vals_ptr + rows[:, None].to(tl.int64) * (K // 4) + groups[None, :],
             bits16(v0, DTYPE) | (bits16(v1, DTYPE) << 16), mask=in_rows[:, None])
    nz0 = (e0 != 0).to(tl.int32)
    nz1 = (e1 != 0).to(tl.int32)
    nz2 = (e2 != 0).to(tl.int32)
    nz3 = (e3 != 0).to(tl.int32)
    # four 8-bit counters per int32, one per position in the group; reduced over rows once per program
    kept = (keep0 * nz0) | ((keep1 * nz1) << 8) | ((keep2 * nz2) << 16) | ((keep3 * nz3) << 24)
    nonzero = nz0 | (nz1 << 8) | (nz2 << 16) | (nz3 << 24)
    return nibble, kept, nonzero


@triton.jit
def _flush_counts(ptr, col0, j: tl.constexpr, packed_counts, CB: tl.constexpr):
    """Add the per-row-slot counters (four 8-bit fields) of sub-tile column j to the column totals."""
    b = tl.arange(0, 4 * CB)
    cols = col0 + (b // 4) * 32 + 16 * j + (b % 4) * 4
    # one relaxed atomic per column and program: acq_rel atomics would fence every add
    for p in tl.static_range(4):
        total = tl.sum((packed_counts >> (8 * p)) & 0xFF, axis=0)
        tl.atomic_add(ptr + cols + p, total, sem="relaxed")


@triton.jit
def _sparsify_pack_kernel(y1_ptr, vals_ptr, meta_ptr, kept_ptr, nnz_ptr, row_words, M, K,
                          BLOCKS: tl.constexpr, CB: tl.constexpr, DTYPE: tl.constexpr,
                          INTEGER_ROUNDING: tl.constexpr):
    """A column strip of 32*CB columns over BLOCKS row blocks of 64.

    Counts stay element-wise in registers (8-bit fields: at most 2*BLOCKS adds each) and
    are reduced over rows once at the end: a reduction per block would put shared-memory
    round trips and barriers in the loop.
    """
    col0 = tl.program_id(1) * 32 * CB
    first = tl.program_id(0) * BLOCKS * 64
    kept_j0 = tl.zeros((32, 4 * CB), tl.int32)
    kept_j1 = tl.zeros((32, 4 * CB), tl.int32)
    nnz_j0 = tl.zeros((32, 4 * CB), tl.int32)
    nnz_j1 = tl.zeros((32, 4 * CB), tl.int32)
    a = tl.arange(0, 32)
    in_word = (a // 8) * 32 + (a % 8) * 4  # 32s + 4i
    g = tl.arange(0, 4 * CB)
    block_col = col0 // 32 + g // 4
    for blk in range(BLOCKS):
        row0 = first + blk * 64
        w00 = _load_subtile(y1_ptr, row_words, row0, M, col0, 0, 0, CB)
        w10 = _load_subtile(y1_ptr, row_words, row0, M, col0, 1, 0, CB)
        w01 = _load_subtile(y1_ptr, row_words, row0, M, col0, 0, 1, CB)
        w11 = _load_subtile(y1_ptr, row_words, row0, M, col0, 1, 1, CB)
        n00, k00, z00 = _pack_subtile(w00, vals_ptr, M, K, row0, col0, 0, 0, CB, DTYPE, INTEGER_ROUNDING)
        n10, k10, z10 = _pack_subtile(w10, vals_ptr, M, K, row0, col0, 1, 0, CB, DTYPE, INTEGER_ROUNDING)
        n01, k01, z01 = _pack_subtile(w01, vals_ptr, M, K, row0, col0, 0, 1, CB, DTYPE, INTEGER_ROUNDING)
        n11, k11, z11 = _pack_subtile(w11, vals_ptr, M, K, row0, col0, 1, 1, CB, DTYPE, INTEGER_ROUNDING)
        kept_j0 += k00 + k10
        nnz_j0 += z00 + z10
        kept_j1 += k01 + k11
        nnz_j1 += z01 + z11
        word = n00 | (n10 << 4) | (n01 << 8) | (n11 << 12)  # nibble 2j + h
        offs = ((row0 // 64).to(tl.int64) * (K // 32) + block_col[None, :]) * 128 + in_word[:, None] + (g % 4)[None, :]
        tl.store(meta_ptr + offs, word.to(tl.int16), mask=row0 < M)
    _flush_counts(kept_ptr, col0, 0, kept_j0, CB)
    _flush_counts(kept_ptr, col0, 1, kept_j1, CB)
    _flush_counts(nnz_ptr, col0, 0, nnz_j0, CB)
    _flush_counts(nnz_ptr, col0, 1, nnz_j1, CB)


@dataclass(frozen=True)
class PackedActivation:
    """The packed 2:4 operand [rows, cols] plus what the forward counted on the way."""

    packed: torch.Tensor  # [rows, cols * 9 / 16] of the input dtype: values, then metadata
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
    if y1.stride(1) != 1 or y1.stride(0) % 4:
        raise ValueError(f"y1 must have unit stride along its last dimension and a row stride that is a multiple of 4, got strides {y1.stride()}")


def sparsify_pack(y1: torch.Tensor, *, blocks_per_program: int = 16, cols_per_program: int = 2,
                  num_warps: int = 8) -> PackedActivation:
    """Pack relu(y1)**2 under the token-wise 2:4 mask for `torch._cslt_sparse_mm`, counting per feature.

    A program handles `blocks_per_program` blocks of 64 rows times 32*`cols_per_program` columns;
    the defaults were the fastest on the H200 (scripts/tune_sparsify_pack.py).
    """
    check_sparsify_input(y1)
    if not 1 <= blocks_per_program <= 127:
        raise ValueError(f"blocks_per_program must be in [1, 127] (8-bit counters), got {blocks_per_program}")
    for name, value in (("cols_per_program", cols_per_program), ("num_warps", num_warps)):
        if value < 1 or value & (value - 1):
            raise ValueError(f"{name} must be a power of 2 >= 1, got {value}")
    M, K = y1.shape
    while K % (COL_BLOCK * cols_per_program):
        cols_per_program //= 2
    packed = torch.empty(M, K * 9 // 16, dtype=y1.dtype, device=y1.device)
    kept = torch.zeros(K, dtype=torch.int32, device=y1.device)
    nonzeros = torch.zeros(K, dtype=torch.int32, device=y1.device)
    # a group of 4 values is one int64: each thread selects whole groups, nothing is shuffled
    y1_groups = y1.view(torch.int64)
    grid = (triton.cdiv(M, ROW_BLOCK * blocks_per_program), K // (COL_BLOCK * cols_per_program))
    _sparsify_pack_kernel[grid](
        y1_groups, packed.view(-1)[: M * K // 2].view(torch.int32), packed.view(-1)[M * K // 2 :].view(torch.int16), kept, nonzeros,
        y1_groups.stride(0), M, K,
        BLOCKS=blocks_per_program, CB=cols_per_program, DTYPE=_TL_DTYPE[y1.dtype], INTEGER_ROUNDING=_INTERPRETED,
        num_warps=num_warps,
    )
    return PackedActivation(packed, kept, nonzeros)
