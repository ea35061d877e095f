// Weight quantization as ModelOpt does it, activation quantization, dequantization.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "fp4moe/error.hpp"
#include "fp4moe/format.hpp"

using namespace fp4moe;

TEST(WeightQuant, KnownAnswerByHand) {
  // One row of 16: amax = 6 -> weight_scale_2 = 6/2688; block scale = 6/(6*ws2) = 448 (0x7E).
  // q = w / (448 * 6/2688) = w / 1 -> codes of w itself.
  std::vector<float> w = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.5f, -1, -1.5f, -2, -3, -4, -6, 0.2f};
  auto q = quantize_weight(w, 1, 16);
  EXPECT_FLOAT_EQ(q.global_scale, 6.0f / 2688.0f);
  ASSERT_EQ(q.scales.size(), 1u);
  EXPECT_EQ(q.scales[0], 0x7E);
  ASSERT_EQ(q.packed.size(), 8u);
  EXPECT_EQ(q.packed[0], 0x10);  // codes 0 (0.0), 1 (0.5)
  EXPECT_EQ(q.packed[1], 0x32);
  EXPECT_EQ(q.packed[3], 0x76);  // 4 -> 6, 6 -> 7
  EXPECT_EQ(q.packed[4], 0xA9);  // -0.5 -> 9, -1 -> 10
  EXPECT_EQ(q.packed[7], 0x0F);  // -6 -> 15, 0.2 -> 0
}

TEST(WeightQuant, SecondBlockScaleAndDivisionByTheRoundedScale) {
  // Row of 32: block 0 amax 6 (sets ws2 = 6/2688), block 1 amax 1 -> s = 1/(6*ws2) = 74.666..,
  // e4m3 rounds it to 72 (0x69: 2^6 * 1.125). q = 1 / (72 * ws2) = 1/0.16071 = 6.22 -> 6.
  std::vector<float> w(32, 0.0f);
  w[0] = 6.0f;
  w[16] = 1.0f;
  w[17] = 0.5f;
  auto q = quantize_weight(w, 1, 32);
  EXPECT_EQ(q.scales[1], e4m3_encode(1.0f / (6.0f * q.global_scale)));
  EXPECT_EQ(e4m3_decode(q.scales[1]), 72.0f);
  EXPECT_EQ(q.packed[8] & 0xF, 7);         // 1.0 -> 6.22 -> 6 (code 7)
  EXPECT_EQ((q.packed[8] >> 4) & 0xF, 5);  // 0.5 -> 3.11 -> 3 (code 5)
}

TEST(WeightQuant, ZeroBlockGetsScaleOne) {
  std::vector<float> w(32, 0.0f);
  w[20] = 2.0f;
  auto q = quantize_weight(w, 1, 32);
  EXPECT_EQ(q.scales[0], e4m3_encode(1.0f));
  std::vector<float> z(16, 0.0f);
  auto qz = quantize_weight(z, 1, 16);
  EXPECT_EQ(qz.global_scale, 0.0f);
  EXPECT_EQ(qz.scales[0], e4m3_encode(1.0f));
  // ModelOpt divides 0 by (1.0 * 0) for an all-zero tensor: NaN, which its searchsorted (and
  // fp4moe) maps to code 7. The dequantized values are still 0 (6 * 1 * 0).
  for (auto b : qz.packed) EXPECT_EQ(b, 0x77);
  for (float v : dequantize_weight(qz.packed.data(), qz.scales.data(), 1, 16, qz.global_scale)) EXPECT_EQ(v, 0.0f);
}

TEST(WeightQuant, GivenGlobalScaleIsUsed) {
  std::vector<float> w(16, 1.0f);
  auto q = quantize_weight(w, 1, 16, 0.5f);
  EXPECT_EQ(q.global_scale, 0.5f);
  EXPECT_EQ(q.scales[0], e4m3_encode(1.0f / 3.0f));
}

TEST(WeightQuant, RejectsBadArguments) {
  std::vector<float> w(20, 1.0f);
  EXPECT_THROW(quantize_weight(w, 1, 20), Error);
  std::vector<float> w2(16, 1.0f);
  w2[3] = NAN;
  try {
    quantize_weight(w2, 1, 16);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("w: expected finite"), std::string::npos) << e.what();
  }
}

TEST(WeightQuant, DequantizeIsCloseAndExactWhereRepresentable) {
  std::mt19937 rng(123);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  const int rows = 64, cols = 256;
  std::vector<float> w(rows * cols);
  for (auto& v : w) v = nd(rng);
  auto q = quantize_weight(w, rows, cols);
  auto d = dequantize_weight(q.packed.data(), q.scales.data(), rows, cols, q.global_scale);
  double e2 = 0, r2 = 0;
  for (size_t i = 0; i < w.size(); ++i) e2 += (w[i] - d[i]) * (w[i] - d[i]), r2 += w[i] * w[i];
  const double rel = std::sqrt(e2 / r2);
  EXPECT_GT(rel, 0.02);  // 4-bit values cannot be lossless on Gaussian data
  EXPECT_LT(rel, 0.15);
  // Re-quantizing the dequantized tensor with the same global scale gives back the same bytes.
  // (-0, code 8, comes back as +0, code 0: the sign rule is x < 0.)
  auto q2 = quantize_weight(d, rows, cols, q.global_scale);
  EXPECT_EQ(q2.scales, q.scales);
  auto no_neg_zero = [](std::vector<uint8_t> p) {
    for (auto& b : p) {
      if ((b & 0xF) == 8) b &= 0xF0;
      if ((b >> 4) == 8) b &= 0x0F;
    }
    return p;
  };
  EXPECT_EQ(no_neg_zero(q2.packed), no_neg_zero(q.packed));
}

TEST(ActivationQuant, KnownAnswerAndZeroBlock) {
  // input scale 1/448 (dequant direction): block amax 3 -> s = e4m3(3 / (6/448)) = e4m3(224) = 224
  // q = x / (224/448) = 2x
  std::vector<float> x(32, 0.0f);
  x[0] = 3.0f;
  x[1] = -1.0f;
  x[2] = 0.3f;
  std::vector<uint8_t> codes(32), scales(2);
  std::vector<float> deq(32);
  quantize_activation_row(x.data(), 32, 1.0f / 448.0f, codes.data(), scales.data(), deq.data());
  EXPECT_EQ(e4m3_decode(scales[0]), 224.0f);
  EXPECT_EQ(codes[0], 7);   // 6
  EXPECT_EQ(codes[1], 12);  // -2
  EXPECT_EQ(codes[2], 1);   // 0.6 -> 0.5
  EXPECT_EQ(deq[0], 6.0f * 224.0f);  // deq excludes the input scale
  EXPECT_EQ(scales[1], 0);          // all-zero block: scale byte 0, zeros
  for (int i = 16; i < 32; ++i) EXPECT_EQ(codes[i], 0);
}

TEST(ActivationQuant, NoGlobalScaleMeansOne) {
  std::vector<float> x(16, 0.0f);
  x[5] = 12.0f;
  std::vector<uint8_t> codes(16), scales(1);
  quantize_activation_row(x.data(), 16, 1.0f, codes.data(), scales.data(), nullptr);
  EXPECT_EQ(e4m3_decode(scales[0]), 2.0f);
  EXPECT_EQ(codes[5], 7);
}
