// Router logits -> top-k ids and weights for the three routing methods.
#include <gtest/gtest.h>

#include <cmath>

#include "fp4moe/error.hpp"
#include "fp4moe/presets.hpp"
#include "fp4moe/routing.hpp"

using namespace fp4moe;

namespace {
Routing run(const std::vector<float>& logits, int64_t E, int64_t k, const RoutingSpec& s) {
  return route({logits.data(), DType::F32, {static_cast<int64_t>(logits.size()) / E, E}}, k, s);
}
}  // namespace

TEST(Routing, SoftmaxTopKRenormalized) {
  std::vector<float> l = {0.0f, 2.0f, 1.0f, 2.0f};  // tie between 1 and 3 -> lower id first
  RoutingSpec s{RoutingMethod::SoftmaxTopK, true, 1, 1, 1.0f, {}};
  auto r = run(l, 4, 2, s);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 3}));
  EXPECT_FLOAT_EQ(r.weights[0], 0.5f);
  EXPECT_FLOAT_EQ(r.weights[1], 0.5f);
  s.renormalize = false;
  r = run(l, 4, 2, s);
  const double z = 1 + 2 * std::exp(2.0) + std::exp(1.0);
  EXPECT_NEAR(r.weights[0], std::exp(2.0) / z, 1e-6);
}

TEST(Routing, TopKThenSoftmax) {
  std::vector<float> l = {3.0f, 1.0f, 0.0f, 2.0f};
  RoutingSpec s{RoutingMethod::TopKSoftmax, false, 1, 1, 1.0f, {}};
  auto r = run(l, 4, 2, s);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 3}));
  EXPECT_NEAR(r.weights[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(r.weights[0] + r.weights[1], 1.0, 1e-6);
}

TEST(Routing, SigmoidGroupedWithBiasAndScaling) {
  // 8 experts in 4 groups of 2, keep 2 groups, top-2. The bias changes the choice, not the weight.
  std::vector<float> l = {5.0f, 4.0f, -1.0f, -1.0f, 0.0f, 0.0f, 3.0f, -5.0f};
  RoutingSpec s{RoutingMethod::SigmoidGroupedTopK, true, 4, 2, 2.5f, {0, 0, 0, 0, 0, 0, 0, 0}};
  auto r = run(l, 8, 2, s);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
  auto sig = [](double v) { return 1 / (1 + std::exp(-v)); };
  EXPECT_NEAR(r.weights[0], 2.5 * sig(5) / (sig(5) + sig(4)), 1e-5);
  // A large bias on expert 4 brings group 2 in and expert 4 first; its weight stays sigmoid(0).
  s.correction_bias[4] = 10.0f;
  s.renormalize = false;
  r = run(l, 8, 2, s);
  EXPECT_EQ(r.ids[0], 4);
  EXPECT_NEAR(r.weights[0], 2.5 * 0.5, 1e-6);
  // Group selection excludes a strong single expert in a weak group: group 3 = {3, -5} scores
  // sigmoid(3)+sigmoid(-5) < group 0 and group 2 (with the bias).
  EXPECT_EQ(r.ids[1], 0);
}

TEST(Routing, RejectsNonFiniteLogitsAndBadSpecs) {
  std::vector<float> l = {0.0f, NAN, 1.0f, 2.0f};
  RoutingSpec s{RoutingMethod::SoftmaxTopK, true, 1, 1, 1.0f, {}};
  try {
    run(l, 4, 2, s);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("router_logits[0, 1]"), std::string::npos) << e.what();
  }
  l[1] = 0.0f;
  EXPECT_THROW(run(l, 4, 5, s), Error);
  RoutingSpec g{RoutingMethod::SigmoidGroupedTopK, true, 3, 1, 1.0f, {}};
  EXPECT_THROW(run(l, 4, 1, g), Error);  // 3 groups do not divide 4 experts
}

TEST(Presets, EveryModelOfTheTableIsThereAndValid) {
  for (const char* n : {"qwen3-30b-a3b", "qwen3-235b-a22b", "qwen3-next-80b-a3b", "nemotron-3-nano-30b-a3b",
                        "nemotron-3-super-120b-a12b", "deepseek-v3", "kimi-k2", "gpt-oss-120b", "gpt-oss-20b",
                        "mixtral-8x7b", "glm-4.5-air"}) {
    const Preset& p = find_preset(n);
    EXPECT_NO_THROW(p.spec().validate()) << n;
  }
  EXPECT_EQ(find_preset("nemotron-3-nano-30b-a3b").activation, Activation::ReLU2);
  EXPECT_EQ(find_preset("deepseek-v3").routing.n_group, 8);
  EXPECT_EQ(find_preset("glm-4.5-air").inter, 1408);
  try {
    find_preset("llama");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("qwen3-30b-a3b"), std::string::npos);
  }
}
