"""Helpers shared by the packing kernels: the 2-of-4 selection, 16-bit rounding, the packed layout's
regions and the dtypes they take.

Selection policy (the reference's, see reference/selection.py): the 2 largest magnitudes
win, NaN ranks like ±Inf (above every finite number), equal non-zeros keep the lower index. Among zeros the higher
index wins, so groups with fewer than 2 non-zeros name the positions cuSPARSELt's own
compressor does (the values there are zero either way).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

TL_DTYPE = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}  # the 16-bit types the kernels take
# Triton's CPU interpreter truncates fp32 -> bf16 casts: there round_to rounds with integer arithmetic
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def packed_regions(packed: torch.Tensor, rows: int, cols: int):
    """(values as int32 pairs, metadata as int16 words) of a packed [rows, cols] operand."""
    flat = packed.view(-1)
    return flat[: rows * cols // 2].view(torch.int32), flat[rows * cols // 2 :].view(torch.int16)


@triton.jit
def round_to(x, dtype: tl.constexpr, INTEGER_ROUNDING: tl.constexpr):
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
def bits16(v, DTYPE: tl.constexpr):
    """The 16-bit pattern of v (already representable in DTYPE) in the low half of an int32."""
    return v.to(DTYPE).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF


@triton.jit
def from_bits16(word, DTYPE: tl.constexpr):
    """The DTYPE value whose 16-bit pattern is the low half of `word`, as fp32."""
    return word.to(tl.int16).to(DTYPE, bitcast=True).to(tl.float32)


@triton.jit
def rank_key(e):
    """|e|, with NaN ranked like Inf."""
    return tl.where(e != e, float("inf"), tl.abs(e))


@triton.jit
def _beats(kj, ki):
    """Does position j beat a later position i?"""
    return (kj > ki) | ((kj == ki) & (ki != 0))


@triton.jit
def select_2_of_4(e0, e1, e2, e3):
    """The two kept values (lower position first) and the 4-bit metadata nibble idx0 | idx1 << 2,
    plus the keep flags of the four positions."""
    return select_2_of_4_keyed(rank_key(e0), rank_key(e1), rank_key(e2), rank_key(e3), e0, e1, e2, e3)


@triton.jit
def magnitude_key16(bits, DTYPE: tl.constexpr):
    """rank_key on raw 16-bit patterns (low half of an int32): |e|'s bits order like |e|, NaN clamped to Inf."""
    if DTYPE == tl.bfloat16:
        return tl.minimum(bits & 0x7FFF, 0x7F80)
    else:
        return tl.minimum(bits & 0x7FFF, 0x7C00)


@triton.jit
def select_2_of_4_keyed(k0, k1, k2, k3, e0, e1, e2, e3):
    """select_2_of_4 with the ranking keys given (floats or integers, 0 meaning a zero value)."""
    b01 = _beats(k0, k1).to(tl.int32)
    b02 = _beats(k0, k2).to(tl.int32)
    b03 = _beats(k0, k3).to(tl.int32)
    b12 = _beats(k1, k2).to(tl.int32)
    b13 = _beats(k1, k3).to(tl.int32)
    b23 = _beats(k2, k3).to(tl.int32)
    keep0 = (b01 + b02 + b03) > 1  # rank < 2: beats at least 2 of the other 3
    keep1 = (b12 + b13 - b01) > 0  # rank b01 + (1 - b12) + (1 - b13) < 2
    keep2 = (b02 + b12 + 1 - b23) < 2  # rank = how many positions beat it
    keep3 = (b03 + b13 + b23) < 2
    v0 = tl.where(keep0, e0, tl.where(keep1, e1, e2))
    v1 = tl.where(keep3, e3, tl.where(keep2, e2, e1))
    nibble = tl.where(keep0, 0, tl.where(keep1, 1, 2)) | (tl.where(keep3, 3, tl.where(keep2, 2, 1)) << 2)
    return v0, v1, nibble, keep0, keep1, keep2, keep3
