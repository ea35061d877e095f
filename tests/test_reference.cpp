// The CPU reference MoE: known answers, an independent fp64 re-derivation, conventions,
// numerics modes and argument validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "fp4moe/bf16.hpp"
#include "fp4moe/error.hpp"
#include "fp4moe/format.hpp"
#include "fp4moe/metrics.hpp"
#include "fp4moe/reference.hpp"
#include "fp4moe/synthetic.hpp"

using namespace fp4moe;

namespace {

struct Case {
  NvFp4Layer layer;
  std::vector<uint16_t> x;
  Routing r;
  TensorView xv() const { return {x.data(), DType::BF16, {r.tokens, layer.spec.hidden}}; }
  TensorView ids() const { return {r.ids.data(), DType::I32, {r.tokens, r.topk}}; }
  TensorView wts() const { return {r.weights.data(), DType::F32, {r.tokens, r.topk}}; }
  std::vector<uint16_t> run() const { return reference_moe(layer.spec, layer.view(), xv(), ids(), wts()); }
};

Case make_case(MoeSpec s, int64_t T, uint64_t seed) {
  Case c;
  c.layer = random_nvfp4_layer(s, seed);
  c.x = random_hidden_states(T, s.hidden, seed + 1);
  c.r = random_routing(T, s.experts, s.topk, seed + 2);
  return c;
}

MoeSpec small_spec(Activation act, Mode mode) {
  MoeSpec s;
  s.hidden = 64;
  s.inter = 48;
  s.experts = 6;
  s.topk = 3;
  s.activation = act;
  s.mode = mode;
  return s;
}

// Independent re-derivation in double from fully dequantized weights (W4A16 semantics,
// including the bf16 rounding of h and of the output).
std::vector<double> naive_w4a16(const Case& c) {
  const MoeSpec& s = c.layer.spec;
  const int64_t H = s.hidden, I = s.inter, N1 = s.n1(), k = s.topk, T = c.r.tokens;
  std::vector<double> out(static_cast<size_t>(T * H), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> acc(static_cast<size_t>(H), 0.0);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = c.r.ids[static_cast<size_t>(t * k + j)];
      auto W1 = dequantize_weight(&c.layer.w13[static_cast<size_t>(e * N1 * H / 2)],
                                  &c.layer.w13_scale[static_cast<size_t>(e * N1 * H / 16)], N1, H,
                                  c.layer.w13_scale_2[static_cast<size_t>(e)]);
      auto W2 = dequantize_weight(&c.layer.w2[static_cast<size_t>(e * H * I / 2)],
                                  &c.layer.w2_scale[static_cast<size_t>(e * H * I / 16)], H, I,
                                  c.layer.w2_scale_2[static_cast<size_t>(e)]);
      std::vector<double> y(static_cast<size_t>(N1)), h(static_cast<size_t>(I));
      for (int64_t n = 0; n < N1; ++n) {
        double a = 0;
        for (int64_t i = 0; i < H; ++i) a += bf16_to_float(c.x[static_cast<size_t>(t * H + i)]) * double(W1[n * H + i]);
        y[static_cast<size_t>(n)] = a;
      }
      for (int64_t i = 0; i < I; ++i) {
        double v;
        if (s.activation == Activation::SwiGLU) {
          const double g = y[static_cast<size_t>(i)], u = y[static_cast<size_t>(I + i)];
          v = g / (1 + std::exp(-g)) * u;
        } else {
          v = y[static_cast<size_t>(i)] > 0 ? y[static_cast<size_t>(i)] * y[static_cast<size_t>(i)] : 0;
        }
        h[static_cast<size_t>(i)] = round_bf16(static_cast<float>(v));
      }
      for (int64_t o = 0; o < H; ++o) {
        double a = 0;
        for (int64_t i = 0; i < I; ++i) a += h[static_cast<size_t>(i)] * double(W2[o * I + i]);
        acc[static_cast<size_t>(o)] += c.r.weights[static_cast<size_t>(t * k + j)] * a;
      }
    }
    for (int64_t o = 0; o < H; ++o) out[static_cast<size_t>(t * H + o)] = acc[static_cast<size_t>(o)];
  }
  return out;
}

}  // namespace

TEST(Reference, KnownAnswerByHand) {
  // H = 16, I = 16, E = 2, k = 1, ReLU^2. Expert 1: every FC1 weight 0.5 (code 1, scale 1,
  // global 1), every FC2 weight 1 (code 2). x = 1 everywhere -> y = 8, h = 64,
  // z = 16 * 64 * g2 with g2 = 0.25 -> 256; routing weight 0.5 -> out = 128.
  MoeSpec s;
  s.hidden = 16;
  s.inter = 16;
  s.experts = 2;
  s.topk = 1;
  s.activation = Activation::ReLU2;
  NvFp4Layer L;
  L.spec = s;
  L.w13.assign(2 * 16 * 8, 0x11);
  L.w13_scale.assign(2 * 16, e4m3_encode(1.0f));
  L.w13_scale_2 = {1.0f, 1.0f};
  L.w2.assign(2 * 16 * 8, 0x22);
  L.w2_scale.assign(2 * 16, e4m3_encode(1.0f));
  L.w2_scale_2 = {9.0f, 0.25f};
  std::vector<uint16_t> x(16, float_to_bf16(1.0f));
  std::vector<int32_t> ids = {1};
  std::vector<float> w = {0.5f};
  auto out = reference_moe(s, L.view(), {x.data(), DType::BF16, {1, 16}}, {ids.data(), DType::I32, {1, 1}},
                           {w.data(), DType::F32, {1, 1}});
  for (auto v : out) EXPECT_EQ(bf16_to_float(v), 128.0f);
}

TEST(Reference, MatchesAnIndependentDerivation) {
  for (auto act : {Activation::SwiGLU, Activation::ReLU2}) {
    Case c = make_case(small_spec(act, Mode::W4A16), 5, 42);
    auto out = c.run();
    auto ref = naive_w4a16(c);
    auto st = compare_bf16(out, ref);
    EXPECT_LT(st.rel_l2, 4e-3) << to_string(act);  // bf16 output rounding + rare h flips
    EXPECT_EQ(st.nonfinite, 0);
  }
}

TEST(Reference, GateUpOrderOptionIsASwapOfTheHalves) {
  Case c = make_case(small_spec(Activation::SwiGLU, Mode::W4A16), 4, 3);
  auto a = c.run();
  const MoeSpec s = c.layer.spec;
  const int64_t I = s.inter, H = s.hidden, E = s.experts;
  Case d = c;
  d.layer.spec.gate_up_order = GateUpOrder::UpGate;
  for (int64_t e = 0; e < E; ++e)
    for (int64_t i = 0; i < I; ++i) {
      for (int64_t b = 0; b < H / 2; ++b)
        d.layer.w13[static_cast<size_t>((e * 2 * I + i) * H / 2 + b)] = c.layer.w13[static_cast<size_t>((e * 2 * I + I + i) * H / 2 + b)],
        d.layer.w13[static_cast<size_t>((e * 2 * I + I + i) * H / 2 + b)] = c.layer.w13[static_cast<size_t>((e * 2 * I + i) * H / 2 + b)];
      for (int64_t b = 0; b < H / 16; ++b)
        d.layer.w13_scale[static_cast<size_t>((e * 2 * I + i) * H / 16 + b)] = c.layer.w13_scale[static_cast<size_t>((e * 2 * I + I + i) * H / 16 + b)],
        d.layer.w13_scale[static_cast<size_t>((e * 2 * I + I + i) * H / 16 + b)] = c.layer.w13_scale[static_cast<size_t>((e * 2 * I + i) * H / 16 + b)];
    }
  EXPECT_EQ(d.run(), a);
  Case wrong = c;
  wrong.layer.spec.gate_up_order = GateUpOrder::UpGate;  // same bytes read the other way: differs
  EXPECT_NE(wrong.run(), a);
}

TEST(Reference, DeterministicAndOrderOfPairsIrrelevant) {
  Case c = make_case(small_spec(Activation::SwiGLU, Mode::W4A4), 7, 11);
  c.layer.a13_scale.assign(6, 4.0f / 2688.0f);
  c.layer.a2_scale.assign(6, 0.5f / 2688.0f);
  EXPECT_EQ(c.run(), c.run());
}

TEST(Reference, W4A4QuantizesBothActivations) {
  Case c = make_case(small_spec(Activation::SwiGLU, Mode::W4A16), 6, 5);
  auto a16 = c.run();
  Case q = c;
  q.layer.spec.mode = Mode::W4A4;
  auto a4_noscale = q.run();  // no input scales: global scale 1.0
  std::vector<float> h;
  reference_moe(c.layer.spec, c.layer.view(), c.xv(), c.ids(), c.wts(), &h);
  float ah = 0, ax = 0;
  for (auto v : h) ah = std::max(ah, std::fabs(v));
  for (auto v : c.x) ax = std::max(ax, std::fabs(bf16_to_float(v)));
  q.layer.a13_scale.assign(6, ax / 2688.0f);  // calibrated static scales
  q.layer.a2_scale.assign(6, ah / 2688.0f);
  auto a4 = q.run();
  auto to_d = [](const std::vector<uint16_t>& v) {
    std::vector<double> d(v.size());
    for (size_t i = 0; i < v.size(); ++i) d[i] = bf16_to_float(v[i]);
    return d;
  };
  const auto r16 = to_d(a16);
  EXPECT_NE(a4, a16);
  const double e = compare_bf16(a4_noscale, r16).rel_l2;
  EXPECT_GT(e, 1e-3);  // activations lost precision
  EXPECT_LT(e, 0.5);
  EXPECT_LT(compare_bf16(a4, r16).rel_l2, 0.5);
  EXPECT_NE(a4, a4_noscale);
  q.layer.a2_scale.assign(6, ah / 2688.0f / 64.0f);  // a far too small FC2 scale saturates h
  EXPECT_GT(compare_bf16(q.run(), r16).rel_l2, compare_bf16(a4, r16).rel_l2);
}

TEST(Reference, W4A4IsExactWhenActivationsAreRepresentable) {
  // x on the e2m1 grid times a power of two, a13 = 1: FC1 sees the same operand as W4A16.
  MoeSpec s = small_spec(Activation::ReLU2, Mode::W4A16);
  Case c = make_case(s, 3, 9);
  for (size_t i = 0; i < c.x.size(); ++i) c.x[i] = float_to_bf16(e2m1_decode(static_cast<uint8_t>(i % 16)) * 0.5f);
  std::vector<float> h16, h4;
  reference_moe(s, c.layer.view(), c.xv(), c.ids(), c.wts(), &h16);
  MoeSpec s4 = s;
  s4.mode = Mode::W4A4;
  reference_moe(s4, c.layer.view(), c.xv(), c.ids(), c.wts(), &h4);
  EXPECT_EQ(h16, h4);
}

TEST(Reference, Fp64UnquantizedIsCloseToTheNvfp4Layer) {
  MoeSpec s = small_spec(Activation::SwiGLU, Mode::W4A16);
  s.hidden = 256;
  s.inter = 128;
  auto S = synthetic_layer(s, 1);
  auto x = random_hidden_states(4, s.hidden, 2);
  auto r = random_routing(4, s.experts, s.topk, 3);
  TensorView xv(x.data(), DType::BF16, {4, s.hidden}), iv(r.ids.data(), DType::I32, {4, s.topk}),
      wv(r.weights.data(), DType::F32, {4, s.topk});
  auto ref = reference_moe_fp64(s, S.bf16, xv, iv, wv);
  auto st = compare_bf16(reference_moe(s, S.nvfp4.view(), xv, iv, wv), ref);
  EXPECT_GT(st.rel_l2, 0.01);  // 4-bit weights do cost accuracy
  EXPECT_LT(st.rel_l2, 0.35);
  EXPECT_GT(st.cosine, 0.95);
}

TEST(Reference, EmptyBatchGivesEmptyOutput) {
  Case c = make_case(small_spec(Activation::SwiGLU, Mode::W4A16), 0, 1);
  EXPECT_TRUE(c.run().empty());
}

namespace {
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Reference, RejectsMalformedCallsNamingTheArgument) {
  MoeSpec s = small_spec(Activation::SwiGLU, Mode::W4A16);
  s.experts = 128;
  s.topk = 2;
  Case c = make_case(s, 2, 1);
  // expert id 999 for E = 128
  c.r.ids[1] = 999;
  auto msg = error_of([&] { c.run(); });
  EXPECT_NE(msg.find("topk_ids[0, 1]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("999"), std::string::npos) << msg;
  c.r.ids[1] = -1;
  EXPECT_NE(error_of([&] { c.run(); }).find("topk_ids"), std::string::npos);
  c.r.ids[1] = 5;
  c.r.weights[0] = NAN;
  EXPECT_NE(error_of([&] { c.run(); }).find("topk_weights[0, 0]"), std::string::npos);
  c.r.weights[0] = 0.5f;
  // wrong x shape
  msg = error_of([&] {
    reference_moe(s, c.layer.view(), {c.x.data(), DType::BF16, {1, s.hidden}}, c.ids(), c.wts());
  });
  EXPECT_NE(msg.find("topk_ids: expected shape [1, 2], got shape [2, 2]"), std::string::npos) << msg;
  msg = error_of([&] { reference_moe(s, c.layer.view(), {c.x.data(), DType::BF16, {2, 80}}, c.ids(), c.wts()); });
  EXPECT_NE(msg.find("x: expected shape [*, 64]"), std::string::npos) << msg;
  msg = error_of([&] { reference_moe(s, c.layer.view(), {c.x.data(), DType::F32, {2, 64}}, c.ids(), c.wts()); });
  EXPECT_NE(msg.find("x: expected dtype bfloat16"), std::string::npos) << msg;
  // H = 100 is not a multiple of 16
  MoeSpec bad = s;
  bad.hidden = 100;
  msg = error_of([&] { reference_moe(bad, c.layer.view(), c.xv(), c.ids(), c.wts()); });
  EXPECT_NE(msg.find("hidden (H): expected a positive multiple of 16, got 100"), std::string::npos) << msg;
  bad = s;
  bad.topk = 129;
  EXPECT_NE(error_of([&] { reference_moe(bad, c.layer.view(), c.xv(), c.ids(), c.wts()); }).find("topk"),
            std::string::npos);
  // weight shape mismatch
  MoeWeights w = c.layer.view();
  w.w2.shape[1] = 32;
  msg = error_of([&] { reference_moe(s, w, c.xv(), c.ids(), c.wts()); });
  EXPECT_NE(msg.find("w2: expected shape [128, 64, 24]"), std::string::npos) << msg;
  w = c.layer.view();
  w.w13_scale_2.dtype = DType::BF16;
  EXPECT_NE(error_of([&] { reference_moe(s, w, c.xv(), c.ids(), c.wts()); }).find("w13_scale_2: expected dtype float32"),
            std::string::npos);
}

TEST(Reference, DotProductOrderIsTheDocumentedOne) {
  // Values chosen so that a different association changes the fp32 result.
  std::vector<float> a(16, 1.0f), b(16, 0.0f);
  b[0] = 1e8f;
  b[8] = -1e8f;
  b[1] = 1.0f;
  // lanes: s0 = 1e8 + (-1e8) = 0 (element 8 -> lane 0), s1 = 1 -> total 1
  EXPECT_EQ(dot_fixed_order(a.data(), b.data(), 16), 1.0f);
}
