"""The backward of the sparse FFN in one pass over [T, H]: every 2:4 operand of three GEMMs.

Given the forward's packed a = relu(y1)**2 * m (token-wise 2:4, cuSPARSELt layout) and
dy2 = dy3 @ W2 [T, H], it computes dy1 = dy2 * 2*sqrt(a) at the kept positions and writes

* dy1, token-wise: values in a's positions (a's metadata is reused as is)  -> dx = dy1 @ W1
* dy1 and a, feature-wise: matrices [H, T] in cuSPARSELt layout, rows = features,
  2:4 along tokens taken in the order `perm` (4 consecutive permuted tokens form a
  group; the selection runs on top of m, so nothing the forward dropped comes back)
                                                 -> dW1 = dy1F @ x[perm], dW2.T = aF @ dy3[perm]
* dy1 and a at the densest features, dense, [num_dense, T] with tokens in `perm` order
                                                 -> their exact weight gradients (those rows of
                                                    the feature-wise products are replaced).

`featurewise_pack` is the same pass after its token-wise stage: it reads the token-wise dy1 that
kernels/gemm_relu2_grad_pack.py writes as dy2's GEMM epilogue, instead of dy2.

Tiling: a program owns 64 features (16 token-wise groups: one contiguous 64-byte segment of a
row of a, 128 bytes of dy2) and 32*NB permuted tokens, loaded as four [8*NB, 16] tiles (token
4k + r of each group k). Each feature-wise operand is selected from those four tiles in registers;
its metadata words (features f, f+8 x token groups k, k+4) are assembled by reshapes and sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..reference.checks import check_multiple, check_ndim
from .launch import on_device_of
from .top2 import (INTERPRETED, TL_DTYPE, bits16, from_bits16, magnitude_key16, packed_regions, round_to,
                   select_2_of_4_keyed)

# Left alone the compiler gives a program of 4 blocks and 4 warps ~214 registers a thread: 8 warps an
# SM. Capped at 168 (a few spills) 12 warps share an SM, and the H200 runs it fastest: 0.98 ms at
# [16384, 16384] against 1.11-1.20 ms for other launches (results/backward_pack_sweep_branch_free.json).
MAX_REGISTERS = 168


@triton.jit
def _tokenwise_nibble(meta_ptr, t, G, H):
    """Metadata nibble of token-wise group G of token t (int64: the offsets may pass 2**31) ([8NB] x [16]
    -> [8NB, 16], int32): block (t//64, G//8),
    row t%64 = 16s + 8h + i, group G%8 = 4j + q -> word 32s + 4i + q, nibble 2j + h."""
    tr = t.to(tl.int32) % 64  # 32-bit arithmetic: the nibbles stay 32-bit through the feature-wise stage
    word_in_block = (32 * (tr // 16) + 4 * (tr % 8))[:, None] + (G % 4)[None, :]
    block = (t // 64)[:, None] * (H // 32) + (G // 8)[None, :]
    word = tl.load(meta_ptr + block * 128 + word_in_block).to(tl.int32)
    shift = 4 * (2 * ((G % 8) // 4)[None, :] + ((tr // 8) % 2)[:, None])
    return (word >> shift) & 0xF


@triton.jit
def _sqrt(a, DTYPE: tl.constexpr, RND: tl.constexpr):
    """sqrt(a) (fp32, a >= 0 or NaN) that rounds to DTYPE like the correctly rounded root, without the
    branches of tl.sqrt_rn's slow path (they cost the kernel 17%: it is one basic block without them)."""
    if RND:
        return tl.sqrt_rn(a)
    elif DTYPE == tl.bfloat16:
        # the approximation (~2**-22 relative) suffices for bf16: the square root of a bf16 number is
        # at least 2**-19 (relative) away from the midpoint between two bf16 numbers, so it rounds to
        # the same bf16 as the exact root (a GPU test checks every bf16 pattern). tl.sqrt flushes
        # subnormal inputs to zero: those are scaled by 4**12 first (exact), their roots by 2**-12
        tiny = a < 1.1754943508222875e-38
        root = tl.sqrt(tl.where(tiny, a * 16777216.0, a))
        return tl.where(tiny, root * 0.000244140625, root)
    else:
        # fp16's finer grid: the approximation rounded to fp16 is the answer or one of its neighbours,
        # decided exactly by comparing a with the squares of the midpoints to them (12 significant
        # bits: exact in fp32). fp16 numbers are normal in fp32, so nothing is flushed
        near = tl.sqrt(a).to(tl.float16)
        bits = near.to(tl.int16, bitcast=True)
        up = (bits + 1).to(tl.float16, bitcast=True).to(tl.float32)
        down = (bits - 1).to(tl.float16, bitcast=True).to(tl.float32)  # NaN below 0: never chosen
        near = near.to(tl.float32)
        mid_up = (near + up) * 0.5
        mid_down = (near + down) * 0.5
        return tl.where(a > mid_up * mid_up, up, tl.where(a < mid_down * mid_down, down, near))


@triton.jit
def _grad(g, a, DTYPE: tl.constexpr, RND: tl.constexpr):
    """dy2 * 2 * sqrt(a) rounded like the reference's 16-bit ops; 0 where a == 0."""
    s = round_to(_sqrt(a, DTYPE, RND), DTYPE, RND)
    return tl.where(a != 0, round_to(round_to(g * 2.0, DTYPE, RND) * s, DTYPE, RND), 0.0)


@triton.jit
def _position(pair, nib, p: tl.constexpr):
    """The 16-bit pattern at position p of each group from its packed pair and nibble (0 if not kept)."""
    return tl.where((nib & 3) == p, pair & 0xFFFF, tl.where((nib >> 2) == p, (pair >> 16) & 0xFFFF, 0))


@triton.jit
def _token_rows(a_vals, a_meta, dy2_ptr, perm_ptr, d1_vals, k, G, r: tl.constexpr, H,
                DY1_GIVEN: tl.constexpr, DTYPE: tl.constexpr, RND: tl.constexpr):
    """Permuted tokens j = 4k + r, token-wise groups G ([8NB, 16]): stores dy1 token-wise (loads it when
    DY1_GIVEN: the fused dy2 GEMM wrote it); returns a's packed pairs, their nibbles and dy1's packed pairs."""
    t = tl.load(perm_ptr + 4 * k + r).to(tl.int64)
    at = t[:, None] * (H // 4) + G[None, :]
    pair = tl.load(a_vals + at)
    nib = _tokenwise_nibble(a_meta, t, G, H)
    if DY1_GIVEN:
        dpair = tl.load(d1_vals + at)
    else:
        w = tl.load(dy2_ptr + at)
        i0 = nib & 3
        i1 = nib >> 2
        e0 = from_bits16(w.to(tl.int32), DTYPE)
        e1 = from_bits16((w >> 16).to(tl.int32), DTYPE)
        e2 = from_bits16((w >> 32).to(tl.int32), DTYPE)
        e3 = from_bits16((w >> 48).to(tl.int32), DTYPE)
        d0 = _grad(tl.where(i0 == 0, e0, tl.where(i0 == 1, e1, e2)), from_bits16(pair, DTYPE), DTYPE, RND)
        d1 = _grad(tl.where(i1 == 3, e3, tl.where(i1 == 2, e2, e1)), from_bits16(pair >> 16, DTYPE), DTYPE, RND)
        dpair = bits16(d0, DTYPE) | (bits16(d1, DTYPE) << 16)
        tl.store(d1_vals + at, dpair)
    return pair, nib, dpair


@triton.jit
def _featurewise(p0, p1, p2, p3, n0, n1, n2, n3, vals_ptr, meta_ptr, meta_base, dense_ptr, slot, k, G, kl, T,
                 p: tl.constexpr, KB: tl.constexpr, HAS_DENSE: tl.constexpr, DTYPE: tl.constexpr):
    """Feature 4G + p over token groups k: 2 of the 4 tokens of each group; stores the value pairs,
    this feature position's metadata words and, for dense features (slot >= 0), all 4 tokens.
    Selects on raw 16-bit patterns (no float conversions)."""
    e0 = _position(p0, n0, p)
    e1 = _position(p1, n1, p)
    e2 = _position(p2, n2, p)
    e3 = _position(p3, n3, p)
    if HAS_DENSE:  # the 4 tokens of a group are adjacent in a dense row: one 8-byte store
        four = e0.to(tl.int64) | (e1.to(tl.int64) << 16) | (e2.to(tl.int64) << 32) | (e3.to(tl.int64) << 48)
        tl.store(dense_ptr + slot.to(tl.int64)[None, :] * (T // 4) + k[:, None], four, mask=(slot >= 0)[None, :])
    v0, v1, nib, _, _, _, _ = select_2_of_4_keyed(magnitude_key16(e0, DTYPE), magnitude_key16(e1, DTYPE),
                                                  magnitude_key16(e2, DTYPE), magnitude_key16(e3, DTYPE),
                                                  e0, e1, e2, e3)
    f = (4 * G + p).to(tl.int64)
    tl.store(vals_ptr + f[None, :] * (T // 4) + k[:, None], v0 | (v1 << 16))
    # local feature 4G + p = 16s + 8h + i (G = 4s + 2h + c, i = 4c + p), local token group 8kb + 4jj + q:
    # the nibble goes to word 32s + 4i + q = 16(2s + c) + 4p + q of block kb, bits 4(2jj + h)
    shift = 4 * (2 * ((kl // 4) % 2)[:, None] + ((G // 2) % 2)[None, :])
    words = tl.sum(tl.reshape(nib << shift, (8 * KB, 4, 2, 2)), axis=2)  # OR over h: [k, s, c]
    words = tl.sum(tl.reshape(words, (KB, 2, 4, 8)), axis=1)  # OR over jj: [kb, q, 2s + c]
    kb = tl.arange(0, KB)[:, None, None]
    q = tl.arange(0, 4)[None, :, None]
    sc = tl.arange(0, 8)[None, None, :]
    tl.store(meta_ptr + meta_base + kb * 128 + 16 * sc + 4 * p + q, words.to(tl.int16))


@triton.jit
def _backward_pack_kernel(a_vals, a_meta, dy2_ptr, perm_ptr, slot_ptr, d1_vals, d1f_vals, d1f_meta, af_vals, af_meta,
                          dense_d1, dense_a, T, H, NB: tl.constexpr, HAS_DENSE: tl.constexpr,
                          DY1_GIVEN: tl.constexpr, DTYPE: tl.constexpr, RND: tl.constexpr):
    # one flat grid axis (no 65535 limit), feature blocks fastest: the programs running together
    # read the same permuted token rows
    pid_f = tl.program_id(0) % (H // 64)
    pid_t = tl.program_id(0) // (H // 64)
    kl = tl.arange(0, 8 * NB)
    k = pid_t * 8 * NB + kl  # token groups (4 permuted tokens each)
    G = 16 * pid_f + tl.arange(0, 16)
    a0, n0, g0 = _token_rows(a_vals, a_meta, dy2_ptr, perm_ptr, d1_vals, k, G, 0, H, DY1_GIVEN, DTYPE, RND)
    a1, n1, g1 = _token_rows(a_vals, a_meta, dy2_ptr, perm_ptr, d1_vals, k, G, 1, H, DY1_GIVEN, DTYPE, RND)
    a2, n2, g2 = _token_rows(a_vals, a_meta, dy2_ptr, perm_ptr, d1_vals, k, G, 2, H, DY1_GIVEN, DTYPE, RND)
    a3, n3, g3 = _token_rows(a_vals, a_meta, dy2_ptr, perm_ptr, d1_vals, k, G, 3, H, DY1_GIVEN, DTYPE, RND)
    # metadata blocks (pid_f, NB pid_t + kb): 64 features x 32 tokens, 128 words each
    meta_base = (pid_f.to(tl.int64) * (T // 32) + pid_t * NB) * 128
    for p in tl.static_range(4):
        slot = tl.load(slot_ptr + 4 * G + p)  # row of feature 4G + p in the dense buffers, -1 if sparse
        _featurewise(a0, a1, a2, a3, n0, n1, n2, n3, af_vals, af_meta, meta_base, dense_a, slot, k, G, kl, T,
                     p, NB, HAS_DENSE, DTYPE)
        _featurewise(g0, g1, g2, g3, n0, n1, n2, n3, d1f_vals, d1f_meta, meta_base, dense_d1, slot, k, G, kl, T,
                     p, NB, HAS_DENSE, DTYPE)


@dataclass(frozen=True)
class BackwardOperands:
    """What the three sparse GEMMs and the dense-feature GEMMs of the backward consume."""

    dy1_tokenwise: torch.Tensor  # [T, H*9/16] packed: dy1 in a's positions, a's metadata
    dy1_featurewise: torch.Tensor  # [H, T*9/16] packed: rows = features, 2:4 along perm-ordered tokens
    a_featurewise: torch.Tensor  # [H, T*9/16] packed, likewise
    # [num_dense, T] each: rows = the dense features, tokens in perm order
    dy1_dense: torch.Tensor  # dy1 at the dense features
    a_dense: torch.Tensor  # a at the dense features


def _check_tensor(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    check_ndim(name, t, ndim=2)
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def _check_rest(packed_a, T: int, H: int, like_name: str, like: torch.Tensor, perm, dense_features) -> None:
    """The rules shared by both entry points, given [T, H] and the tensor (`like`) that fixed them."""
    if like.dtype not in TL_DTYPE:
        raise TypeError(f"{like_name} must be bfloat16 or float16, got {like.dtype}")
    if packed_a.dtype != like.dtype:
        raise TypeError(f"packed_a has dtype {packed_a.dtype} but {like_name} has {like.dtype}; they must match")
    check_multiple(like_name, T, 64, "the row (token) count")
    check_multiple(like_name, H, 64, "the column (hidden) count")
    if packed_a.shape != (T, H * 9 // 16):
        raise ValueError(f"packed_a must be the packed [T, H] = [{T}, {H}] operand, shape ({T}, {H * 9 // 16}), "
                         f"got {tuple(packed_a.shape)}")
    if perm.dtype not in (torch.int32, torch.int64) or perm.shape != (T,) or perm.stride(0) != 1:
        raise ValueError(f"perm must be a contiguous int32/int64 permutation of shape ({T},), got {perm.dtype} "
                         f"{tuple(perm.shape)} with stride {perm.stride()}")
    if dense_features.numel() > H:
        raise ValueError(f"dense_features names {dense_features.numel()} features but there are only H={H}")
    if dense_features.dtype not in (torch.int32, torch.int64) or dense_features.ndim != 1:
        raise ValueError(f"dense_features must be a 1-D integer tensor, got {dense_features.dtype} "
                         f"{tuple(dense_features.shape)}")
    for name, t in (("packed_a", packed_a), ("perm", perm), ("dense_features", dense_features)):
        if t.device != like.device:
            raise ValueError(f"{name} is on {t.device} but {like_name} is on {like.device}; move both to one device")


def check_backward_inputs(packed_a, dy2, perm, dense_features) -> None:
    for name, t in (("packed_a", packed_a), ("dy2", dy2)):
        _check_tensor(name, t)
    _check_rest(packed_a, *dy2.shape, "dy2", dy2, perm, dense_features)


def check_featurewise_inputs(packed_a, dy1_tokenwise, perm, dense_features) -> None:
    for name, t in (("packed_a", packed_a), ("dy1_tokenwise", dy1_tokenwise)):
        _check_tensor(name, t)
    T, cols = dy1_tokenwise.shape
    if cols * 16 % 9:
        raise ValueError(f"dy1_tokenwise must be a packed [T, H] operand, shape (T, H * 9/16), got {(T, cols)}")
    if dy1_tokenwise.shape != packed_a.shape:
        raise ValueError(f"dy1_tokenwise is packed like packed_a, shape {tuple(packed_a.shape)}, got {(T, cols)}")
    _check_rest(packed_a, T, cols * 16 // 9, "dy1_tokenwise", dy1_tokenwise, perm, dense_features)


def backward_pack(packed_a: torch.Tensor, dy2: torch.Tensor, perm: torch.Tensor, dense_features: torch.Tensor,
                  *, token_blocks_per_program: int = 4, num_warps: int = 4,
                  max_registers: int | None = MAX_REGISTERS) -> BackwardOperands:
    """The backward's 2:4 operands from the forward's packed activation and dy2 = dy3 @ W2.

    packed_a: [T, H*9/16], from `sparsify_pack`; dy2: [T, H] (same dtype); perm: the token
    grouping (a permutation of range(T)); dense_features: distinct feature indices in [0, H)
    that get exact (dense) weight gradients. Neither is checked element by element (that would
    sync with the host every step): the training op builds both. `max_registers` caps the
    registers per thread (None: the compiler's choice); the defaults were the fastest on the H200
    (scripts/tune_backward_pack.py).
    """
    check_backward_inputs(packed_a, dy2, perm, dense_features)
    dy1_tok = torch.empty_like(packed_a)
    T, H = dy2.shape
    _, a_meta = packed_regions(packed_a, T, H)
    _, d1_meta = packed_regions(dy1_tok, T, H)
    d1_meta.copy_(a_meta)  # dy1 is non-zero only where a is: the same positions
    return _launch(packed_a, dy2, dy1_tok, perm, dense_features, token_blocks_per_program, num_warps, max_registers)


def featurewise_pack(packed_a: torch.Tensor, dy1_tokenwise: torch.Tensor, perm: torch.Tensor,
                     dense_features: torch.Tensor, *, token_blocks_per_program: int = 4, num_warps: int = 4,
                     max_registers: int | None = MAX_REGISTERS) -> BackwardOperands:
    """`backward_pack` after its token-wise stage: the same operands from the token-wise dy1 (what
    `gemm_relu2_grad_pack` writes) instead of dy2; `dy1_tokenwise` is returned as given."""
    check_featurewise_inputs(packed_a, dy1_tokenwise, perm, dense_features)
    return _launch(packed_a, None, dy1_tokenwise, perm, dense_features, token_blocks_per_program, num_warps,
                   max_registers)


def _launch(packed_a, dy2, dy1_tok, perm, dense_features, nb, num_warps, max_registers) -> BackwardOperands:
    """One pass over [T, H]: dy1_tok written from dy2, or read when dy2 is None."""
    if nb < 1 or nb & (nb - 1):
        raise ValueError(f"token_blocks_per_program must be a power of 2 >= 1, got {nb}")
    if max_registers is not None and not 24 <= max_registers <= 255:
        raise ValueError(f"max_registers must be None or in [24, 255] (registers per thread), got {max_registers}")
    T, H = packed_a.shape[0], packed_a.shape[1] * 16 // 9
    while T % (32 * nb):
        nb //= 2
    device, dtype = packed_a.device, packed_a.dtype
    num_dense = dense_features.numel()
    slot = torch.full((H,), -1, dtype=torch.int32, device=device)
    slot[dense_features.long()] = torch.arange(num_dense, dtype=torch.int32, device=device)
    a_vals, a_meta = packed_regions(packed_a, T, H)
    d1_vals, _ = packed_regions(dy1_tok, T, H)
    dy1_feat = torch.empty(H, T * 9 // 16, dtype=dtype, device=device)
    a_feat = torch.empty_like(dy1_feat)
    d1f_vals, d1f_meta = packed_regions(dy1_feat, H, T)
    af_vals, af_meta = packed_regions(a_feat, H, T)
    dy1_dense = torch.empty(num_dense, T, dtype=dtype, device=device)
    a_dense = torch.empty_like(dy1_dense)
    grid = ((H // 64) * (T // (32 * nb)),)
    with on_device_of(packed_a):
        _backward_pack_kernel[grid](
            a_vals, a_meta, (d1_vals if dy2 is None else dy2).view(torch.int64), perm, slot, d1_vals, d1f_vals,
            d1f_meta, af_vals, af_meta,
            dy1_dense.view(torch.int64), a_dense.view(torch.int64), T, H,  # 4 tokens of a dense row per int64
            NB=nb, HAS_DENSE=num_dense > 0, DY1_GIVEN=dy2 is None, DTYPE=TL_DTYPE[dtype], RND=INTERPRETED,
            num_warps=num_warps, **({"maxnreg": max_registers} if max_registers and not INTERPRETED else {}),
        )
    return BackwardOperands(dy1_tok, dy1_feat, a_feat, dy1_dense, a_dense)
