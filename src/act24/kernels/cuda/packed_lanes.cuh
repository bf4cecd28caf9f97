// How the fused GEMMs' epilogues (relu2_pack_epilogue.cuh, relu2_grad_pack_epilogue.cuh) meet the packed
// layout (values row-major [M, N/2], then 4-bit metadata in 64 x 32 blocks; see
// src/act24/reference/cusparselt_layout.py) from the wgmma accumulator layout: there a thread holds columns
// (n, n+1) of rows r and r+8, its neighbour lane (n+2, n+3). After one shuffle a lane pair (l, l^1) holds
// one group of 4 columns, of row r in the even lane and of row r+8 in the odd one; lanes l and l^2 then
// hold alternate groups of the same row of a 32-column block (c = 0..3: groups q = h0, 2 + h0, 4 + h0,
// 6 + h0), which two shuffles turn into 4 consecutive groups (one 16-byte access; a lane pair covers a
// 32-byte sector), and a last shuffle joins the two rows' nibbles into whole metadata words.
#pragma once

#include <cstdint>

#include "cutlass/cutlass.h"

namespace act24 {

// Where a lane's accesses of a 32-column block land.
struct PackedPlaces {
  int64_t values;  // the 16-byte word (4 value pairs, uint4) of this lane's row, in uint32 units
  int64_t meta;    // the 16-bit metadata word this lane stores, in uint16 units
  int h0;          // which group of each 8 columns this lane holds

  // row: the lane's own row; col: the first column of its group (in the block's last group walk)
  CUTLASS_DEVICE PackedPlaces(int row, int col, int N, bool odd) {
    h0 = (col & 7) >> 2;
    values = int64_t(row) * (N / 4) + ((col >> 5) << 3) + 4 * h0;
    // nibble 2j + h of word 32s + 4i + q, for local row 16s + 8h + i and group 4j + q of the block
    const int local_row = row & 63, s = local_row >> 4, i8 = local_row & 7;
    meta = (int64_t(row >> 6) * (N / 32) + (col >> 5)) * 128 + 32 * s + 4 * i8 + (odd ? 2 + h0 : h0);
  }
};

// The 4 value pairs of groups c = 0..3 (q = 2c + h0) as the 4 consecutive groups of the lane's 16-byte
// word (lanes l, l^2 exchange two each: h0 = 0 gets groups 0-3, h0 = 1 groups 4-7). All lanes must call it.
CUTLASS_DEVICE uint4 to_consecutive(const uint32_t (&pairs)[4], int h0) {
  const uint32_t send0 = h0 ? pairs[0] : pairs[2], send1 = h0 ? pairs[1] : pairs[3];
  const uint32_t got0 = __shfl_xor_sync(0xffffffff, send0, 2), got1 = __shfl_xor_sync(0xffffffff, send1, 2);
  return h0 ? make_uint4(got0, pairs[2], got1, pairs[3]) : make_uint4(pairs[0], got0, pairs[1], got1);
}

// The inverse: the lane's groups c = 0..3 from the 16-byte word it loaded. All lanes must call it.
CUTLASS_DEVICE void from_consecutive(uint4 word, int h0, uint32_t (&pairs)[4]) {
  const uint32_t send0 = h0 ? word.x : word.y, send1 = h0 ? word.z : word.w;
  const uint32_t got0 = __shfl_xor_sync(0xffffffff, send0, 2), got1 = __shfl_xor_sync(0xffffffff, send1, 2);
  pairs[0] = h0 ? got0 : word.x;
  pairs[1] = h0 ? got1 : word.z;
  pairs[2] = h0 ? word.y : got0;
  pairs[3] = h0 ? word.w : got1;
}

// Nibble 2j + h of word 32s + 4i + q (PackedPlaces::meta): c = 0, 2 are groups q = h0, h0 + 4 (j = 0, 1),
// c = 1, 3 are q = 2 + h0, 6 + h0, so the even lane stores the low half of the lane pair's 32 bits and the
// odd lane the high half. The 16-bit word this lane stores; all lanes must call it.
CUTLASS_DEVICE uint16_t meta_word(const uint32_t (&nibbles)[4], bool odd) {
  const uint32_t h = odd;
  const uint32_t mine = (nibbles[0] << (4 * h)) | (nibbles[2] << (8 + 4 * h)) |
                        (((nibbles[1] << (4 * h)) | (nibbles[3] << (8 + 4 * h))) << 16);
  const uint32_t words = mine | __shfl_xor_sync(0xffffffff, mine, 1);
  return static_cast<uint16_t>(odd ? words >> 16 : words & 0xFFFF);
}

// The inverse: this lane's nibbles of groups c = 0..3 from the metadata word it loaded. All lanes must call it.
CUTLASS_DEVICE void nibbles_of(uint16_t word, bool odd, uint32_t (&nibbles)[4]) {
  const uint32_t other = __shfl_xor_sync(0xffffffff, uint32_t(word), 1);
  const uint32_t words = odd ? (other | uint32_t(word) << 16) : (uint32_t(word) | other << 16);
  const uint32_t h = odd;
  nibbles[0] = (words >> (4 * h)) & 0xF;
  nibbles[2] = (words >> (8 + 4 * h)) & 0xF;
  nibbles[1] = (words >> (16 + 4 * h)) & 0xF;
  nibbles[3] = (words >> (24 + 4 * h)) & 0xF;
}

}  // namespace act24
