// fp4moe: router logits -> (topk_ids, topk_weights), on the host.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "fp4moe/tensor.hpp"

namespace fp4moe {

enum class RoutingMethod : uint8_t {
  SoftmaxTopK,         // softmax over E, top-k, optional renormalization (Qwen3, Mixtral)
  TopKSoftmax,         // top-k of logits, softmax over the k (gpt-oss)
  SigmoidGroupedTopK,  // sigmoid, + correction bias for the choice, grouped top-k (DeepSeek-V3, Nemotron)
};
const char* to_string(RoutingMethod m);

struct RoutingSpec {
  RoutingMethod method = RoutingMethod::SoftmaxTopK;
  bool renormalize = true;
  int n_group = 1;                     // SigmoidGroupedTopK only
  int topk_group = 1;                  // groups kept
  float routed_scaling_factor = 1.0f;  // multiplies the final weights
  std::vector<float> correction_bias;  // [E] or empty (= 0); SigmoidGroupedTopK only
  std::string describe() const;
};

struct Routing {
  int64_t tokens = 0, topk = 0;
  std::vector<int32_t> ids;     // [T, k], in descending order of the choice score
  std::vector<float> weights;   // [T, k]
};

// logits: [T, E] f32 (bf16 accepted). Ties in a score go to the lower expert id. Non-finite
// logits are an error naming the token and expert (routing input is untrusted).
Routing route(const TensorView& logits, int64_t topk, const RoutingSpec& spec);

}  // namespace fp4moe
