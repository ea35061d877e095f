// ModelOpt NVFP4 / bf16 checkpoints: layer discovery, loading, gate/up scale handling, quantizer.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <cmath>

#include "fp4moe/checkpoint.hpp"
#include "fp4moe/error.hpp"
#include "fp4moe/metrics.hpp"
#include "fp4moe/reference.hpp"
#include "test_checkpoint_gen.cpp"

using namespace fp4moe;
namespace fs = std::filesystem;

namespace {

std::string dir(const std::string& name) {
  const auto d = fs::temp_directory_path() / ("fp4moe_ck_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  return d.string();
}

void expect_same_nvfp4(const NvFp4Layer& a, const NvFp4Layer& b) {
  EXPECT_EQ(a.w13, b.w13);
  EXPECT_EQ(a.w13_scale, b.w13_scale);
  EXPECT_EQ(a.w13_scale_2, b.w13_scale_2);
  EXPECT_EQ(a.w2, b.w2);
  EXPECT_EQ(a.w2_scale, b.w2_scale);
  EXPECT_EQ(a.w2_scale_2, b.w2_scale_2);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

const ckpt::Scheme kSchemes[] = {ckpt::Scheme::Qwen3Moe, ckpt::Scheme::DeepSeek, ckpt::Scheme::NemotronH, ckpt::Scheme::Mixtral};

}  // namespace

TEST(Checkpoint, NvFp4LayersOfEverySchemeLoadBitExact) {
  for (auto s : kSchemes) {
    SCOPED_TRACE(ckpt::to_string(s));
    const MoeSpec spec = testgen::spec_for(s);
    const SyntheticLayer S = synthetic_layer(spec, 11);
    const std::string d = dir(std::string("nv_") + ckpt::to_string(s));
    testgen::write_nvfp4(d, s, S.nvfp4, 11, 4.0f);
    const ckpt::Checkpoint ck(d);
    ASSERT_EQ(ck.moe_layers().size(), 1u);
    const auto& info = ck.moe_layers()[0];
    EXPECT_EQ(info.scheme, s);
    EXPECT_TRUE(info.quantized);
    EXPECT_EQ(info.experts, spec.experts);
    EXPECT_EQ(info.hidden, spec.hidden);
    EXPECT_EQ(info.inter, spec.inter);
    EXPECT_EQ(info.gated, s != ckpt::Scheme::NemotronH);
    EXPECT_TRUE(ck.quant().nvfp4);
    EXPECT_EQ(ck.quant().group_size, 16);
    EXPECT_TRUE(ck.quant().excluded(info.prefix + ".gate"));
    EXPECT_FALSE(ck.quant().excluded(info.prefix + ".experts.0.up_proj"));
    const auto L = ckpt::load_moe_layer(ck, 0);
    EXPECT_EQ(L.spec.activation, spec.activation);
    EXPECT_EQ(L.spec.topk, 2);
    expect_same_nvfp4(L.nvfp4, S.nvfp4);
    ASSERT_EQ(L.nvfp4.a13_scale.size(), 8u);
    EXPECT_EQ(L.nvfp4.a13_scale[3], 4.0f / (6.0f * 448.0f));
    EXPECT_EQ(L.nvfp4.a2_scale[3], 8.0f / (6.0f * 448.0f));
    EXPECT_FALSE(L.original.has_value());
    EXPECT_EQ(L.router.size(), static_cast<size_t>(spec.experts * spec.hidden));
    const bool sigmoid = s == ckpt::Scheme::DeepSeek || s == ckpt::Scheme::NemotronH;
    EXPECT_EQ(L.routing.method, sigmoid ? RoutingMethod::SigmoidGroupedTopK : RoutingMethod::SoftmaxTopK);
    if (sigmoid) {
      EXPECT_EQ(L.routing.n_group, 2);
      EXPECT_FLOAT_EQ(L.routing.routed_scaling_factor, 2.5f);
      ASSERT_EQ(L.routing.correction_bias.size(), 8u);
      EXPECT_FLOAT_EQ(L.routing.correction_bias[2], 0.02f);
    } else {
      EXPECT_TRUE(L.routing.correction_bias.empty());
    }
  }
}

TEST(Checkpoint, Bf16LayerIsQuantizedLikeModelOpt) {
  for (auto s : {ckpt::Scheme::Qwen3Moe, ckpt::Scheme::NemotronH}) {
    const MoeSpec spec = testgen::spec_for(s);
    const SyntheticLayer S = synthetic_layer(spec, 5);
    const std::string d = dir(std::string("bf_") + ckpt::to_string(s));
    testgen::write_bf16(d, s, S, 5, /*shards=*/2);
    const ckpt::Checkpoint ck(d);
    EXPECT_EQ(ck.files().size(), 2u);
    const auto L = ckpt::load_moe_layer(ck, 0);
    EXPECT_FALSE(ck.moe_layers()[0].quantized);
    expect_same_nvfp4(L.nvfp4, S.nvfp4);
    ASSERT_TRUE(L.bf16.has_value());
    EXPECT_EQ(L.bf16->w13, S.bf16.w13);
    EXPECT_EQ(L.bf16->w2, S.bf16.w2);
  }
}

TEST(Checkpoint, BadCheckpointsAreClearErrors) {
  const MoeSpec spec = testgen::spec_for(ckpt::Scheme::Qwen3Moe);
  const SyntheticLayer S = synthetic_layer(spec, 5);
  const std::string d = dir("bad");
  testgen::write_bf16(d, ckpt::Scheme::Qwen3Moe, S, 5, 2);
  // the index names a tensor its file lacks
  {
    std::ofstream f(d + "/model.safetensors.index.json");
    f << R"({"weight_map": {"model.layers.0.mlp.experts.0.up_proj.weight": "model-00002-of-00002.safetensors"}})";
  }
  auto e = error_of([&] { ckpt::Checkpoint ck(d); });
  EXPECT_NE(e.find("model.layers.0.mlp.experts.0.up_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("not found"), std::string::npos) << e;
  {
    std::ofstream f(d + "/model.safetensors.index.json");
    f << R"({"weight_map": {"x": "../etc/passwd"}})";
  }
  e = error_of([&] { ckpt::Checkpoint ck(d); });
  EXPECT_NE(e.find("file name in the same directory"), std::string::npos) << e;
  fs::remove(d + "/model.safetensors.index.json");
  // a missing expert: drop expert 3's tensors (shard 2 holds odd experts)
  {
    st::File f(d + "/model-00002-of-00002.safetensors");
    st::Writer w;
    for (const auto& t : f.tensors())
      if (t.name.find("experts.3.") == std::string::npos) w.add(t.name, t.dtype, t.shape, f.bytes(t).data(), t.nbytes());
    w.write(d + "/model-00002-of-00002.safetensors");
  }
  e = error_of([&] { ckpt::Checkpoint ck(d); });
  EXPECT_NE(e.find("model.layers.0.mlp.experts.3.gate_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("missing"), std::string::npos) << e;
  e = error_of([&] { ckpt::Checkpoint ck(dir("nothing_here")); });
  EXPECT_NE(e.find("not found"), std::string::npos) << e;

  // NVFP4 with a wrong weight_scale shape and with another quant_algo
  const std::string d2 = dir("bad_nv");
  testgen::write_nvfp4(d2, ckpt::Scheme::Qwen3Moe, S.nvfp4, 5);
  {
    st::File f(d2 + "/model.safetensors");
    st::Writer w;
    for (const auto& t : f.tensors()) {
      if (t.name == "model.layers.0.mlp.experts.1.down_proj.weight_scale")
        w.add(t.name, t.dtype, {t.shape[1], t.shape[0]}, f.bytes(t).data(), t.nbytes());
      else
        w.add(t.name, t.dtype, t.shape, f.bytes(t).data(), t.nbytes());
    }
    w.write(d2 + "/model.safetensors");
  }
  e = error_of([&] { ckpt::load_moe_layer(ckpt::Checkpoint(d2), 0); });
  EXPECT_NE(e.find("experts.1.down_proj.weight_scale"), std::string::npos) << e;
  EXPECT_NE(e.find("expected F8_E4M3 [64, 2]"), std::string::npos) << e;
  e = error_of([&] { ckpt::load_moe_layer(ckpt::Checkpoint(d2), 5); });
  EXPECT_NE(e.find("--layer"), std::string::npos) << e;
  testgen::write_text(d2 + "/hf_quant_config.json", R"({"quantization": {"quant_algo": "FP8", "group_size": 16}})");
  e = error_of([&] { ckpt::load_moe_layer(ckpt::Checkpoint(d2), 0); });
  EXPECT_NE(e.find("expected NVFP4, got \"FP8\""), std::string::npos) << e;
}

// Gate and up with different weight_scale_2: folded exactly when the ratio allows it,
// requantized (and said so) when not.
TEST(Checkpoint, GateUpWithDifferentGlobalScales) {
  const MoeSpec spec = testgen::spec_for(ckpt::Scheme::Qwen3Moe);
  const SyntheticLayer S = synthetic_layer(spec, 9);
  const int64_t H = spec.hidden, I = spec.inter, N1 = spec.n1();
  for (float ratio : {0.5f, 0.8f}) {
    SCOPED_TRACE(ratio);
    // Rewrite the up halves: up scale_2 = ratio * g, block scales re-expressed so that the
    // dequantized values are unchanged where e4m3 allows (ratio 0.5: exactly; 0.8: as is).
    const std::string d = dir("ratio");
    testgen::write_nvfp4(d, ckpt::Scheme::Qwen3Moe, S.nvfp4, 9);
    st::File f(d + "/model.safetensors");
    st::Writer w;
    std::vector<std::vector<uint8_t>> keep;
    for (const auto& t : f.tensors()) {
      const bool up = t.name.find("up_proj") != std::string::npos;
      if (up && t.name.ends_with("weight_scale_2")) {
        float g;
        std::memcpy(&g, f.bytes(t).data(), 4);
        const float g2 = g * ratio;
        w.add(t.name, t.dtype, t.shape, &g2, 4);
      } else if (up && ratio == 0.5f && t.name.ends_with("weight_scale")) {
        std::vector<uint8_t> s(f.bytes(t).begin(), f.bytes(t).end());
        for (auto& b : s) b = e4m3_encode(e4m3_decode(b) * 2.0f);  // exact unless saturating
        w.add(t.name, t.dtype, t.shape, s);
      } else {
        w.add(t.name, t.dtype, t.shape, f.bytes(t).data(), t.nbytes());
      }
    }
    w.write(d + "/model.safetensors");
    const auto L = ckpt::load_moe_layer(ckpt::Checkpoint(d), 0);
    std::string notes;
    for (const auto& n : L.notes) notes += n + "\n";
    if (ratio == 0.5f) {
      EXPECT_NE(notes.find("folded exactly"), std::string::npos) << notes;
      EXPECT_FALSE(L.original.has_value());
      // Same packed values; every folded block scale times the shared weight_scale_2 equals
      // the checkpoint's block scale times its own (0.5 g), exactly.
      EXPECT_EQ(L.nvfp4.w13, S.nvfp4.w13);
      EXPECT_EQ(L.nvfp4.w13_scale_2, S.nvfp4.w13_scale_2);
      for (int64_t e = 0; e < spec.experts; ++e)
        for (int64_t i = 0; i < N1 * H / 16; ++i) {
          const uint8_t orig = S.nvfp4.w13_scale[e * N1 * H / 16 + i];
          const double g = S.nvfp4.w13_scale_2[e];
          const double want = i < I * H / 16 ? e4m3_decode(orig) * g
                                             : e4m3_decode(e4m3_encode(e4m3_decode(orig) * 2.0f)) * double(float(g * 0.5f));
          ASSERT_EQ(e4m3_decode(L.nvfp4.w13_scale[e * N1 * H / 16 + i]) * double(L.nvfp4.w13_scale_2[e]), want)
              << "expert " << e << " block " << i;
        }
    } else {
      EXPECT_NE(notes.find("REQUANTIZED"), std::string::npos) << notes;
      ASSERT_TRUE(L.original.has_value());
      EXPECT_EQ(L.original->w13, S.nvfp4.w13);  // the checkpoint's own bytes are kept
      EXPECT_FLOAT_EQ(L.up_scale_2[0], S.nvfp4.w13_scale_2[0] * 0.8f);
      // The requantized layer stays close to the checkpoint's values.
      for (int64_t e = 0; e < spec.experts; ++e) {
        auto a = dequantize_weight(L.nvfp4.w13.data() + e * N1 * H / 2, L.nvfp4.w13_scale.data() + e * N1 * H / 16, N1, H,
                                   L.nvfp4.w13_scale_2[e]);
        auto g = dequantize_weight(S.nvfp4.w13.data() + e * N1 * H / 2, S.nvfp4.w13_scale.data() + e * N1 * H / 16, N1, H,
                                   S.nvfp4.w13_scale_2[e]);
        double num = 0, den = 0;
        for (int64_t i = I * H; i < N1 * H; ++i) {
          const double want = g[i] * 0.8;
          num += (a[i] - want) * (a[i] - want);
          den += want * want;
        }
        EXPECT_LT(std::sqrt(num / den), 0.15) << "expert " << e;
      }
    }
  }
}

// Round trip: bf16 layer -> quantize_checkpoint -> load -> run; the error against the fp64
// unquantized layer is exactly what the CPU reference gives for the same weights.
TEST(Checkpoint, QuantizeRoundTrip) {
  for (auto s : {ckpt::Scheme::Qwen3Moe, ckpt::Scheme::NemotronH, ckpt::Scheme::Mixtral}) {
    SCOPED_TRACE(ckpt::to_string(s));
    const MoeSpec spec = testgen::spec_for(s);
    const SyntheticLayer S = synthetic_layer(spec, 21);
    const std::string in = dir("rt_in"), out = dir("rt_out");
    testgen::write_bf16(in, s, S, 21, 2);
    ckpt::QuantizeOptions o;
    o.no_input_scale = true;
    const auto rep = ckpt::quantize_checkpoint(in, out, o);
    EXPECT_EQ(rep.quantized, spec.experts * (spec.activation == Activation::SwiGLU ? 3 : 2));
    EXPECT_TRUE(fs::exists(out + "/model.safetensors.index.json"));
    const ckpt::Checkpoint ck(out);
    EXPECT_TRUE(ck.quant().nvfp4);
    EXPECT_TRUE(ck.has(ck.moe_layers()[0].prefix + ".gate.weight"));  // the router stays bf16
    EXPECT_EQ(ck.info(ck.moe_layers()[0].prefix + ".gate.weight").dtype, st::Dtype::BF16);
    const auto L = ckpt::load_moe_layer(ck, 0);
    expect_same_nvfp4(L.nvfp4, S.nvfp4);  // bit-identical to ModelOpt's algorithm

    const int64_t T = 12;
    auto x = random_hidden_states(T, spec.hidden, 4);
    Routing R = random_routing(T, spec.experts, spec.topk, 4);
    TensorView xv(x.data(), DType::BF16, {T, spec.hidden});
    TensorView iv(R.ids.data(), DType::I32, {T, spec.topk});
    TensorView wv(R.weights.data(), DType::F32, {T, spec.topk});
    const auto ref64 = reference_moe_fp64(spec, S.bf16, xv, iv, wv);
    const auto got = reference_moe(L.spec, L.nvfp4.view(), xv, iv, wv);
    const auto want = reference_moe(spec, S.nvfp4.view(), xv, iv, wv);
    EXPECT_EQ(got, want);
    const auto e1 = compare_bf16(got, ref64), e2 = compare_bf16(want, ref64);
    EXPECT_EQ(e1.rel_l2, e2.rel_l2);
    EXPECT_GT(e1.rel_l2, 0.01);  // NVFP4 is lossy: the comparison is not vacuous
    EXPECT_LT(e1.rel_l2, 0.2);
    // The fp64 evaluation of the dequantized weights sits between: close to the NVFP4 output.
    const auto deq64 = ckpt::reference_moe_fp64_dequant(L, xv, iv, wv);
    EXPECT_LT(compare_bf16(got, deq64).rel_l2, 0.02);
  }
}

TEST(Checkpoint, QuantizeWithCalibration) {
  const auto s = ckpt::Scheme::Qwen3Moe;
  const MoeSpec spec = testgen::spec_for(s);
  const SyntheticLayer S = synthetic_layer(spec, 2);
  const std::string in = dir("cal_in"), out = dir("cal_out");
  testgen::write_bf16(in, s, S, 2);
  auto x = random_hidden_states(16, spec.hidden, 3);
  float ax = 0;
  for (auto v : x) ax = std::max(ax, std::fabs(bf16_to_float(v)));
  st::Writer cw;
  cw.add("model.layers.0.mlp.input", st::Dtype::BF16, {16, spec.hidden}, x);
  cw.write(in + "/calib.safetensors");
  ckpt::QuantizeOptions o;
  o.calib_path = in + "/calib.safetensors";
  // the calibration file sits in the input directory: give the checkpoint as its one file
  const auto rep = ckpt::quantize_checkpoint(in + "/model.safetensors", out, o);
  EXPECT_EQ(rep.calibrated, rep.quantized);
  const auto L = ckpt::load_moe_layer(ckpt::Checkpoint(out), 0);
  ASSERT_EQ(L.nvfp4.a13_scale.size(), 8u);
  EXPECT_EQ(L.nvfp4.a13_scale[0], ax / (6.0f * 448.0f));
  EXPECT_GT(L.nvfp4.a2_scale[0], 0.0f);
  EXPECT_NE(L.nvfp4.a2_scale[0], L.nvfp4.a2_scale[1]);  // per expert
  ckpt::QuantizeOptions none;
  auto e = error_of([&] { ckpt::quantize_checkpoint(in + "/model.safetensors", dir("x"), none); });
  EXPECT_NE(e.find("--no-input-scale"), std::string::npos) << e;
  e = error_of([&] { ckpt::quantize_checkpoint(out, dir("y"), o); });
  EXPECT_NE(e.find("expected an unquantized checkpoint"), std::string::npos) << e;
}
