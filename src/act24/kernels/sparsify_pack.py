"""ReLU² + token-wise 2:4 selection + packing into cuSPARSELt's sm90 layout, in one pass.

Reads y1 [M, K] (16-bit) once and writes the packed operand of
a = where(tokenwise_mask(relu(y1)**2), relu(y1)**2, 0): exactly
`reference.cusparselt_layout.compress_reference(a)`, i.e. what `torch._cslt_compress(a)`
returns, byte for byte (groups left with <2 non-zeros name the highest zero positions,
as cuSPARSELt does).

Layout (see reference/cusparselt_layout.py): values row-major [M, K/2]; then 4-bit
metadata in blocks of 64 rows x 32 columns, row r = 16s + 8h + i and group g = 4j + q
of a block going to word 32s + 4i + q, nibble 2j + h. A program loads each block as four
[32, CB, 4] sub-tiles, one per (h, j): the four nibbles of a word then sit in the same
thread's registers at the same tile position, so words are assembled with shifts and ORs
(no cross-thread reductions) and each is written once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..reference.checks import check_hopper, check_multiple, check_ndim
from .launch import on_device_of
from .top2 import INTERPRETED, TL_DTYPE, magnitude_key16, packed_regions, relu2_pair, rounded_bits16, select_2_of_4_keyed

ROW_BLOCK, COL_BLOCK = 64, 32  # one metadata block
MAX_BLOCKS_PER_PROGRAM = 127  # each 8-bit counter field takes 2 adds per block


@triton.jit
def _squared(word, shift: tl.constexpr, DTYPE: tl.constexpr):
    """relu(v)**2 rounded to DTYPE, as its 16-bit pattern, for the value v in bits [shift, shift + 16) of int32 `word`."""
    if DTYPE == tl.bfloat16 and shift == 0:  # a bf16 pattern is the top half of its fp32
        y = (word << 16).to(tl.float32, bitcast=True)
    elif DTYPE == tl.bfloat16:
        y = (word & -65536).to(tl.float32, bitcast=True)
    else:
        y = (word >> shift).to(tl.int16).to(DTYPE, bitcast=True).to(tl.float32)
    r = tl.where(y < 0, 0.0, y)  # keeps NaN, like torch.relu
    return rounded_bits16(r * r, DTYPE, True)  # integer rounding: the interpreter's casts truncate


@triton.jit
def _flags(keep0, keep1, keep2, keep3, k0, k1, k2, k3):
    """Kept-non-zero and non-zero flags of the four positions, 8 bits each in one int32."""
    nz0 = (k0 != 0).to(tl.int32)
    nz1 = (k1 != 0).to(tl.int32)
    nz2 = (k2 != 0).to(tl.int32)
    nz3 = (k3 != 0).to(tl.int32)
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
def _load(y1_ptr, row_words, rows, groups, live):
    """Groups [CB, 4] (one int64 each: 32 contiguous bytes per c) of rows [32]."""
    return tl.load(y1_ptr + rows[:, None, None] * row_words + groups[None, :, :], mask=live, other=0,
                   eviction_policy="evict_first")


@triton.jit
def _load_block(y1_ptr, row_words, rows, groups0, groups1, live):
    """The four sub-tiles (h, j) of a block: rows (+8 for h = 1) x groups0 (j = 0) or groups1 (j = 1)."""
    return (_load(y1_ptr, row_words, rows, groups0, live), _load(y1_ptr, row_words, rows + 8, groups0, live),
            _load(y1_ptr, row_words, rows, groups1, live), _load(y1_ptr, row_words, rows + 8, groups1, live))


@triton.jit
def _pack_subtile(word, vals_ptr, K, rows, groups, live, kept_acc, nnz_acc,
                  COUNT: tl.constexpr, DTYPE: tl.constexpr, INTERPRETED: tl.constexpr):
    """Selects in a loaded sub-tile and stores its kept pairs; returns the metadata nibbles and the
    counters with this sub-tile's flags added (unchanged without COUNT)."""
    lo = word.to(tl.int32)  # positions 0, 1
    hi = (word >> 32).to(tl.int32)  # positions 2, 3
    if INTERPRETED:  # Triton's interpreter runs no PTX: value by value
        b0 = _squared(lo, 0, DTYPE)
        b1 = _squared(lo, 16, DTYPE)
        b2 = _squared(hi, 0, DTYPE)
        b3 = _squared(hi, 16, DTYPE)
        # relu² is >= 0 (or NaN): the keys are the bit patterns, NaN clamped to Inf
        k0 = magnitude_key16(b0, DTYPE)
        k1 = magnitude_key16(b1, DTYPE)
        k2 = magnitude_key16(b2, DTYPE)
        k3 = magnitude_key16(b3, DTYPE)
    else:  # the GPU: two values per instruction; every result's sign bit is clear, so >> 16 needs no mask
        s_lo, key_lo = relu2_pair(lo, DTYPE)
        s_hi, key_hi = relu2_pair(hi, DTYPE)
        b0, b1, b2, b3 = s_lo & 0xFFFF, s_lo >> 16, s_hi & 0xFFFF, s_hi >> 16
        k0, k1, k2, k3 = key_lo & 0xFFFF, key_lo >> 16, key_hi & 0xFFFF, key_hi >> 16
    v0, v1, nibble, keep0, keep1, keep2, keep3 = select_2_of_4_keyed(k0, k1, k2, k3, b0, b1, b2, b3)
    tl.store(vals_ptr + rows[:, None, None] * (K // 4) + groups[None, :, :], v0 | (v1 << 16), mask=live)
    if COUNT:
        kept, nz = _flags(keep0, keep1, keep2, keep3, k0, k1, k2, k3)
        kept_acc += kept
        nnz_acc += nz
    return nibble, kept_acc, nnz_acc


@triton.jit
def _sparsify_pack_kernel(y1_ptr, vals_ptr, meta_ptr, kept_ptr, nnz_ptr, row_words, M, K,
                          BLOCKS: tl.constexpr, CB: tl.constexpr, COUNT: tl.constexpr, DTYPE: tl.constexpr,
                          INTERPRETED: tl.constexpr):
    """A column strip of 32*CB columns over up to BLOCKS row blocks of 64.

    Sub-tile (h, j) of a block holds rows 16s + 8h + i (tile row 8s + i) and groups 8c + 4j + q
    (tile position [8s + i, c, q]), where word 32s + 4i + q of the strip's block c is. The next
    block's sub-tiles are loaded before this one's are processed: the selection is too short to
    hide a load's latency by itself. Counts stay element-wise in registers (8-bit fields) and are
    reduced over rows once at the end: a reduction per block would put barriers in the loop.
    """
    # one flat grid axis, column strips fastest: the programs running together read whole rows (DRAM
    # pages) rather than 128-byte pieces of many rows
    strips = K // (32 * CB)
    strip = tl.program_id(0) % strips
    chunk = tl.program_id(0) // strips
    rho = tl.arange(0, 32)
    c = tl.arange(0, CB)[:, None]
    q = tl.arange(0, 4)[None, :]
    groups0 = strip * 8 * CB + 8 * c + q  # [CB, 4], j = 0; j = 1 is 4 groups on
    groups1 = groups0 + 4
    word_in_strip = c[None, :, :] * 128 + 4 * rho[:, None, None] + q[None, :, :]
    kept0 = tl.zeros((32, CB, 4), tl.int32)
    kept1 = tl.zeros((32, CB, 4), tl.int32)
    nnz0 = tl.zeros((32, CB, 4), tl.int32)
    nnz1 = tl.zeros((32, CB, 4), tl.int32)
    first = chunk * BLOCKS * 64
    rows0 = (first + 16 * (rho // 8) + rho % 8).to(tl.int64)  # h = 0; h = 1 is 8 rows on
    live = first < M  # M is a multiple of 64: a block is all in or all out
    w00, w10, w01, w11 = _load_block(y1_ptr, row_words, rows0, groups0, groups1, live)
    for blk in range(BLOCKS):
        row0 = first + blk * 64
        live = row0 < M
        following = rows0 + 64
        live_next = (row0 + 64 < M) & (blk + 1 < BLOCKS)
        x00, x10, x01, x11 = _load_block(y1_ptr, row_words, following, groups0, groups1, live_next)
        n00, kept0, nnz0 = _pack_subtile(w00, vals_ptr, K, rows0, groups0, live, kept0, nnz0,
                                         COUNT, DTYPE, INTERPRETED)
        n10, kept0, nnz0 = _pack_subtile(w10, vals_ptr, K, rows0 + 8, groups0, live, kept0, nnz0,
                                         COUNT, DTYPE, INTERPRETED)
        n01, kept1, nnz1 = _pack_subtile(w01, vals_ptr, K, rows0, groups1, live, kept1, nnz1,
                                         COUNT, DTYPE, INTERPRETED)
        n11, kept1, nnz1 = _pack_subtile(w11, vals_ptr, K, rows0 + 8, groups1, live, kept1, nnz1,
                                         COUNT, DTYPE, INTERPRETED)
        words = n00 | (n10 << 4) | (n01 << 8) | (n11 << 12)  # nibble 2j + h
        block = (row0 // 64).to(tl.int64) * (K // 32) + strip * CB
        tl.store(meta_ptr + block * 128 + word_in_strip, words.to(tl.int16), mask=live)
        w00, w10, w01, w11 = x00, x10, x01, x11
        rows0 = following
    if COUNT:
        _flush_counts(kept_ptr, groups0, kept0)
        _flush_counts(kept_ptr, groups1, kept1)
        _flush_counts(nnz_ptr, groups0, nnz0)
        _flush_counts(nnz_ptr, groups1, nnz1)


@dataclass(frozen=True)
class PackedActivation:
    """The packed 2:4 operand [rows, cols] plus what the forward counted on the way."""

    packed: torch.Tensor  # [rows, cols * 9 / 16] of the input dtype: values, then metadata
    # int32 [cols] each, None when the pack was asked not to count
    kept_per_feature: torch.Tensor | None  # non-zeros the mask kept, per column
    nonzeros_per_feature: torch.Tensor | None  # non-zeros of relu(y1)**2 before the mask, per column


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
    check_hopper("y1", y1, "sparsify_pack writes cuSPARSELt's sm90 layout with sm90 instructions")


def sparsify_pack(y1: torch.Tensor, *, count: bool = True, blocks_per_program: int | None = None,
                  cols_per_program: int = 2, num_warps: int = 8) -> PackedActivation:
    """Pack relu(y1)**2 under the token-wise 2:4 mask for `torch._cslt_sparse_mm`, counting per feature
    unless `count` is False (inference without statistics: the counting is a fifth of the kernel's work).

    A program handles `blocks_per_program` blocks of 64 rows times 32*`cols_per_program` columns;
    the defaults were the fastest on the H200 (scripts/ab_packer.py, results/sparsify_pack_ab.json):
    4 blocks without counting, 8 with.
    """
    check_sparsify_input(y1)
    if blocks_per_program is None:
        blocks_per_program = 8 if count else 4
    if not 1 <= blocks_per_program <= MAX_BLOCKS_PER_PROGRAM:
        raise ValueError(f"blocks_per_program must be in [1, {MAX_BLOCKS_PER_PROGRAM}] (8-bit counters), "
                         f"got {blocks_per_program}")
    for name, value in (("cols_per_program", cols_per_program), ("num_warps", num_warps)):
        if value < 1 or value & (value - 1):
            raise ValueError(f"{name} must be a power of 2 >= 1, got {value}")
    M, K = y1.shape
    while K % (COL_BLOCK * cols_per_program):
        cols_per_program //= 2
    packed = torch.empty(M, K * 9 // 16, dtype=y1.dtype, device=y1.device)
    values, metadata = packed_regions(packed, M, K)
    if count:  # two buffers, not views of one: the custom ops return both, and their outputs may not alias
        kept, nonzeros = (torch.zeros(K, dtype=torch.int32, device=y1.device) for _ in range(2))
    else:
        kept = nonzeros = values  # never touched: the kernel compiles the counting out
    # a group of 4 values is one int64: each thread selects whole groups, nothing is shuffled
    y1_groups = y1.view(torch.int64)
    grid = (triton.cdiv(M, ROW_BLOCK * blocks_per_program) * (K // (COL_BLOCK * cols_per_program)),)
    with on_device_of(y1):
        _sparsify_pack_kernel[grid](
            y1_groups, values, metadata, kept, nonzeros,
            y1_groups.stride(0), M, K,
            BLOCKS=blocks_per_program, CB=cols_per_program, COUNT=count, DTYPE=TL_DTYPE[y1.dtype],
            INTERPRETED=INTERPRETED,
            num_warps=num_warps,
        )
    return PackedActivation(packed, kept, nonzeros) if count else PackedActivation(packed, None, None)
