// fp4moe: Hugging Face checkpoints - ModelOpt NVFP4 (or bf16) MoE layers.
//
// A checkpoint is a directory (config.json, hf_quant_config.json, model.safetensors or shards
// listed in model.safetensors.index.json) or a single .safetensors file. Expert tensors are
// found under these naming schemes (L = layer, E = expert):
//   qwen3-moe   model.layers.L.mlp.experts.E.{gate_proj,up_proj,down_proj}      router mlp.gate
//   deepseek    as qwen3-moe, plus mlp.gate.e_score_correction_bias (DeepSeek-V3, Kimi-K2)
//   nemotron-h  backbone.layers.L.mixer.experts.E.{up_proj,down_proj} (non-gated ReLU^2),
//               router mixer.gate.weight + mixer.gate.e_score_correction_bias
//   mixtral     model.layers.L.block_sparse_moe.experts.E.{w1,w2,w3}, router block_sparse_moe.gate
// Per linear: weight (U8 [N, K/2] NVFP4, or BF16/F16/F32 [N, K]), weight_scale (F8_E4M3 [N, K/16]),
// weight_scale_2 (F32 scalar), input_scale (F32 scalar, optional).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fp4moe/moe.hpp"
#include "fp4moe/routing.hpp"
#include "fp4moe/safetensors.hpp"
#include "fp4moe/synthetic.hpp"

namespace fp4moe::ckpt {

enum class Scheme : uint8_t { Qwen3Moe, DeepSeek, NemotronH, Mixtral };
const char* to_string(Scheme s);

struct QuantConfig {
  bool nvfp4 = false;       // quant_algo NVFP4
  std::string source;       // which file said so ("" when none)
  std::string producer;     // e.g. "modelopt 0.29.0"
  std::string quant_algo;   // as written ("" when the checkpoint is not quantized)
  int group_size = 0;
  std::vector<std::string> exclude_modules;  // fnmatch wildcards
  // True when `module` (a tensor name without .weight etc.) matches an exclude pattern.
  bool excluded(const std::string& module) const;
};

struct MoeLayerInfo {
  int64_t layer = 0;
  std::string prefix;  // e.g. "model.layers.3.mlp"
  Scheme scheme = Scheme::Qwen3Moe;
  int64_t experts = 0;  // expert ids 0..experts-1 are all present
  int64_t hidden = 0, inter = 0;
  bool gated = true;
  bool quantized = false;        // NVFP4 expert weights
  bool has_input_scale = false;  // on every expert linear
  std::string router, correction_bias;  // tensor names, "" when absent
  std::string gate_name, up_name, down_name;  // projection names of this scheme
};

class Checkpoint {
 public:
  // Opens and validates every file (headers only; data stays mapped, not read).
  explicit Checkpoint(const std::string& path);
  ~Checkpoint();
  Checkpoint(Checkpoint&&) noexcept;
  Checkpoint& operator=(Checkpoint&&) noexcept;

  const std::string& path() const;
  std::string architecture() const;  // config.json architectures[0], or ""
  std::string model_type() const;    // config.json model_type, or ""
  const QuantConfig& quant() const;
  const std::vector<MoeLayerInfo>& moe_layers() const;
  const MoeLayerInfo& moe_layer(int64_t layer) const;  // throws listing the MoE layers
  const std::vector<std::string>& files() const;
  size_t tensor_count() const;
  bool has(const std::string& name) const;
  const st::File& file_of(const std::string& name) const;  // throws naming the tensor
  const st::TensorInfo& info(const std::string& name) const;
  std::vector<std::string> tensor_names() const;  // sorted
  // Routing and shapes from config.json (with the scheme's conventions where a key is absent).
  int64_t topk() const;
  RoutingSpec routing(const MoeLayerInfo& L) const;  // without the correction bias
  Activation activation(const MoeLayerInfo& L) const;
  // config.json text ("" when absent) and hf_quant_config.json text.
  const std::string& config_text() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> p_;
};

struct LoadedLayer {
  MoeLayerInfo info;
  MoeSpec spec;
  NvFp4Layer nvfp4;                // in fp4moe's layout (fused FC1 in GateUp order)
  std::optional<Bf16Layer> bf16;   // the originals, when the checkpoint holds bf16 experts
  // When gate/up scales had to be requantized: the checkpoint's own FC1 (fused, unfolded)
  // with the up half's weight_scale_2 apart, so that the fp64 reference sees the checkpoint's
  // values, not fp4moe's requantized ones.
  std::optional<NvFp4Layer> original;
  std::vector<float> up_scale_2;   // [E], with `original` only
  RoutingSpec routing;             // with the correction bias
  std::vector<float> router;       // [E, H] router weight (float)
  std::vector<std::string> notes;  // what was done to the tensors, for the user
};

// Loads MoE layer `layer` (every expert, the router and the correction bias). bf16/f16/f32
// experts are quantized here with ModelOpt's algorithm (gate and up sharing one
// weight_scale_2) and kept as the originals. progress(done, total) per expert.
LoadedLayer load_moe_layer(const Checkpoint& ck, int64_t layer,
                           const std::function<void(int64_t, int64_t)>& progress = {});

// The layer in fp64 from the checkpoint's dequantized NVFP4 weights (e2m1 * e4m3 *
// weight_scale_2, exact in fp64), no rounding of activations; the same math as
// reference_moe_fp64. Uses L.original when present.
std::vector<double> reference_moe_fp64_dequant(const LoadedLayer& L, const TensorView& x, const TensorView& topk_ids,
                                               const TensorView& topk_weights);

}  // namespace fp4moe::ckpt

namespace fp4moe::ckpt {

// ---- the quantizer: bf16/f16/f32 checkpoint -> ModelOpt-format NVFP4 checkpoint ----
struct QuantizeOptions {
  // A safetensors file of sample activations: "<moe prefix>.input" [T, H] (e.g.
  // "model.layers.3.mlp.input") calibrates every expert of that MoE layer (FC1: amax of the
  // tokens; FC2: amax of each expert's activation output over all tokens); "<module>.input"
  // [T, K] calibrates that one linear. "" = no calibration data.
  std::string calib_path;
  bool no_input_scale = false;  // required when calib_path is empty: says "leave input_scale out"
  // Modules (tensor names without ".weight") left unquantized, fnmatch wildcards.
  std::vector<std::string> exclude = {"lm_head", "*embed_tokens*", "*embeddings*", "*.gate", "*.router",
                                      "*shared_expert_gate*", "*norm*"};
  std::function<void(int64_t, int64_t)> progress;  // (linears done, linears total)
};
struct QuantizeReport {
  int64_t quantized = 0, copied = 0, calibrated = 0;
  std::vector<std::string> files;  // written, in order
  std::vector<std::string> notes;
};
// Writes out_dir/<same shard names>.safetensors, the index when there are several shards,
// hf_quant_config.json and config.json (with quantization_config). Linears that are
// siblings of one fused GEMM (gate_proj/up_proj, w1/w3, q/k/v_proj) share weight_scale_2
// and input_scale, as ModelOpt exports them. Weights are bit-identical to quantize_weight.
QuantizeReport quantize_checkpoint(const std::string& in, const std::string& out_dir, const QuantizeOptions& opt);

}  // namespace fp4moe::ckpt
