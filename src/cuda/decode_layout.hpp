// fp4moe internal: the decode backend's prepared weight layout, and its launch shapes (host side,
// no CUDA).
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
// product intact. A code's 4 bits are scattered over the word for a rotate-and-mask
// dequantization (fp4_bits.hpp: code_bit, word_reg_bits).
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

#include "cuda/fp4_bits.hpp"
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

// One token count's launch of the fused kernel: each CTA's dynamic shared memory, the CTAs per
// SM that allows, and whether every FC1 task, counted at its most, fits the grid's first
// round (which enables the start-of-launch L2 prefetch, DecodeParams::pf_chunks).
struct DecodeLaunchShape {
  size_t smem = 0;
  int ctas_per_sm = 0;
  bool fc1_first_round = false;
};
// The launch shape of every token count 1..max_tokens (element T - 1), for a GPU of `sms` SMs;
// smem_limit is the most dynamic shared memory a CTA may have; ctas_per_sm(smem) is how many CTAs of the kernel an SM holds with that much dynamic shared
// memory (on a GPU, the occupancy query). The rule, and what it was measured against, is in
// decode_layout.cpp.
std::vector<DecodeLaunchShape> decode_launch_shapes(const DecodeDims& d, int64_t max_tokens, size_t smem_limit,
                                                    int64_t sms, const std::function<int(size_t)>& ctas_per_sm);

// The value a lane's slice encodes, decoded back (for tests of the layout): weight of
// (task, tile, tile row, K) of one expert's block, without the global scale.
float decode_prepared_weight(const uint8_t* expert_block, int64_t chunks, int64_t tasks, int64_t task, int tile,
                             int rr, int64_t kk);

}  // namespace fp4moe::cuda
