// fp4moe: the NVFP4 format on the host - codecs, ModelOpt weight quantization, activation
// quantization, dequantization and scale layouts. See README "Conventions".
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace fp4moe {

inline constexpr int kBlock = 16;           // elements per e4m3 block scale
inline constexpr float kE2m1Max = 6.0f;
inline constexpr float kE4m3Max = 448.0f;

// ---- e2m1 (4-bit): bit 3 sign, bits 0-2 index into {0, .5, 1, 1.5, 2, 3, 4, 6} ----
float e2m1_decode(uint8_t code);  // code & 0xF
// Round to nearest, ties to the even code, saturate at +-6. The sign bit is set when
// x < 0 (so -0.1 -> code 8, "-0"; -0.0 -> code 0), as ModelOpt does. NaN -> code 7 (+6).
uint8_t e2m1_encode(float x);

// ---- e4m3fn (8-bit): bias 7, max 448, 0x7f/0xff NaN, no infinities ----
float e4m3_decode(uint8_t byte);
// Round to nearest even, saturate finite and infinite values to +-448 (satfinite), NaN -> 0x7f
// with the sign kept.
uint8_t e4m3_encode(float x);

// ---- packing: two e2m1 codes per byte, the lower K index in the low nibble ----
inline uint8_t pack_e2m1(uint8_t lo, uint8_t hi) { return static_cast<uint8_t>((hi << 4) | (lo & 0xF)); }
inline uint8_t unpack_lo(uint8_t b) { return b & 0xF; }
inline uint8_t unpack_hi(uint8_t b) { return b >> 4; }

// ---- weights, exactly as ModelOpt quantizes them ----
struct QuantizedMatrix {
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> packed;   // [rows, cols/2]
  std::vector<uint8_t> scales;   // [rows, cols/16] e4m3, linear (on-disk) layout
  float global_scale = 1.0f;     // weight_scale_2 (dequant direction)
};
// weight_scale_2 = amax(|W|) / (6 * 448) in fp32 (amax 0 -> weight_scale_2 0, every block 1.0)
float modelopt_weight_scale_2(std::span<const float> w);
// Quantize a row-major [rows, cols] matrix (cols % 16 == 0). global_scale < 0 computes it
// from the data (ModelOpt's amax rule); otherwise the given weight_scale_2 is used (fused
// siblings share one).
QuantizedMatrix quantize_weight(std::span<const float> w, int64_t rows, int64_t cols,
                                float global_scale = -1.0f);
// w = e2m1(q) * e4m3(s) * global_scale, row-major float.
std::vector<float> dequantize_weight(const uint8_t* packed, const uint8_t* scales, int64_t rows,
                                     int64_t cols, float global_scale);

// ---- activations (runtime quantization of one row, per 16-block) ----
// input_scale_dequant is in ModelOpt's *dequant* direction (amax_calib / (6*448)); pass 1.0
// for "no global scale". Per block: s = e4m3_rn_sat(block_amax / (6 * input_scale_dequant)),
// q = e2m1_rn_sat(x / (float(s) * input_scale_dequant)); a block whose s is 0 gets zeros.
// Writes codes (unpacked, one per element, may be null) and block scales (may be null), and
// returns into deq the value e2m1(q) * s WITHOUT input_scale (the 16-bit MMA operand; the
// input scale belongs in the fp32 epilogue).
void quantize_activation_row(const float* x, int64_t n, float input_scale_dequant, uint8_t* codes,
                             uint8_t* scales, float* deq);

// ---- scale layouts ----
// The 128x4 swizzled layout of CUTLASS / TRT-LLM / FlashInfer for one [rows, scale_cols]
// matrix: rows padded to 128, columns to 4; padding bytes are 0.
size_t swizzled_scale_size(int64_t rows, int64_t scale_cols);
size_t swizzled_scale_offset(int64_t row, int64_t scale_col, int64_t scale_cols);
std::vector<uint8_t> swizzle_scales(const uint8_t* linear, int64_t rows, int64_t scale_cols);
std::vector<uint8_t> unswizzle_scales(const uint8_t* swizzled, int64_t rows, int64_t scale_cols);

}  // namespace fp4moe
