#include "cuda/decode_layout.hpp"

#include <algorithm>
#include <cstring>

#include "cuda/backend_api.hpp"  // kDecodeWarps, kCombine*, decode_smem_bytes()
#include "fp4moe/error.hpp"
#include "fp4moe/format.hpp"
#include "parallel.hpp"

namespace fp4moe::cuda {

DecodeDims decode_dims(const MoeSpec& s) {
  s.validate();
  DecodeDims d;
  d.H = s.hidden;
  d.I = s.inter;
  d.E = s.experts;
  d.k = s.topk;
  d.Hk = (s.hidden + 63) / 64 * 64;
  d.Ik = (s.inter + 63) / 64 * 64;
  d.swiglu = s.activation == Activation::SwiGLU;
  d.n1_tasks = d.swiglu ? d.Ik / 16 : d.Ik / 32;
  d.n2_tasks = (s.hidden + kTaskRows - 1) / kTaskRows;
  d.chunks1 = d.Hk / 64;
  d.chunks2 = d.Ik / 64;
  d.expert1_bytes = expert_block_bytes(d.chunks1, d.n1_tasks);
  d.expert2_bytes = expert_block_bytes(d.chunks2, d.n2_tasks);
  return d;
}

namespace {
// Location of (tile row rr, K-value kk within a chunk) in a lane slice.
struct Slot {
  int lane, word, reg, half;
};
inline Slot slot_of(int rr, int kk) {
  const int r = rr % 8, hi_row = rr / 8;  // row r or r + 8
  const int q = kk / 16, within = kk % 16;
  const int m = within / 4, j = within % 4;  // MMA m, position j in 4m..4m+3
  const int reg = (j < 2 ? 0 : 2) + hi_row;  // A register 0..3
  return {r * 4 + q, m, reg, j & 1};
}
// The byte and bit of a piece that hold bit `role` of the code at s.
inline int64_t code_byte(const Slot& s, int role) { return s.lane * 16 + s.word * 4 + code_bit(s.reg, s.half, role) / 8; }
inline int code_shift(const Slot& s, int role) { return code_bit(s.reg, s.half, role) % 8; }
}  // namespace

namespace {
inline int64_t weight_piece(int64_t c, int64_t tasks, int64_t w, int t) { return ((c * tasks + w) * 2 + t) * kPiece; }
inline int64_t scale_piece(int64_t chunks, int64_t g, int64_t tasks, int64_t w, int t) {
  return ((chunks * tasks) + (g * tasks + w)) * 2 * kPiece + t * kPiece;
}
}  // namespace

void prepare_expert_block(const uint8_t* packed, const uint8_t* scales, int64_t K, int64_t tasks,
                          const std::function<int64_t(int64_t, int, int)>& row_of, uint8_t* out) {
  const int64_t chunks = (K + 63) / 64;
  std::memset(out, 0, static_cast<size_t>(expert_block_bytes(chunks, tasks)));
  for (int64_t w = 0; w < tasks; ++w)
    for (int t = 0; t < 2; ++t)
      for (int rr = 0; rr < 16; ++rr) {
        const int64_t row = row_of(w, t, rr);
        if (row < 0) continue;
        const uint8_t* prow = packed + row * (K / 2);
        const uint8_t* srow = scales + row * (K / 16);
        for (int64_t c = 0; c < chunks; ++c) {
          const int64_t cg = c % 8;
          for (int q = 0; q < 4; ++q) {
            const int64_t blk = c * 4 + q;
            if (blk * 16 >= K) continue;
            // scale: lane (rr % 8) * 4 + q, byte 2 * cg + (rr / 8)
            const int lane = (rr % 8) * 4 + q;
            out[scale_piece(chunks, c / 8, tasks, w, t) + lane * 16 + cg * 2 + rr / 8] = srow[blk];
            uint8_t* piece = out + weight_piece(c, tasks, w, t);
            for (int kk = q * 16; kk < q * 16 + 16; ++kk) {
              const int64_t col = c * 64 + kk;
              const uint8_t byte = prow[col / 2];
              const uint8_t code = (col & 1) ? (byte >> 4) : (byte & 0xF);
              const Slot s = slot_of(rr, kk);
              for (int role = 0; role < 4; ++role)
                piece[code_byte(s, role)] |= static_cast<uint8_t>(((code >> role) & 1) << code_shift(s, role));
            }
          }
        }
      }
}

float decode_prepared_weight(const uint8_t* block, int64_t chunks, int64_t tasks, int64_t w, int tile, int rr,
                             int64_t k) {
  const int64_t c = k / 64, cg = c % 8;
  const int kk = static_cast<int>(k % 64);
  const Slot s = slot_of(rr, kk);
  // read back the way the kernel does (word_reg_bits), so the round trip tests its bit trick
  const uint8_t* wp = block + weight_piece(c, tasks, w, tile) + s.lane * 16 + s.word * 4;
  const uint32_t word = wp[0] | (wp[1] << 8) | (wp[2] << 16) | (static_cast<uint32_t>(wp[3]) << 24);
  const uint32_t bits = word_reg_bits(word, s.reg) >> (16 * s.half);
  const uint8_t code = static_cast<uint8_t>(((bits >> 6) & 7) | ((bits >> 12) & 8));
  const uint8_t sb = block[scale_piece(chunks, c / 8, tasks, w, tile) + s.lane * 16 + cg * 2 + rr / 8];
  return e2m1_decode(code) * e4m3_decode(sb);
}

DecodePrepared prepare_decode_weights(const MoeSpec& spec, const uint8_t* w13, const uint8_t* w13s, const uint8_t* w2,
                                      const uint8_t* w2s) {
  DecodePrepared P;
  P.dims = decode_dims(spec);
  const DecodeDims& d = P.dims;
  const int64_t N1 = spec.n1();
  P.w1.resize(static_cast<size_t>(d.E * d.expert1_bytes));
  P.w2.resize(static_cast<size_t>(d.E * d.expert2_bytes));
  const bool gate_first = spec.gate_up_order == GateUpOrder::GateUp;
  detail::parallel_for(d.E, [&](int64_t e) {
    auto fc1_row = [&](int64_t w, int t, int rr) -> int64_t {
      if (d.swiglu) {
        const int64_t i = 16 * w + 8 * t + (rr % 8);
        if (i >= d.I) return -1;
        const bool gate = rr < 8;
        return (gate == gate_first) ? i : d.I + i;
      }
      const int64_t i = 32 * w + 16 * t + rr;
      return i < d.I ? i : -1;
    };
    auto fc2_row = [&](int64_t w, int t, int rr) -> int64_t {
      const int64_t o = 32 * w + 16 * t + rr;
      return o < d.H ? o : -1;
    };
    prepare_expert_block(w13 + e * N1 * (d.H / 2), w13s + e * N1 * (d.H / 16), d.H, d.n1_tasks, fc1_row,
                         P.w1.data() + e * d.expert1_bytes);
    prepare_expert_block(w2 + e * d.H * (d.I / 2), w2s + e * d.H * (d.I / 16), d.I, d.n2_tasks, fc2_row,
                         P.w2.data() + e * d.expert2_bytes);
  });
  return P;
}

// The grid is every CTA that fits (the kernel's order relies on each SM holding exactly
// ctas_per_sm of them), with the shared memory of max_tokens' routing table - except for a batch
// whose FC1 tasks overflow that grid's first round while the whole batch fits two rounds
// of the grid that its own, smaller routing table allows: that batch takes the larger grid, where
// the FC1 tasks past the first round run as K splits side by side (see the kernel). Tasks are
// counted at their most: every pair its own expert. (W4A4's quantization of x is no task: every CTA
// does a share of it in its prologue, so both modes get the same shapes.)
// Measured on an H200 (one lease, two runs each): gpt-oss-120b at 4 tokens 74.7 -> 70.0 us with
// 5 CTAs per SM instead of 4; giving 5 CTAs to every batch that fits them was slower elsewhere,
// e.g. qwen3-30b-a3b at 16 tokens 74.8 -> 82.3, nemotron at 8 79.8 -> 82.5 (a likely reason,
// not established: the CTAs' shared memory leaves the SM less L1 - capping those at 4 CTAs by
// giving each more shared memory was slower still than the 4 CTAs of max_tokens' table, 58.7
// against 56.2 us at qwen3's 8). The base grid's table is that of kDecodeTableTokens tokens where
// max_tokens is fewer, that table fits smem_limit and it leaves kDecodeTableCtas CTAs per SM (see
// backend_api.hpp), so a smaller max_tokens gets the shapes measured with 64; else max_tokens' own.
std::vector<DecodeLaunchShape> decode_launch_shapes(const DecodeDims& d, int64_t max_tokens, size_t smem_limit,
                                                    int64_t sms, const std::function<int(size_t)>& ctas_per_sm) {
  const int E = static_cast<int>(d.E);
  const int64_t k = d.k, n1t = d.n1_tasks, n2t = d.n2_tasks;
  const size_t table = decode_smem_bytes(static_cast<int>(kDecodeTableTokens * k), E);
  const bool use_table = max_tokens < kDecodeTableTokens && table <= smem_limit && ctas_per_sm(table) >= kDecodeTableCtas;
  const size_t smem_max = use_table ? table : decode_smem_bytes(static_cast<int>(max_tokens * k), E);
  const DecodeLaunchShape base{smem_max, ctas_per_sm(smem_max), false};
  std::vector<DecodeLaunchShape> shapes(static_cast<size_t>(max_tokens), base);
  for (int64_t t = 1; t <= max_tokens; ++t) {
    const int64_t pairs = t * k, tiles = std::min<int64_t>(pairs, d.E + pairs / 8);  // token tiles, at most
    const int64_t front = tiles * n1t;                                              // FC1 tasks
    const int64_t ccols = t <= kCombineNarrowTokens ? kCombineColsNarrow : kCombineCols;
    const int64_t total = front + tiles * n2t + t * ((d.H + ccols - 1) / ccols);
    DecodeLaunchShape& ls = shapes[static_cast<size_t>(t - 1)];
    if (front > base.ctas_per_sm * sms * kDecodeWarps) {
      const size_t smem = decode_smem_bytes(static_cast<int>(pairs), E);
      const int n = ctas_per_sm(smem);
      if (n > base.ctas_per_sm && total <= 2 * n * sms * kDecodeWarps) ls = {smem, n, false};
    }
    ls.fc1_first_round = front <= ls.ctas_per_sm * sms * kDecodeWarps;
  }
  return shapes;
}

}  // namespace fp4moe::cuda
