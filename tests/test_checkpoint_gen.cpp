// Writes small synthetic checkpoints in the naming schemes fp4moe reads (used by
// test_checkpoint and, as the executable fp4moe_make_checkpoint, by the CLI tests).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "fp4moe/bf16.hpp"
#include "fp4moe/checkpoint.hpp"
#include "fp4moe/error.hpp"
#include "fp4moe/format.hpp"
#include "fp4moe/safetensors.hpp"
#include "fp4moe/synthetic.hpp"

namespace fp4moe::testgen {

struct Names {
  std::string prefix, gate, up, down, router, bias, model_type, arch;
};

Names names_for(ckpt::Scheme s, int64_t layer) {
  const std::string L = std::to_string(layer);
  switch (s) {
    case ckpt::Scheme::Qwen3Moe:
      return {"model.layers." + L + ".mlp", "gate_proj", "up_proj", "down_proj", "gate.weight", "", "qwen3_moe", "Qwen3MoeForCausalLM"};
    case ckpt::Scheme::DeepSeek:
      return {"model.layers." + L + ".mlp", "gate_proj", "up_proj", "down_proj", "gate.weight", "gate.e_score_correction_bias",
              "deepseek_v3", "DeepseekV3ForCausalLM"};
    case ckpt::Scheme::NemotronH:
      return {"backbone.layers." + L + ".mixer", "", "up_proj", "down_proj", "gate.weight", "gate.e_score_correction_bias",
              "nemotron_h", "NemotronHForCausalLM"};
    case ckpt::Scheme::Mixtral:
      return {"model.layers." + L + ".block_sparse_moe", "w1", "w3", "w2", "gate.weight", "", "mixtral", "MixtralForCausalLM"};
  }
  return {};
}

MoeSpec spec_for(ckpt::Scheme s) {
  MoeSpec spec;
  spec.hidden = 64;
  spec.inter = 32;
  spec.experts = 8;
  spec.topk = 2;
  spec.activation = s == ckpt::Scheme::NemotronH ? Activation::ReLU2 : Activation::SwiGLU;
  return spec;
}

std::string config_json(ckpt::Scheme s, const MoeSpec& spec, bool nvfp4) {
  const Names n = names_for(s, 0);
  std::string c = "{\n  \"architectures\": [\"" + n.arch + "\"],\n  \"model_type\": \"" + n.model_type + "\",\n";
  c += "  \"hidden_size\": " + std::to_string(spec.hidden) + ",\n  \"num_experts_per_tok\": " + std::to_string(spec.topk) + ",\n";
  if (s == ckpt::Scheme::DeepSeek || s == ckpt::Scheme::NemotronH)
    c += "  \"n_routed_experts\": " + std::to_string(spec.experts) +
         ", \"n_group\": 2, \"topk_group\": 1, \"routed_scaling_factor\": 2.5, \"norm_topk_prob\": true, \"scoring_func\": \"sigmoid\",\n";
  else if (s == ckpt::Scheme::Mixtral)
    c += "  \"num_local_experts\": " + std::to_string(spec.experts) + ",\n";
  else
    c += "  \"num_experts\": " + std::to_string(spec.experts) + ", \"norm_topk_prob\": true,\n";
  if (nvfp4)
    c += "  \"quantization_config\": {\"quant_method\": \"modelopt\", \"quant_algo\": \"NVFP4\", \"group_size\": 16, "
         "\"exclude_modules\": [\"lm_head\", \"*.gate\"]},\n";
  c += "  \"torch_dtype\": \"bfloat16\"\n}\n";
  return c;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  if (!f) throw Error(path + ": cannot write");
}

// Router [E, H] bf16 and correction bias [E] f32 from a fixed pattern.
void add_router(st::Writer& w, const Names& n, const MoeSpec& spec, uint64_t seed) {
  auto logits = random_logits(spec.experts, spec.hidden, seed + 99);
  std::vector<uint16_t> r(logits.size());
  for (size_t i = 0; i < r.size(); ++i) r[i] = float_to_bf16(logits[i] * 0.05f);
  w.add(n.prefix + "." + n.router, st::Dtype::BF16, {spec.experts, spec.hidden}, r);
  if (!n.bias.empty()) {
    std::vector<float> b(static_cast<size_t>(spec.experts));
    for (size_t e = 0; e < b.size(); ++e) b[e] = 0.01f * static_cast<float>(e % 3);
    w.add(n.prefix + "." + n.bias, st::Dtype::F32, {spec.experts}, b);
  }
}

// The bf16 checkpoint of a synthetic layer (every expert kept). shards: 1, or 2 with an index.
void write_bf16(const std::string& dir, ckpt::Scheme s, const SyntheticLayer& S, uint64_t seed, int shards = 1) {
  std::filesystem::create_directories(dir);
  const MoeSpec& spec = S.bf16.spec;
  const Names n = names_for(s, 0);
  const int64_t H = spec.hidden, I = spec.inter;
  st::Writer a, b;
  add_router(a, n, spec, seed);
  std::vector<uint16_t> other(static_cast<size_t>(H * 16), float_to_bf16(0.5f));
  a.add("model.norm.weight", st::Dtype::BF16, {H}, other.data(), static_cast<size_t>(H) * 2);
  for (int64_t e = 0; e < spec.experts; ++e) {
    st::Writer& w = (shards == 2 && e % 2) ? b : a;
    const std::string p = n.prefix + ".experts." + std::to_string(e) + ".";
    const uint16_t* w13 = S.bf16.w13_of(e);
    if (spec.activation == Activation::SwiGLU) {
      w.add(p + n.gate + ".weight", st::Dtype::BF16, {I, H}, w13, static_cast<size_t>(I * H * 2));
      w.add(p + n.up + ".weight", st::Dtype::BF16, {I, H}, w13 + I * H, static_cast<size_t>(I * H * 2));
    } else {
      w.add(p + n.up + ".weight", st::Dtype::BF16, {I, H}, w13, static_cast<size_t>(I * H * 2));
    }
    w.add(p + n.down + ".weight", st::Dtype::BF16, {H, I}, S.bf16.w2_of(e), static_cast<size_t>(H * I * 2));
  }
  if (shards == 1) {
    a.write(dir + "/model.safetensors");
  } else {
    a.write(dir + "/model-00001-of-00002.safetensors");
    b.write(dir + "/model-00002-of-00002.safetensors");
    std::string idx = "{\"metadata\": {}, \"weight_map\": {";
    bool first = true;
    for (const auto& [file, wr] : {std::pair{"model-00001-of-00002.safetensors", &a}, std::pair{"model-00002-of-00002.safetensors", &b}}) {
      st::File f(dir + "/" + file);
      for (const auto& t : f.tensors()) {
        idx += std::string(first ? "" : ", ") + "\"" + t.name + "\": \"" + file + "\"";
        first = false;
      }
      (void)wr;
    }
    write_text(dir + "/model.safetensors.index.json", idx + "}}\n");
  }
  write_text(dir + "/config.json", config_json(s, spec, false));
}

// The ModelOpt NVFP4 checkpoint of a synthetic layer: gate and up are the two halves of the
// fused FC1 (sharing weight_scale_2); input scales from the given amax values (none if <= 0).
void write_nvfp4(const std::string& dir, ckpt::Scheme s, const NvFp4Layer& L, uint64_t seed, float in_amax = 0) {
  std::filesystem::create_directories(dir);
  const MoeSpec& spec = L.spec;
  const Names n = names_for(s, 0);
  const int64_t H = spec.hidden, I = spec.inter, N1 = spec.n1();
  st::Writer w;
  add_router(w, n, spec, seed);
  for (int64_t e = 0; e < spec.experts; ++e) {
    const std::string p = n.prefix + ".experts." + std::to_string(e) + ".";
    const uint8_t* w13 = L.w13.data() + e * N1 * H / 2;
    const uint8_t* s13 = L.w13_scale.data() + e * N1 * H / 16;
    auto lin = [&](const std::string& m, int64_t rows, int64_t cols, const uint8_t* q, const uint8_t* sc, float gs, float ia) {
      w.add(m + ".weight", st::Dtype::U8, {rows, cols / 2}, q, static_cast<size_t>(rows * cols / 2));
      w.add(m + ".weight_scale", st::Dtype::F8_E4M3, {rows, cols / 16}, sc, static_cast<size_t>(rows * cols / 16));
      w.add(m + ".weight_scale_2", st::Dtype::F32, {}, &gs, 4);
      if (in_amax > 0) {
        const float is = ia / (6.0f * 448.0f);
        w.add(m + ".input_scale", st::Dtype::F32, {}, &is, 4);
      }
    };
    const float g1 = L.w13_scale_2[static_cast<size_t>(e)], g2 = L.w2_scale_2[static_cast<size_t>(e)];
    if (spec.activation == Activation::SwiGLU) {
      lin(p + n.gate, I, H, w13, s13, g1, in_amax);
      lin(p + n.up, I, H, w13 + I * H / 2, s13 + I * H / 16, g1, in_amax);
    } else {
      lin(p + n.up, I, H, w13, s13, g1, in_amax);
    }
    lin(p + n.down, H, I, L.w2.data() + e * H * I / 2, L.w2_scale.data() + e * H * I / 16, g2, 2 * in_amax);
  }
  w.write(dir + "/model.safetensors");
  write_text(dir + "/config.json", config_json(s, spec, true));
  write_text(dir + "/hf_quant_config.json",
             "{\"producer\": {\"name\": \"modelopt\", \"version\": \"0.0-test\"}, \"quantization\": {\"quant_algo\": "
             "\"NVFP4\", \"kv_cache_quant_algo\": null, \"group_size\": 16, \"exclude_modules\": [\"lm_head\", \"*.gate\"]}}\n");
}

}  // namespace fp4moe::testgen

#ifdef FP4MOE_CKPT_GEN_MAIN
// usage: fp4moe_make_checkpoint DIR qwen3|deepseek|nemotron|mixtral bf16|nvfp4 [calib]
int main(int argc, char** argv) {
  using namespace fp4moe;
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s DIR qwen3|deepseek|nemotron|mixtral bf16|nvfp4 [calib]\n", argv[0]);
    return 2;
  }
  try {
    const std::string sch = argv[2];
    ckpt::Scheme s = sch == "qwen3" ? ckpt::Scheme::Qwen3Moe : sch == "deepseek" ? ckpt::Scheme::DeepSeek
                   : sch == "nemotron" ? ckpt::Scheme::NemotronH : sch == "mixtral" ? ckpt::Scheme::Mixtral
                   : throw Error("scheme: expected qwen3, deepseek, nemotron or mixtral, got " + sch);
    const MoeSpec spec = testgen::spec_for(s);
    const SyntheticLayer S = synthetic_layer(spec, 7);
    if (std::string(argv[3]) == "bf16") testgen::write_bf16(argv[1], s, S, 7);
    else testgen::write_nvfp4(argv[1], s, S.nvfp4, 7, 4.0f);
    if (argc > 4) {  // calibration activations for quantize --calib
      st::Writer w;
      auto x = random_hidden_states(16, spec.hidden, 3);
      w.add(testgen::names_for(s, 0).prefix + ".input", st::Dtype::BF16, {16, spec.hidden}, x);
      w.write(std::string(argv[1]) + "/" + argv[4]);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
#endif
