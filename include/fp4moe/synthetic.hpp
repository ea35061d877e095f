// fp4moe: deterministic seeded synthetic layers and inputs (for the CLI, tests, benchmarks).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "fp4moe/moe.hpp"
#include "fp4moe/routing.hpp"

namespace fp4moe {

// Owning host storage of one NVFP4 MoE layer in the on-disk layout, plus views of it.
struct NvFp4Layer {
  MoeSpec spec;
  std::vector<uint8_t> w13, w13_scale, w2, w2_scale;
  std::vector<float> w13_scale_2, w2_scale_2, a13_scale, a2_scale;  // a*: [E] or empty
  MoeWeights view() const;
  size_t expert_bytes() const;  // NVFP4 bytes (values + block scales) of one expert
};

// bf16 weights of some experts of one layer (the unquantized originals): expert e's FC1
// [N1, H] and FC2 [H, I] when has(e). Synthetic values ~ N(0, 1/fan_in) with per-row gains and
// rare outliers, from a counter-based generator: expert e's values depend only on (seed, e).
struct Bf16Layer {
  MoeSpec spec;
  std::vector<int32_t> slot;  // [E]: index into the storage below, or -1
  std::vector<uint16_t> w13, w2;
  bool has(int64_t e) const { return slot[static_cast<size_t>(e)] >= 0; }
  const uint16_t* w13_of(int64_t e) const;
  const uint16_t* w2_of(int64_t e) const;
};

struct SyntheticLayer {
  NvFp4Layer nvfp4;  // every expert, quantized with ModelOpt's algorithm
  Bf16Layer bf16;    // the originals of the experts in keep_bf16 (all when keep_bf16 is empty)
};
// Generates the bf16 experts one at a time and quantizes each (threads); progress is called
// with (experts done, experts total) when given.
SyntheticLayer synthetic_layer(const MoeSpec& spec, uint64_t seed, const std::vector<bool>& keep_bf16 = {},
                               const std::function<void(int64_t, int64_t)>& progress = {});

// A random NVFP4 layer drawn directly in the packed format (random codes, e4m3 block scales
// spread over 2^-6..2^3, global scales near 1/2688): fast, for kernel tests and benchmarks.
NvFp4Layer random_nvfp4_layer(const MoeSpec& spec, uint64_t seed);

// Static input scales (dequant direction) calibrated as amax / (6 * 448) over the given
// activations; sets a13_scale and a2_scale to one value per expert.
void set_input_scales(NvFp4Layer& layer, float fc1_amax, float fc2_amax);

std::vector<uint16_t> random_hidden_states(int64_t tokens, int64_t hidden, uint64_t seed);  // bf16, ~N(0,1)
std::vector<float> random_logits(int64_t tokens, int64_t experts, uint64_t seed);
// Random distinct expert ids per token (uniform) with positive weights summing to 1.
Routing random_routing(int64_t tokens, int64_t experts, int64_t topk, uint64_t seed);

}  // namespace fp4moe
