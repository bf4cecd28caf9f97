"""Helpers shared by the packing kernels: the 2-of-4 selection on integer keys, 16-bit rounding, the
packed layout's regions and the dtypes they take.

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
# Triton's CPU interpreter truncates fp32 -> bf16 casts: there rounded_bits16 rounds with integer arithmetic
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def packed_regions(packed: torch.Tensor, rows: int, cols: int):
    """(values as int32 pairs, metadata as int16 words) of a packed [rows, cols] operand."""
    flat = packed.view(-1)
    return flat[: rows * cols // 2].view(torch.int32), flat[rows * cols // 2 :].view(torch.int16)


@triton.jit
def round_to(x, dtype: tl.constexpr, INTEGER_ROUNDING: tl.constexpr):
    """x (fp32) rounded to `dtype` to nearest-even, kept in fp32: where the reference rounds."""
    if INTEGER_ROUNDING and dtype == tl.bfloat16:
        return from_bits16(rounded_bits16(x, dtype, INTEGER_ROUNDING), dtype)
    else:
        return x.to(dtype).to(tl.float32)


@triton.jit
def rounded_bits16(x, dtype: tl.constexpr, INTEGER_ROUNDING: tl.constexpr):
    """The 16-bit pattern of x (fp32) rounded to `dtype` to nearest-even, in the low half of an int32.

    Triton's CPU interpreter truncates fp32 -> bf16 casts, so there bf16 is rounded with
    integer arithmetic; the GPU uses its conversion instruction (the same rounding).
    """
    if INTEGER_ROUNDING and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).to(tl.int32)
        return tl.where(x != x, 0x7FC0, bits)
    else:
        return x.to(dtype).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF


@triton.jit
def bits16(v, DTYPE: tl.constexpr):
    """The 16-bit pattern of v (already representable in DTYPE) in the low half of an int32."""
    return rounded_bits16(v, DTYPE, False)  # nothing to round: the conversion is exact


@triton.jit
def from_bits16(word, DTYPE: tl.constexpr):
    """The DTYPE value whose 16-bit pattern is the low half of `word`, as fp32."""
    return word.to(tl.int16).to(DTYPE, bitcast=True).to(tl.float32)


# relu(v)**2 of both 16-bit halves, with packed sm90 instructions: max.NaN keeps NaN (as torch.relu
# does); the product of two 16-bit values is exact in fp32 wherever it rounds to a non-zero 16-bit
# value, so one rounding (mul.rn) gives the reference's fp32 square rounded (a GPU test checks every
# 16-bit value); the keys are the results with NaN (canonical, 0x7FFF) clamped to Inf
_RELU2_PAIR_ASM = """{
.reg .b32 zero, clamp;
mov.b32 zero, 0;
mov.b32 clamp, CLAMP;
max.NaN.TYPE $0, $2, zero;
mul.rn.TYPE $0, $0, $0;
min.u16x2 $1, $0, clamp;
}"""
RELU2_PAIR_BF16 = tl.constexpr(_RELU2_PAIR_ASM.replace("TYPE", "bf16x2").replace("CLAMP", "0x7F807F80"))
RELU2_PAIR_F16 = tl.constexpr(_RELU2_PAIR_ASM.replace("TYPE", "f16x2").replace("CLAMP", "0x7C007C00"))


@triton.jit
def relu2_pair(pair, DTYPE: tl.constexpr):
    """(relu(v)**2 rounded to DTYPE, its ranking key) for both 16-bit values v of int32 `pair`, each
    result two 16-bit patterns in one int32 laid out like `pair`. GPU only (inline PTX, sm90): the
    interpreter takes rounded_bits16 and magnitude_key16 per value, with the same results up to NaN
    payloads (0x7FFF here, 0x7FC0 there for bf16: each what torch gives on that device)."""
    asm: tl.constexpr = RELU2_PAIR_BF16 if DTYPE == tl.bfloat16 else RELU2_PAIR_F16
    return tl.inline_asm_elementwise(asm, "=r,=r,r", [pair], dtype=(tl.int32, tl.int32), is_pure=True, pack=1)


@triton.jit
def magnitude_key16(bits, DTYPE: tl.constexpr):
    """The ranking key of a raw 16-bit pattern (low half of an int32): |e|'s bits order like |e|,
    NaN clamped to Inf."""
    if DTYPE == tl.bfloat16:
        return tl.minimum(bits & 0x7FFF, 0x7F80)
    else:
        return tl.minimum(bits & 0x7FFF, 0x7C00)


@triton.jit
def _unique_key(k, p: tl.constexpr):
    """Key k (integer, 0 for a zero value) at position p of a group, made unique with the tie rule
    folded in: equal non-zeros rank the lower position higher, equal zeros the higher position."""
    return tl.where(k != 0, 4 * k + (3 - p), p)


@triton.jit
def select_2_of_4_keyed(k0, k1, k2, k3, e0, e1, e2, e3):
    """The two kept values of each group (lower position first), its 4-bit metadata nibble
    idx0 | idx1 << 2 and the four keep flags, from integer ranking keys (0 meaning a zero value).

    With unique keys the two kept positions are those at or above the second largest key:
    7 min/max and 4 compares instead of a comparison per pair with tie terms.
    """
    u0 = _unique_key(k0, 0)
    u1 = _unique_key(k1, 1)
    u2 = _unique_key(k2, 2)
    u3 = _unique_key(k3, 3)
    second = tl.maximum(tl.minimum(tl.maximum(u0, u1), tl.maximum(u2, u3)),
                        tl.maximum(tl.minimum(u0, u1), tl.minimum(u2, u3)))
    keep0 = u0 >= second
    keep1 = u1 >= second
    keep2 = u2 >= second
    keep3 = u3 >= second
    v0 = tl.where(keep0, e0, tl.where(keep1, e1, e2))
    v1 = tl.where(keep3, e3, tl.where(keep2, e2, e1))
    nibble = tl.where(keep0, 0, tl.where(keep1, 1, 2)) | (tl.where(keep3, 3, tl.where(keep2, 2, 1)) << 2)
    return v0, v1, nibble, keep0, keep1, keep2, keep3
