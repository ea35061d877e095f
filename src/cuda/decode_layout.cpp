#include "cuda/decode_layout.hpp"

#include <cstring>

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
  d.task1_bytes = task_stream_bytes(d.chunks1);
  d.task2_bytes = task_stream_bytes(d.chunks2);
  return d;
}

namespace {
// Location of (tile row rr, K-value kk within a chunk) in a lane slice.
struct Slot {
  int lane, word, nibble;
};
inline Slot slot_of(int rr, int kk) {
  const int r = rr % 8, hi_row = rr / 8;  // row r or r + 8
  const int q = kk / 16, within = kk % 16;
  const int m = within / 4, j = within % 4;  // MMA m, position j in 4m..4m+3
  const int reg = (j < 2 ? 0 : 2) + hi_row;  // A register 0..3
  const int nibble = reg + ((j & 1) ? 4 : 0);
  return {r * 4 + q, m, nibble};
}
}  // namespace

void prepare_task_streams(const uint8_t* packed, const uint8_t* scales, int64_t K, int64_t tasks,
                          const std::function<int64_t(int64_t, int, int)>& row_of, uint8_t* out) {
  const int64_t chunks = (K + 63) / 64;
  const int64_t bytes = task_stream_bytes(chunks);
  std::memset(out, 0, static_cast<size_t>(bytes * tasks));
  for (int64_t w = 0; w < tasks; ++w) {
    uint8_t* base = out + w * bytes;
    for (int t = 0; t < 2; ++t)
      for (int rr = 0; rr < 16; ++rr) {
        const int64_t row = row_of(w, t, rr);
        if (row < 0) continue;
        const uint8_t* prow = packed + row * (K / 2);
        const uint8_t* srow = scales + row * (K / 16);
        for (int64_t c = 0; c < chunks; ++c) {
          const int64_t g = c / 8, cg = c % 8;
          const int64_t group_off = g * 18 * kPiece;
          for (int q = 0; q < 4; ++q) {
            const int64_t blk = c * 4 + q;
            if (blk * 16 >= K) continue;
            // scale: lane (rr % 8) * 4 + q, byte 2 * cg + (rr / 8)
            const int lane = (rr % 8) * 4 + q;
            base[group_off + t * kPiece + lane * 16 + cg * 2 + rr / 8] = srow[blk];
            for (int kk = q * 16; kk < q * 16 + 16; ++kk) {
              const int64_t col = c * 64 + kk;
              const uint8_t byte = prow[col / 2];
              const uint8_t code = (col & 1) ? (byte >> 4) : (byte & 0xF);
              const Slot s = slot_of(rr, kk);
              uint8_t* word = base + group_off + (2 + cg * 2 + t) * kPiece + s.lane * 16 + s.word * 4;
              word[s.nibble / 2] |= static_cast<uint8_t>(code << ((s.nibble & 1) * 4));
            }
          }
        }
      }
  }
}

float decode_prepared_weight(const uint8_t* stream, int64_t /*chunks*/, int tile, int rr, int64_t k) {
  const int64_t c = k / 64, g = c / 8, cg = c % 8;
  const int kk = static_cast<int>(k % 64);
  const Slot s = slot_of(rr, kk);
  const int64_t group_off = g * 18 * kPiece;
  const uint8_t byte = stream[group_off + (2 + cg * 2 + tile) * kPiece + s.lane * 16 + s.word * 4 + s.nibble / 2];
  const uint8_t code = (s.nibble & 1) ? (byte >> 4) : (byte & 0xF);
  const uint8_t sb = stream[group_off + tile * kPiece + s.lane * 16 + cg * 2 + rr / 8];
  return e2m1_decode(code) * e4m3_decode(sb);
}

DecodePrepared prepare_decode_weights(const MoeSpec& spec, const uint8_t* w13, const uint8_t* w13s, const uint8_t* w2,
                                      const uint8_t* w2s) {
  DecodePrepared P;
  P.dims = decode_dims(spec);
  const DecodeDims& d = P.dims;
  const int64_t N1 = spec.n1();
  P.w1.resize(static_cast<size_t>(d.E * d.n1_tasks * d.task1_bytes));
  P.w2.resize(static_cast<size_t>(d.E * d.n2_tasks * d.task2_bytes));
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
    prepare_task_streams(w13 + e * N1 * (d.H / 2), w13s + e * N1 * (d.H / 16), d.H, d.n1_tasks, fc1_row,
                         P.w1.data() + e * d.n1_tasks * d.task1_bytes);
    prepare_task_streams(w2 + e * d.H * (d.I / 2), w2s + e * d.H * (d.I / 16), d.I, d.n2_tasks, fc2_row,
                         P.w2.data() + e * d.n2_tasks * d.task2_bytes);
  });
  return P;
}

}  // namespace fp4moe::cuda
