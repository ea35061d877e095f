// fp4moe: the MoE layer shapes of real models (see docs/models.md of the project brief).
#pragma once
#include <string>
#include <vector>

#include "fp4moe/moe.hpp"
#include "fp4moe/routing.hpp"

namespace fp4moe {

struct Preset {
  std::string name;
  int64_t hidden, inter, experts, topk;
  int64_t shared_experts, shared_inter;  // informational: the shared expert is not part of the routed MoE
  Activation activation;
  RoutingSpec routing;
  std::string note;

  MoeSpec spec(Mode mode = Mode::W4A16) const;
};

const std::vector<Preset>& presets();
// Throws fp4moe::Error listing the valid names when `name` is unknown.
const Preset& find_preset(const std::string& name);

}  // namespace fp4moe
