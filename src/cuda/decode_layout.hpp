// fp4moe internal: the decode backend's prepared weight layout (host side, no CUDA).
//
// The fused decode kernel (decode.cu) gives each warp a *task*: 32 weight rows (two 16-row
// MMA tiles) of one expert over the whole K, in chunks of 64 K-values. Data moves in 512-byte
// pieces, one 16-byte slice per lane. One expert's block is chunk-major across its tasks, so
// that the warps streaming the tasks of one expert at the same time read adjacent memory
// (long sequential runs for HBM instead of thousands of independent 1 KB streams):
//
//   weights [chunk c][task w][tile t] pieces, then scales [group g][task w][tile t] pieces
//
// (a scale group covers 8 chunks). With r = lane / 4 and q = lane % 4, a lane's weight slice of
// chunk c, tile t holds rows (r, r + 8) of the tile at K-values 64c + 16q .. 64c + 16q + 15 -
// exactly one 16-block per row, so one e4m3 scale per row - as four 32-bit words, word m
// feeding MMA m (mma.m16n8k16, A row-major) of that chunk with 8 codes:
//   A reg 0, low / high half: row r,     K 16q + 4m + 0 / + 1
//   A reg 1, low / high half: row r + 8, K 16q + 4m + 0 / + 1
//   A reg 2, low / high half: row r,     K 16q + 4m + 2 / + 3
//   A reg 3, low / high half: row r + 8, K 16q + 4m + 2 / + 3
// The MMA's K order is thereby permuted inside each chunk; the activation operand is read
// with the same permutation (a lane reads 16 consecutive K-values), which leaves every dot
// product intact. A code's 4 bits are not a nibble: they are scattered over the word (see
// weight_bit) so that the kernel gets each register's bf16 bit pattern (magnitude -> bits
// 8..6, sign -> bit 15 of each half) with one rotate and one mask: 9 integer operations per
// word instead of 15.
// A lane's scale slice of group g, tile t is 8 pairs of bytes: (scale of row r, of row r + 8)
// for chunks 8g .. 8g + 7. Rows and K beyond the matrix are zero (scale byte 0).
//
// Row maps (which source row a tile row reads):
//   FC1 SwiGLU: task w covers intermediate index i in [16w, 16w + 16); tile t rows 0..7 are the
//     gate rows i = 16w + 8t + rr, rows 8..15 the matching up rows - so one thread's MMA
//     outputs hold gate and up of the same i and token, and SwiGLU needs no data exchange.
//   FC1 ReLU^2: task w covers i in [32w, 32w + 32), tile t is i in [32w + 16t, +16).
//   FC2: task w covers output rows [32w, 32w + 32), tile t is [32w + 16t, +16).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "fp4moe/moe.hpp"

namespace fp4moe::cuda {

struct DecodeDims {
  int64_t H = 0, I = 0, E = 0, k = 0;
  int64_t Hk = 0;        // FC1 K: H rounded up to 64
  int64_t Ik = 0;        // FC2 K and the width of h rows: I rounded up to 64
  int64_t n1_tasks = 0;  // FC1 tasks per expert
  int64_t n2_tasks = 0;  // FC2 tasks per expert (32 output rows each)
  int64_t chunks1 = 0, chunks2 = 0;  // 64-wide K chunks
  int64_t expert1_bytes = 0, expert2_bytes = 0;  // one expert's prepared FC1 / FC2 block
  bool swiglu = true;
};

DecodeDims decode_dims(const MoeSpec& spec);

// Bit of the 32-bit word that holds bit `role` (0 = m, 1 = e0, 2 = e1, 3 = sign) of the code
// for A register `reg` (0..3), half `half` (0 low, 1 high). The kernel (decode_kernel.cu,
// dequant_word) undoes it: reg 0 = w & P, reg 1 = rotl(w, 4) & P, reg 2 = rotl(w, 10) & P,
// reg 3 = (rotl(w, 6) & (P without bits 8, 24)) | (rotl(w, 30) & bits 8, 24), with
// P = the bf16x2 bits 6..8, 15, 22..24, 31 - i.e. bit = (target - rotation) mod 32.
constexpr int weight_bit(int reg, int half, int role) {
  const int target = (role == 3 ? 15 : 6 + role) + 16 * half;
  const int rot = reg == 0 ? 0 : reg == 1 ? 4 : reg == 2 ? 10 : (role == 2 ? 30 : 6);
  return (target - rot + 32) % 32;
}

#if defined(__CUDACC__)
#define FP4MOE_HOST_DEVICE __host__ __device__
#else
#define FP4MOE_HOST_DEVICE
#endif
FP4MOE_HOST_DEVICE constexpr uint32_t rotl32(uint32_t w, int r) { return r ? (w << r) | (w >> (32 - r)) : w; }
// A register `reg` of a prepared word as bf16x2 bits: per half, the code's magnitude in bits
// 8..6 and its sign in bit 15, all else zero (the kernel's dequantization; tested on the host).
FP4MOE_HOST_DEVICE constexpr uint32_t word_reg_bits(uint32_t w, int reg) {
  constexpr uint32_t kP = 0x81C081C0u;                         // bits 6..8, 15 of each half
  constexpr uint32_t kNoE1 = 0x80C080C0u, kE1 = 0x01000100u;  // reg 3 takes e1 from another rotation
  return reg == 0 ? (w & kP)
         : reg == 1 ? (rotl32(w, 4) & kP)
         : reg == 2 ? (rotl32(w, 10) & kP)
                    : ((rotl32(w, 6) & kNoE1) | (rotl32(w, 30) & kE1));
}

inline constexpr int kTaskRows = 32;
inline constexpr int kPiece = 512;  // bytes of one piece (32 lanes x 16 bytes)

inline int64_t expert_block_bytes(int64_t chunks, int64_t tasks) {
  return ((chunks + 7) / 8 + chunks) * tasks * 2 * kPiece;
}

// Builds one expert's block of one matrix. row_of(task, tile, rr) returns the source row or
// -1 for a zero row. src: packed [rows, K/2], scales [rows, K/16].
void prepare_expert_block(const uint8_t* packed, const uint8_t* scales, int64_t K, int64_t tasks,
                          const std::function<int64_t(int64_t, int, int)>& row_of, uint8_t* out);

// The whole prepared layer: FC1 streams of all experts, then FC2 streams.
struct DecodePrepared {
  DecodeDims dims;
  std::vector<uint8_t> w1, w2;  // [E][expert1_bytes], [E][expert2_bytes]
};
DecodePrepared prepare_decode_weights(const MoeSpec& spec, const uint8_t* w13, const uint8_t* w13_scale,
                                      const uint8_t* w2, const uint8_t* w2_scale);

// The value a lane's slice encodes, decoded back (for tests of the layout): weight of
// (task, tile, tile row, K) of one expert's block, without the global scale.
float decode_prepared_weight(const uint8_t* expert_block, int64_t chunks, int64_t tasks, int64_t task, int tile,
                             int rr, int64_t kk);

}  // namespace fp4moe::cuda
