#include "fp4moe/format.hpp"

#include <bit>
#include <cmath>

#include "fp4moe/error.hpp"

namespace fp4moe {

namespace {
constexpr float kE2m1Mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
}

float e2m1_decode(uint8_t code) {
  float m = kE2m1Mag[code & 7];
  return (code & 8) ? -m : m;
}

uint8_t e2m1_encode(float x) {
  if (std::isnan(x)) return 7;
  const uint8_t sign = x < 0.0f ? 8 : 0;
  const float a = std::fabs(x);
  // Midpoints between neighbouring magnitudes; a tie goes to the even code.
  uint8_t c = 7;
  for (uint8_t i = 0; i < 7; ++i) {
    const float mid = 0.5f * (kE2m1Mag[i] + kE2m1Mag[i + 1]);
    if (a < mid) { c = i; break; }
    if (a == mid) { c = (i % 2 == 0) ? i : static_cast<uint8_t>(i + 1); break; }
  }
  return static_cast<uint8_t>(sign | c);
}

float e4m3_decode(uint8_t b) {
  const bool neg = b & 0x80;
  const int e = (b >> 3) & 0xF;
  const int m = b & 7;
  float v;
  if (e == 0xF && m == 7) return neg ? -NAN : NAN;
  if (e == 0) v = std::ldexp(static_cast<float>(m), -9);  // subnormal: m * 2^-9
  else v = std::ldexp(1.0f + m / 8.0f, e - 7);
  return neg ? -v : v;
}

uint8_t e4m3_encode(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  if (std::isnan(x)) return static_cast<uint8_t>(sign | 0x7F);
  double a = std::fabs(static_cast<double>(x));
  if (a >= 448.0) return static_cast<uint8_t>(sign | 0x7E);  // satfinite (inf too)
  if (a == 0.0) return sign;
  int exp2;
  std::frexp(a, &exp2);          // a = f * 2^exp2, f in [0.5, 1)
  int e = exp2 - 1;              // a in [2^e, 2^(e+1))
  if (e < -6) e = -6;            // subnormal range shares the quantum 2^-9
  const double quantum = std::ldexp(1.0, e - 3);
  const double q = std::nearbyint(a / quantum);  // exact division by a power of two; RNE
  double v = q * quantum;
  if (v > 448.0) v = 448.0;
  if (v == 0.0) return sign;
  // encode v exactly
  std::frexp(v, &exp2);
  int ve = exp2 - 1;
  uint8_t bits;
  if (ve < -6) {
    bits = static_cast<uint8_t>(std::lround(v / std::ldexp(1.0, -9)));  // subnormal mantissa
  } else {
    const int mant = static_cast<int>(std::lround((v / std::ldexp(1.0, ve) - 1.0) * 8.0));
    bits = static_cast<uint8_t>(((ve + 7) << 3) | mant);
  }
  return static_cast<uint8_t>(sign | bits);
}

float modelopt_weight_scale_2(std::span<const float> w) {
  float amax = 0.0f;
  for (float v : w) amax = std::fmax(amax, std::fabs(v));
  return amax / (6.0f * 448.0f);
}

QuantizedMatrix quantize_weight(std::span<const float> w, int64_t rows, int64_t cols, float global_scale) {
  FP4MOE_CHECK_ARG(rows >= 0, "rows", ">= 0", rows);
  FP4MOE_CHECK_ARG(cols > 0 && cols % kBlock == 0, "cols", "a positive multiple of 16", cols);
  FP4MOE_CHECK_ARG(static_cast<int64_t>(w.size()) == rows * cols, "w", detail::concat(rows * cols, " values"),
                   w.size());
  for (size_t i = 0; i < w.size(); ++i)
    if (!std::isfinite(w[i]))
      throw Error(detail::concat("w: expected finite values, got ", w[i], " at index ", i));
  QuantizedMatrix q;
  q.rows = rows;
  q.cols = cols;
  q.global_scale = global_scale < 0.0f ? modelopt_weight_scale_2(w) : global_scale;
  q.packed.assign(static_cast<size_t>(rows * cols / 2), 0);
  q.scales.assign(static_cast<size_t>(rows * cols / kBlock), 0);
  const float gs = q.global_scale;
  const float six_gs = 6.0f * gs;  // ModelOpt: per_block_amax / (6.0 * weight_scale_2)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < cols / kBlock; ++b) {
      const float* blk = w.data() + r * cols + b * kBlock;
      float amax = 0.0f;
      for (int i = 0; i < kBlock; ++i) amax = std::fmax(amax, std::fabs(blk[i]));
      float s = amax / six_gs;
      if (s == 0.0f || std::isnan(s)) s = 1.0f;  // zero block (or all-zero tensor: 0/0) -> 1.0
      const uint8_t sb = e4m3_encode(s);
      q.scales[static_cast<size_t>(r * (cols / kBlock) + b)] = sb;
      const float denom = e4m3_decode(sb) * gs;  // divide by the *rounded* scale
      for (int i = 0; i < kBlock; i += 2) {
        const uint8_t lo = e2m1_encode(blk[i] / denom);
        const uint8_t hi = e2m1_encode(blk[i + 1] / denom);
        q.packed[static_cast<size_t>((r * cols + b * kBlock + i) / 2)] = pack_e2m1(lo, hi);
      }
    }
  }
  return q;
}

std::vector<float> dequantize_weight(const uint8_t* packed, const uint8_t* scales, int64_t rows, int64_t cols,
                                     float global_scale) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const uint8_t byte = packed[(r * cols + c) / 2];
      const uint8_t code = (c & 1) ? unpack_hi(byte) : unpack_lo(byte);
      const float s = e4m3_decode(scales[r * (cols / kBlock) + c / kBlock]);
      out[static_cast<size_t>(r * cols + c)] = e2m1_decode(code) * s * global_scale;
    }
  return out;
}

void quantize_activation_row(const float* x, int64_t n, float input_scale, uint8_t* codes, uint8_t* scales,
                             float* deq) {
  const float six_is = 6.0f * input_scale;
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const float* blk = x + b * kBlock;
    float amax = 0.0f;
    for (int i = 0; i < kBlock; ++i) amax = std::fmax(amax, std::fabs(blk[i]));
    const uint8_t sb = e4m3_encode(amax / six_is);
    const float s = e4m3_decode(sb);
    const float denom = s * input_scale;
    if (scales) scales[b] = sb;
    for (int i = 0; i < kBlock; ++i) {
      const uint8_t c = (s == 0.0f) ? 0 : e2m1_encode(blk[i] / denom);
      if (codes) codes[b * kBlock + i] = c;
      if (deq) deq[b * kBlock + i] = e2m1_decode(c) * s;
    }
  }
}

size_t swizzled_scale_size(int64_t rows, int64_t scale_cols) {
  const int64_t rp = (rows + 127) / 128 * 128, cp = (scale_cols + 3) / 4 * 4;
  return static_cast<size_t>(rp * cp);
}

size_t swizzled_scale_offset(int64_t m, int64_t k, int64_t scale_cols) {
  const int64_t kt = (scale_cols + 3) / 4;
  return static_cast<size_t>((m / 128) * kt * 512 + (k / 4) * 512 + (m % 32) * 16 + ((m % 128) / 32) * 4 + (k % 4));
}

std::vector<uint8_t> swizzle_scales(const uint8_t* linear, int64_t rows, int64_t scale_cols) {
  std::vector<uint8_t> out(swizzled_scale_size(rows, scale_cols), 0);
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t k = 0; k < scale_cols; ++k) out[swizzled_scale_offset(m, k, scale_cols)] = linear[m * scale_cols + k];
  return out;
}

std::vector<uint8_t> unswizzle_scales(const uint8_t* swizzled, int64_t rows, int64_t scale_cols) {
  std::vector<uint8_t> out(static_cast<size_t>(rows * scale_cols));
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t k = 0; k < scale_cols; ++k) out[m * scale_cols + k] = swizzled[swizzled_scale_offset(m, k, scale_cols)];
  return out;
}

}  // namespace fp4moe
