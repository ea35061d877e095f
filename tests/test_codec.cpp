// e2m1 and e4m3fn codecs: every code both ways, ties, saturation, NaN/Inf, signed zero.
#include <gtest/gtest.h>

#include <cmath>

#include "fp4moe/bf16.hpp"
#include "fp4moe/format.hpp"

using namespace fp4moe;

TEST(E2m1, DecodesAll16Codes) {
  const float want[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0f, -0.5, -1, -1.5, -2, -3, -4, -6};
  for (int c = 0; c < 16; ++c) {
    EXPECT_EQ(e2m1_decode(static_cast<uint8_t>(c)), want[c]) << "code " << c;
    EXPECT_EQ(std::signbit(e2m1_decode(static_cast<uint8_t>(c))), c >= 8) << "code " << c;
  }
}

TEST(E2m1, EncodeDecodeRoundTripsEveryCode) {
  for (int c = 0; c < 16; ++c) {
    if (c == 8) continue;  // -0 encodes as +0 (ModelOpt's sign rule: x < 0)
    EXPECT_EQ(e2m1_encode(e2m1_decode(static_cast<uint8_t>(c))), c) << "code " << c;
  }
  EXPECT_EQ(e2m1_encode(-0.0f), 0);
}

TEST(E2m1, TiesGoToTheEvenCode) {
  // decision points: 0.25->0, 0.75->1.0, 1.25->1.0, 1.75->2, 2.5->2, 3.5->4, 5->4
  const std::pair<float, float> ties[] = {{0.25f, 0.0f}, {0.75f, 1.0f}, {1.25f, 1.0f}, {1.75f, 2.0f},
                                          {2.5f, 2.0f},  {3.5f, 4.0f},  {5.0f, 4.0f}};
  for (auto [x, y] : ties) {
    EXPECT_EQ(e2m1_decode(e2m1_encode(x)), y) << x;
    EXPECT_EQ(e2m1_decode(e2m1_encode(-x)), -y) << -x;
  }
  // just off the ties
  EXPECT_EQ(e2m1_decode(e2m1_encode(std::nextafter(0.25f, 1.0f))), 0.5f);
  EXPECT_EQ(e2m1_decode(e2m1_encode(std::nextafter(0.75f, 0.0f))), 0.5f);
  EXPECT_EQ(e2m1_decode(e2m1_encode(std::nextafter(5.0f, 9.0f))), 6.0f);
  EXPECT_EQ(e2m1_decode(e2m1_encode(std::nextafter(2.5f, 9.0f))), 3.0f);
}

TEST(E2m1, SaturatesAndHandlesNonFinite) {
  EXPECT_EQ(e2m1_encode(7.0f), 7);
  EXPECT_EQ(e2m1_encode(1e30f), 7);
  EXPECT_EQ(e2m1_encode(-1e30f), 15);
  EXPECT_EQ(e2m1_encode(INFINITY), 7);
  EXPECT_EQ(e2m1_encode(-INFINITY), 15);
  EXPECT_EQ(e2m1_encode(NAN), 7);
  EXPECT_EQ(e2m1_encode(-0.1f), 8);  // a negative value that rounds to zero keeps its sign
  EXPECT_EQ(e2m1_encode(0.1f), 0);
}

TEST(E4m3, DecodesAll256CodesAgainstTheDefinition) {
  for (int b = 0; b < 256; ++b) {
    const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    const float v = e4m3_decode(static_cast<uint8_t>(b));
    if (e == 15 && m == 7) {
      EXPECT_TRUE(std::isnan(v)) << b;
      continue;
    }
    const double mag = e == 0 ? m * std::ldexp(1.0, -9) : (1.0 + m / 8.0) * std::ldexp(1.0, e - 7);
    EXPECT_EQ(v, static_cast<float>(s ? -mag : mag)) << b;
  }
  EXPECT_EQ(e4m3_decode(0x7E), 448.0f);
  EXPECT_EQ(e4m3_decode(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(e4m3_decode(0x08), std::ldexp(1.0f, -6));
}

TEST(E4m3, EncodeRoundTripsEveryFiniteCode) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7F) == 0x7F) continue;
    const float v = e4m3_decode(static_cast<uint8_t>(b));
    EXPECT_EQ(e4m3_encode(v), b) << "code " << b << " value " << v;
  }
}

TEST(E4m3, RoundsToNearestEvenAtEveryMidpoint) {
  // For every pair of neighbouring positive codes, the midpoint goes to the even code and the
  // values just beside it go to the nearer one.
  for (int b = 0; b < 0x7E; ++b) {
    const double lo = e4m3_decode(static_cast<uint8_t>(b)), hi = e4m3_decode(static_cast<uint8_t>(b + 1));
    const float mid = static_cast<float>((lo + hi) / 2);
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2);  // exact in fp32
    const int even = (b % 2 == 0) ? b : b + 1;
    EXPECT_EQ(e4m3_encode(mid), even) << "midpoint of " << b << " and " << b + 1;
    EXPECT_EQ(e4m3_encode(std::nextafter(mid, 0.0f)), b);
    EXPECT_EQ(e4m3_encode(std::nextafter(mid, 1000.0f)), b + 1);
    EXPECT_EQ(e4m3_encode(-mid), 0x80 | even);
  }
}

TEST(E4m3, SaturatesNaNAndZeros) {
  EXPECT_EQ(e4m3_encode(448.0f), 0x7E);
  EXPECT_EQ(e4m3_encode(460.0f), 0x7E);
  EXPECT_EQ(e4m3_encode(1e9f), 0x7E);
  EXPECT_EQ(e4m3_encode(-1e9f), 0xFE);
  EXPECT_EQ(e4m3_encode(INFINITY), 0x7E);
  EXPECT_EQ(e4m3_encode(-INFINITY), 0xFE);
  EXPECT_EQ(e4m3_encode(NAN), 0x7F);
  EXPECT_EQ(e4m3_encode(0.0f), 0x00);
  EXPECT_EQ(e4m3_encode(-0.0f), 0x80);
  EXPECT_EQ(e4m3_encode(std::ldexp(1.0f, -10)), 0x00);  // half the smallest subnormal: tie to even 0
  EXPECT_EQ(e4m3_encode(std::ldexp(1.5f, -10)), 0x01);
  EXPECT_EQ(e4m3_encode(1e-6f), 0x00);
}

TEST(Packing, LowNibbleIsTheLowerIndex) {
  EXPECT_EQ(pack_e2m1(0x3, 0xA), 0xA3);
  EXPECT_EQ(unpack_lo(0xA3), 0x3);
  EXPECT_EQ(unpack_hi(0xA3), 0xA);
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // tie -> even
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie -> even (up)
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x3F808001u)), 0x3F81);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_EQ(bf16_to_float(float_to_bf16(INFINITY)), INFINITY);
}
