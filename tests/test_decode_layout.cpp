// The decode backend's prepared weight layout (host code, no GPU needed): every weight of
// every task decodes back to the source weight, zero padding included.
#include <gtest/gtest.h>

#include "cuda/backend_api.hpp"
#include "cuda/decode_layout.hpp"
#include "fp4moe/format.hpp"
#include "fp4moe/presets.hpp"
#include "fp4moe/synthetic.hpp"

using namespace fp4moe;
using namespace fp4moe::cuda;

namespace {
void check_layout(MoeSpec s) {
  NvFp4Layer L = random_nvfp4_layer(s, 77);
  DecodePrepared P = prepare_decode_weights(s, L.w13.data(), L.w13_scale.data(), L.w2.data(), L.w2_scale.data());
  const DecodeDims& d = P.dims;
  const int64_t N1 = s.n1();
  auto src = [&](const std::vector<uint8_t>& packed, const std::vector<uint8_t>& scales, int64_t e, int64_t rows,
                 int64_t K, int64_t row, int64_t k) {
    const uint8_t b = packed[static_cast<size_t>(((e * rows + row) * K + k) / 2)];
    const uint8_t code = (k & 1) ? (b >> 4) : (b & 0xF);
    return e2m1_decode(code) * e4m3_decode(scales[static_cast<size_t>((e * rows + row) * (K / 16) + k / 16)]);
  };
  int64_t checked = 0;
  for (int64_t e = 0; e < s.experts; ++e) {
    for (int64_t w = 0; w < d.n1_tasks; ++w)
      for (int t = 0; t < 2; ++t)
        for (int rr = 0; rr < 16; ++rr) {
          int64_t row = -1;
          if (d.swiglu) {
            const int64_t i = 16 * w + 8 * t + rr % 8;
            const bool gate = rr < 8;
            const bool gate_first = s.gate_up_order == GateUpOrder::GateUp;
            if (i < s.inter) row = (gate == gate_first) ? i : s.inter + i;
          } else {
            const int64_t i = 32 * w + 16 * t + rr;
            if (i < s.inter) row = i;
          }
          const uint8_t* block = P.w1.data() + e * d.expert1_bytes;
          for (int64_t k = 0; k < d.Hk; ++k) {
            const float want = (row >= 0 && k < s.hidden) ? src(L.w13, L.w13_scale, e, N1, s.hidden, row, k) : 0.0f;
            ASSERT_EQ(decode_prepared_weight(block, d.chunks1, d.n1_tasks, w, t, rr, k), want)
                << "FC1 e=" << e << " task=" << w << " tile=" << t << " row=" << rr << " k=" << k;
            ++checked;
          }
        }
    for (int64_t w = 0; w < d.n2_tasks; ++w)
      for (int t = 0; t < 2; ++t)
        for (int rr = 0; rr < 16; ++rr) {
          const int64_t o = 32 * w + 16 * t + rr;
          const uint8_t* block = P.w2.data() + e * d.expert2_bytes;
          for (int64_t k = 0; k < d.Ik; ++k) {
            const float want = (o < s.hidden && k < s.inter) ? src(L.w2, L.w2_scale, e, s.hidden, s.inter, o, k) : 0.0f;
            ASSERT_EQ(decode_prepared_weight(block, d.chunks2, d.n2_tasks, w, t, rr, k), want) << "FC2 e=" << e << " o=" << o << " k=" << k;
            ++checked;
          }
        }
  }
  EXPECT_GT(checked, 0);
}
MoeSpec spec(int64_t H, int64_t I, Activation a, GateUpOrder o = GateUpOrder::GateUp) {
  MoeSpec s;
  s.hidden = H;
  s.inter = I;
  s.experts = 2;
  s.topk = 1;
  s.activation = a;
  s.gate_up_order = o;
  return s;
}
}  // namespace

TEST(DecodeLayout, SwiGLUWeightsRoundTrip) { check_layout(spec(576, 80, Activation::SwiGLU)); }
TEST(DecodeLayout, SwiGLUUpGateOrder) { check_layout(spec(128, 48, Activation::SwiGLU, GateUpOrder::UpGate)); }
TEST(DecodeLayout, ReLU2WeightsRoundTripWithPadding) { check_layout(spec(48, 112, Activation::ReLU2)); }
TEST(DecodeLayout, DimsOfRealShapes) {
  auto d = decode_dims(spec(2688, 1856, Activation::ReLU2));
  EXPECT_EQ(d.Hk, 2688);
  EXPECT_EQ(d.Ik, 1856);
  EXPECT_EQ(d.n1_tasks, 58);
  EXPECT_EQ(d.n2_tasks, 84);
  d = decode_dims(spec(4096, 1408, Activation::SwiGLU));
  EXPECT_EQ(d.n1_tasks, 88);
  EXPECT_EQ(d.chunks2, 22);
  EXPECT_EQ(d.expert2_bytes, (3 + 22) * d.n2_tasks * 2 * 512);
}

// A shared-memory limit above every routing table below (an H100's or H200's 227 KB a CTA).
constexpr size_t kLimit = 227 * 1024;

// The per-call launch shape (decode_launch_shapes), with a stand-in for the occupancy query: a
// routing table smaller than max_tokens' fits one more CTA per SM.
TEST(DecodeLaunchShapes, LargerGridOnlyWhereFc1OverflowsAndTwoRoundsFit) {
  const DecodeDims d = decode_dims(find_preset("gpt-oss-120b").spec());  // E 128, top-4, H = I = 2880
  ASSERT_EQ(d.n1_tasks, 180);
  ASSERT_EQ(d.n2_tasks, 90);
  const size_t smem64 = decode_smem_bytes(64 * 4, 128);
  const auto shapes = decode_launch_shapes(d, 64, kLimit, 132, [&](size_t smem) { return smem < smem64 ? 5 : 4; });
  ASSERT_EQ(shapes.size(), 64u);
  // 4 CTAs per SM: 2112 warps. FC1 tasks at their most: 180 per pair. T = 3: 2160 overflow the
  // first round, and all 3309 tasks fit two rounds of 5 CTAs (2640 warps); T = 4: 2880 + 1440 +
  // 92 = 4412 fit; T = 5: 3600 + 1800 + 60 = 5460 do not.
  for (int t = 1; t <= 64; ++t) {
    const DecodeLaunchShape& s = shapes[static_cast<size_t>(t - 1)];
    const bool larger = t == 3 || t == 4;
    EXPECT_EQ(s.ctas_per_sm, larger ? 5 : 4) << "T = " << t;
    EXPECT_EQ(s.smem, larger ? decode_smem_bytes(t * 4, 128) : smem64) << "T = " << t;
    EXPECT_EQ(s.fc1_first_round, t <= 3) << "T = " << t;  // 2880 FC1 tasks at T = 4 exceed 2640 warps
  }
}

// A smaller max_tokens gets, token count by token count, the shapes of max_tokens 64 (the table of
// kDecodeTableTokens tokens) - the grid the benchmarks measure - not the extra CTA per SM its own
// smaller table would allow; but its own table where the 64-token one exceeds the shared-memory
// limit or would leave fewer than kDecodeTableCtas CTAs per SM.
TEST(DecodeLaunchShapes, SmallerMaxTokensKeepTheTableTokensShapes) {
  const DecodeDims d = decode_dims(find_preset("gpt-oss-120b").spec());
  const size_t smem64 = decode_smem_bytes(64 * 4, 128), smem8 = decode_smem_bytes(8 * 4, 128);
  auto occupancy = [&](size_t smem) { return smem < smem64 ? 5 : 4; };
  const auto wide = decode_launch_shapes(d, 64, kLimit, 132, occupancy);
  const auto small = decode_launch_shapes(d, 8, kLimit, 132, occupancy);
  ASSERT_EQ(small.size(), 8u);
  for (size_t t = 0; t < small.size(); ++t) {
    EXPECT_EQ(small[t].smem, wide[t].smem) << "T = " << t + 1;
    EXPECT_EQ(small[t].ctas_per_sm, wide[t].ctas_per_sm) << "T = " << t + 1;
    EXPECT_EQ(small[t].fc1_first_round, wide[t].fc1_first_round) << "T = " << t + 1;
  }
  EXPECT_EQ(small[0].ctas_per_sm, 4);
  // the 64-token table over the limit: the own table, one CTA more at one token
  const auto own = decode_launch_shapes(d, 8, smem64 - 1, 132, occupancy);
  EXPECT_EQ(own[0].smem, smem8);
  EXPECT_EQ(own[0].ctas_per_sm, 5);
  // the 64-token table leaving 3 CTAs per SM: the own table
  const auto three = decode_launch_shapes(d, 8, kLimit, 132, [&](size_t smem) { return smem < smem64 ? 4 : 3; });
  EXPECT_EQ(three[0].smem, smem8);
  EXPECT_EQ(three[0].ctas_per_sm, 4);
}

// The first round counts FC1 tasks only (W4A4's quantization of x is done in every CTA's prologue,
// not as tasks), and exactly: a batch whose FC1 tasks fill the round fits it.
TEST(DecodeLaunchShapes, FirstRoundCountsTheFc1Tasks) {
  const DecodeDims d = decode_dims(find_preset("deepseek-v3").spec(Mode::W4A4));  // n1_tasks 128, top-8
  ASSERT_EQ(d.n1_tasks, 128);
  auto four = [](size_t) { return 4; };
  // 128 SMs x 4 CTAs x 4 warps = 2048 warps; T = 2: 16 pairs, 2048 FC1 tasks; T = 3: 3072
  const auto shapes = decode_launch_shapes(d, 64, kLimit, 128, four);
  EXPECT_TRUE(shapes[0].fc1_first_round);
  EXPECT_TRUE(shapes[1].fc1_first_round);
  EXPECT_FALSE(shapes[2].fc1_first_round);
  EXPECT_EQ(shapes[1].ctas_per_sm, 4);
}
