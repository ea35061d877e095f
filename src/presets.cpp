#include "fp4moe/presets.hpp"

#include "fp4moe/error.hpp"

namespace fp4moe {

MoeSpec Preset::spec(Mode mode) const {
  MoeSpec s;
  s.hidden = hidden;
  s.inter = inter;
  s.experts = experts;
  s.topk = topk;
  s.activation = activation;
  s.mode = mode;
  return s;
}

namespace {
RoutingSpec softmax_topk(bool renorm) { return {RoutingMethod::SoftmaxTopK, renorm, 1, 1, 1.0f, {}}; }
RoutingSpec sigmoid_grouped(int groups, int topk_groups, bool renorm, float scale) {
  return {RoutingMethod::SigmoidGroupedTopK, renorm, groups, topk_groups, scale, {}};
}
RoutingSpec topk_softmax() { return {RoutingMethod::TopKSoftmax, false, 1, 1, 1.0f, {}}; }
}  // namespace

const std::vector<Preset>& presets() {
  static const std::vector<Preset> all = {
      {"qwen3-30b-a3b", 2048, 768, 128, 8, 0, 0, Activation::SwiGLU, softmax_topk(true), ""},
      {"qwen3-235b-a22b", 4096, 1536, 128, 8, 0, 0, Activation::SwiGLU, softmax_topk(true), ""},
      {"qwen3-next-80b-a3b", 2048, 512, 512, 10, 1, 512, Activation::SwiGLU, softmax_topk(true),
       "shared expert (sigmoid-gated) not included"},
      {"nemotron-3-nano-30b-a3b", 2688, 1856, 128, 6, 1, 3712, Activation::ReLU2, sigmoid_grouped(1, 1, true, 2.5f),
       "non-gated ReLU^2; shared expert not included"},
      {"nemotron-3-super-120b-a12b", 1024, 2688, 512, 22, 1, 5376, Activation::ReLU2,
       sigmoid_grouped(1, 1, false, 5.0f), "routed experts in the 1024-wide latent space; shared expert not included"},
      {"deepseek-v3", 7168, 2048, 256, 8, 1, 2048, Activation::SwiGLU, sigmoid_grouped(8, 4, true, 2.5f),
       "shared expert not included"},
      {"kimi-k2", 7168, 2048, 384, 8, 1, 2048, Activation::SwiGLU, sigmoid_grouped(1, 1, true, 2.827f),
       "shared expert not included"},
      {"gpt-oss-120b", 2880, 2880, 128, 4, 0, 0, Activation::SwiGLU, topk_softmax(),
       "shape only: plain SwiGLU stands in for gpt-oss's clamped SwiGLU with biases (MXFP4 is not NVFP4)"},
      {"gpt-oss-20b", 2880, 2880, 32, 4, 0, 0, Activation::SwiGLU, topk_softmax(),
       "shape only: plain SwiGLU stands in for gpt-oss's clamped SwiGLU with biases (MXFP4 is not NVFP4)"},
      {"mixtral-8x7b", 4096, 14336, 8, 2, 0, 0, Activation::SwiGLU, softmax_topk(true), ""},
      {"glm-4.5-air", 4096, 1408, 128, 8, 1, 1408, Activation::SwiGLU, sigmoid_grouped(1, 1, true, 1.0f),
       "I = 1408 is not a multiple of 128; shared expert not included"},
  };
  return all;
}

const Preset& find_preset(const std::string& name) {
  std::string names;
  for (const auto& p : presets()) {
    if (p.name == name) return p;
    names += (names.empty() ? "" : ", ") + p.name;
  }
  throw Error("preset: expected one of " + names + ", got \"" + name + "\"");
}

}  // namespace fp4moe
