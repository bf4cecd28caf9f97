"""Byte layout of ``torch._cslt_compress`` (cuSPARSELt) for 16-bit 2:4 matrices.

Reverse-engineered on an NVIDIA H200 (sm90), torch 2.11.0+cu130, cuSPARSELt
0.8.0 (``scripts/probe_cslt_layout.py``, checked byte for byte by
``scripts/verify_cslt_layout.py``).  bf16 and fp16 give identical bytes: the
compressor copies bit patterns, and its zero test is a float ``== 0`` (so
``-0.0`` counts as zero).

Input: row-major ``A [M, K]``, 2:4 along rows (groups of 4 consecutive
columns).  Output: 2-D tensor of A's dtype, ``[M, ceil(S / (2 M))]`` where
``S = M*K + ceil(M/64) * (K/32) * 256`` bytes are defined:

* Values, bytes ``[0, M*K)``: plain row-major ``[M, K/2]``; per group its two
  kept values, lower column first.
* Metadata, bytes ``[M*K, S)``: 4 bits per group, ``idx0 | idx1 << 2``
  (idx0 < idx1, positions 0..3).  It is tiled in blocks of 64 rows x 32
  columns of A (64 x 8 groups = 256 bytes = 128 little-endian uint16 words);
  blocks are stored row-major (block-row ``r // 64`` major, block-column
  ``col // 32`` minor, ``K/32`` blocks per block-row).  Inside a block, with
  local row ``r = 16 s + 8 h + i`` and local group ``g = 4 j + q``
  (s<4, h<2, i<8, j<2, q<4)::

      word   = 32 s + 4 i + q          (uint16 word inside the block)
      nibble = 2 j + h                 (bits 4*nibble .. 4*nibble+3)

  i.e. each word holds groups (r, g), (r+8, g), (r, g+4), (r+8, g+4), from the
  low nibble up: the register layout of the sm80+/sm90 sparse MMA metadata.

Shapes: cuSPARSELt accepts M and K multiples of 16; this module supports M a
multiple of 16 and K a multiple of 64.  If M % 64 == 0 the buffer is exactly
``[M, K*9/16]`` with no padding.  Otherwise the last block-row is padded with
rows whose nibbles are 0xE (an all-zero group, see below), and torch's
``[M, ceil(S/(2M))]`` buffer has up to 2M-1 bytes after S that cuSPARSELt never
writes (uninitialised memory; here they are 0).  For K % 64 != 0 the metadata
positions follow the same formula, but the size cuSPARSELt asks for is larger
than S in ways not pinned down, so it is not supported.

Groups with fewer than 2 non-zeros: the kept positions are the non-zero ones,
filled up with the HIGHEST zero positions: [0,0,0,0] -> (2,3) = 0xE,
only p=0 -> (0,3), p=1 -> (1,3), p=2 -> (2,3), p=3 -> (2,3); the values
stored are the (zero) entries of A at those positions.  Groups with 3 or 4
non-zeros are NOT valid input: their metadata names the first two non-zeros,
but the values of that group and of other groups in the same 16-column
window (and the next one) come out shifted / dropped.
"""

import torch

from .compressed import CompressedOperand, decompress

__all__ = ["to_cusparselt_layout", "from_cusparselt_layout", "compress_reference", "buffer_shape", "unpack_dense"]

# Metadata nibbles [Mp, K/4] viewed as (block-row, s, h, i, block-col, j, q);
# storage order is (block-row, block-col, s, i, q, j, h).
_TO_STORAGE = (0, 4, 1, 3, 6, 5, 2)  # with a leading block-row axis
_FROM_STORAGE = (0, 2, 6, 3, 1, 5, 4)


def _check(M, K):
    if M % 16 or K % 64 or M <= 0 or K <= 0:
        raise ValueError(f"need M % 16 == 0 and K % 64 == 0, got M={M}, K={K}")


def buffer_shape(M, K):
    """Shape of the tensor ``torch._cslt_compress`` returns, and the defined byte count S."""
    _check(M, K)
    S = M * K + -(-M // 64) * (K // 32) * 256
    return (M, -(-S // (2 * M))), S


def to_cusparselt_layout(values, indices):
    """values [M, K/2] (2-byte dtype), indices [M, K/2] (0..3, ascending per pair) -> buffer."""
    M, half = values.shape
    K = 2 * half
    (_, ncols), S = buffer_shape(M, K)
    if values.element_size() != 2:
        raise ValueError("values must be a 2-byte dtype (bf16 / fp16)")
    idx = indices.to(torch.uint8).reshape(M, K // 4, 2)
    nib = idx[..., 0] | (idx[..., 1] << 2)  # [M, K/4]
    Mp = -(-M // 64) * 64
    if Mp != M:  # padded rows are all-zero groups -> 0xE
        nib = torch.cat([nib, nib.new_full((Mp - M, K // 4), 0xE)])
    nib = nib.reshape(Mp // 64, 4, 2, 8, K // 32, 2, 4).permute(_TO_STORAGE).reshape(-1, 2)
    meta = nib[:, 0] | (nib[:, 1] << 4)  # two nibbles per byte, low nibble first
    out = torch.zeros(M * ncols * 2, dtype=torch.uint8, device=values.device)
    out[: M * K] = values.contiguous().view(torch.uint8).reshape(-1)
    out[M * K : S] = meta
    return out.view(values.dtype).reshape(M, ncols)


def from_cusparselt_layout(buffer, M, K):
    """Inverse of :func:`to_cusparselt_layout`: buffer -> (values [M, K/2], indices [M, K/2] uint8)."""
    _, S = buffer_shape(M, K)
    raw = buffer.contiguous().view(torch.uint8).reshape(-1)
    values = raw[: M * K].view(buffer.dtype).reshape(M, K // 2)
    meta = raw[M * K : S]
    Mp = -(-M // 64) * 64
    nib = torch.stack([meta & 0xF, meta >> 4], -1)
    nib = nib.reshape(Mp // 64, K // 32, 4, 8, 4, 2, 2).permute(_FROM_STORAGE).reshape(Mp, K // 4)[:M]
    indices = torch.stack([nib & 3, nib >> 2], -1).reshape(M, K // 2)
    return values, indices


def compress_reference(dense):
    """Emulate ``torch._cslt_compress(dense)`` for valid input (<= 2 non-zeros per group)."""
    M, K = dense.shape
    groups = dense.reshape(M, K // 4, 4)
    nz = groups != 0
    if (nz.sum(-1) > 2).any():
        raise ValueError("group with more than 2 non-zeros: cuSPARSELt output is undefined")
    pos = torch.arange(4, device=dense.device)
    # non-zeros first (ascending), then zeros from the highest position down
    key = torch.where(nz, pos, 7 - pos)
    sel = key.topk(2, dim=-1, largest=False).indices.sort(-1).values
    values = groups.gather(2, sel).reshape(M, K // 2)
    return to_cusparselt_layout(values, sel.reshape(M, K // 2))


def unpack_dense(buffer, M, K):
    """The dense [M, K] matrix a packed buffer holds (zeros where the 2:4 pattern has none)."""
    return decompress(CompressedOperand(*from_cusparselt_layout(buffer, M, K)))
