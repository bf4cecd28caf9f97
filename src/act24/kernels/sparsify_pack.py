"""ReLU² + token-wise 2:4 selection + packing into cuSPARSELt's sm90 layout, in one pass.

Reads y1 [M, K] (16-bit) once and writes the packed operand of
a = where(tokenwise_mask(relu(y1)**2), relu(y1)**2, 0): exactly
`reference.cusparselt_layout.compress_reference(a)`, i.e. what `torch._cslt_compress(a)`
returns, byte for byte (groups left with <2 non-zeros name the highest zero positions,
as cuSPARSELt does).

Layout (see reference/cusparselt_layout.py): values row-major [M, K/2]; then 4-bit
metadata in blocks of 64 rows x 32 columns, row r = 16s + 8h + i and group g = 4j + q
of a block going to word 32s + 4i + q, nibble 2j + h. A program loads whole [64, 32*CB]
tiles (contiguous row segments), selects in registers, and folds the nibbles into words
by reshapes and sums, so each word is written once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..reference.checks import check_multiple, check_ndim
from .top2 import INTERPRETED, TL_DTYPE, bits16, packed_regions, round_to, select_2_of_4

ROW_BLOCK, COL_BLOCK = 64, 32  # one metadata block


@triton.jit
def _element(word, i: tl.constexpr, DTYPE: tl.constexpr, INTEGER_ROUNDING: tl.constexpr):
    """Element i of a group of four 16-bit values held in one int64: relu² (fp32, rounded to DTYPE)."""
    y = (word >> (16 * i)).to(tl.int16).to(DTYPE, bitcast=True).to(tl.float32)
    r = tl.where(y < 0, 0.0, y)  # keeps NaN, like torch.relu
    return round_to(r * r, DTYPE, INTEGER_ROUNDING)


@triton.jit
def _flags(keep0, keep1, keep2, keep3, e0, e1, e2, e3):
    """Kept-non-zero and non-zero flags of the four positions, 8 bits each in one int32."""
    nz0 = (e0 != 0).to(tl.int32)
    nz1 = (e1 != 0).to(tl.int32)
    nz2 = (e2 != 0).to(tl.int32)
    nz3 = (e3 != 0).to(tl.int32)
    kept = (keep0 * nz0) | ((keep1 * nz1) << 8) | ((keep2 * nz2) << 16) | ((keep3 * nz3) << 24)
    return kept, nz0 | (nz1 << 8) | (nz2 << 16) | (nz3 << 24)


@triton.jit
def _flush_counts(ptr, groups, packed_counts):
    """Add the per-row counters (four 8-bit fields per group) to the column totals."""
    # one relaxed atomic per column and program: acq_rel atomics would fence every add
    for p in tl.static_range(4):
        total = tl.sum((packed_counts >> (8 * p)) & 0xFF, axis=0)
        tl.atomic_add(ptr + 4 * groups + p, total, sem="relaxed")


@triton.jit
def _metadata_words(nib, CB: tl.constexpr):
    """Nibbles [64 rows, 8*CB groups] of a block-row -> words [s, i, c, q]: local row 16s + 8h + i,
    group 8c + 4j + q; word 32s + 4i + q of block c holds its four (h, j) nibbles at bits 4(2j + h)."""
    r = tl.arange(0, 64)
    g = tl.arange(0, 8 * CB)
    words = nib << (4 * (2 * ((g // 4) % 2)[None, :] + ((r // 8) % 2)[:, None]))
    words = tl.sum(tl.reshape(words, (4, 2, 8, 8 * CB)), axis=1)  # OR over h: [s, i, g]
    return tl.sum(tl.reshape(words, (4, 8, CB, 2, 4)), axis=3)  # OR over j: [s, i, c, q]


@triton.jit
def _sparsify_pack_kernel(y1_ptr, vals_ptr, meta_ptr, kept_ptr, nnz_ptr, row_words, M, K,
                          BLOCKS: tl.constexpr, CB: tl.constexpr, DTYPE: tl.constexpr,
                          INTEGER_ROUNDING: tl.constexpr):
    """A column strip of 32*CB columns over BLOCKS row blocks of 64, loaded as whole [64, 8*CB] tiles
    of groups (contiguous row segments).

    Counts stay element-wise in registers (8-bit fields: at most BLOCKS adds each) and are
    reduced over rows once at the end: a reduction per block would put shared-memory round
    trips and barriers in the loop.
    """
    groups = tl.program_id(1) * 8 * CB + tl.arange(0, 8 * CB)
    first = tl.program_id(0) * BLOCKS * 64
    r = tl.arange(0, 64)
    kept_acc = tl.zeros((64, 8 * CB), tl.int32)
    nnz_acc = tl.zeros((64, 8 * CB), tl.int32)
    s = tl.arange(0, 4)[:, None, None, None]
    i = tl.arange(0, 8)[None, :, None, None]
    c = tl.arange(0, CB)[None, None, :, None]
    q = tl.arange(0, 4)[None, None, None, :]
    for blk in range(BLOCKS):
        row0 = first + blk * 64
        rows = (row0 + r).to(tl.int64)
        in_rows = (row0 + r < M)[:, None]
        word = tl.load(y1_ptr + rows[:, None] * row_words + groups[None, :], mask=in_rows, other=0,
                       eviction_policy="evict_first")
        e0 = _element(word, 0, DTYPE, INTEGER_ROUNDING)
        e1 = _element(word, 1, DTYPE, INTEGER_ROUNDING)
        e2 = _element(word, 2, DTYPE, INTEGER_ROUNDING)
        e3 = _element(word, 3, DTYPE, INTEGER_ROUNDING)
        v0, v1, nibble, keep0, keep1, keep2, keep3 = select_2_of_4(e0, e1, e2, e3)
        tl.store(vals_ptr + rows[:, None] * (K // 4) + groups[None, :], bits16(v0, DTYPE) | (bits16(v1, DTYPE) << 16),
                 mask=in_rows)
        kept, nonzero = _flags(keep0, keep1, keep2, keep3, e0, e1, e2, e3)
        kept_acc += kept
        nnz_acc += nonzero
        block = (row0 // 64).to(tl.int64) * (K // 32) + tl.program_id(1) * CB + c
        tl.store(meta_ptr + block * 128 + 32 * s + 4 * i + q, _metadata_words(nibble, CB).to(tl.int16), mask=row0 < M)
    _flush_counts(kept_ptr, groups, kept_acc)
    _flush_counts(nnz_ptr, groups, nnz_acc)


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


def sparsify_pack(y1: torch.Tensor, *, blocks_per_program: int = 16, cols_per_program: int = 1,
                  num_warps: int = 4) -> PackedActivation:
    """Pack relu(y1)**2 under the token-wise 2:4 mask for `torch._cslt_sparse_mm`, counting per feature.

    A program handles `blocks_per_program` blocks of 64 rows times 32*`cols_per_program` columns;
    the defaults were the fastest on the H200 (scripts/tune_sparsify_pack.py).
    """
    check_sparsify_input(y1)
    if not 1 <= blocks_per_program <= 255:
        raise ValueError(f"blocks_per_program must be in [1, 255] (8-bit counters), got {blocks_per_program}")
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
        y1_groups, *packed_regions(packed, M, K), kept, nonzeros,
        y1_groups.stride(0), M, K,
        BLOCKS=blocks_per_program, CB=cols_per_program, DTYPE=TL_DTYPE[y1.dtype], INTEGER_ROUNDING=INTERPRETED,
        num_warps=num_warps,
    )
    return PackedActivation(packed, kept, nonzeros)
