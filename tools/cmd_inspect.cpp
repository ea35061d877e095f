// fp4moe inspect PATH: what a checkpoint holds. fp4moe run --checkpoint PATH --layer N: one real
// MoE layer (router included) on random or given hidden states.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "cli.hpp"
#include "fp4moe/bf16.hpp"
#include "fp4moe/checkpoint.hpp"
#include "fp4moe/metrics.hpp"
#include "fp4moe/reference.hpp"
#include "fp4moe/routing.hpp"
#include "fp4moe/synthetic.hpp"

namespace fp4moe::cli {

int cmd_inspect(const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0].starts_with("--")) throw Error("inspect: expected a checkpoint PATH, got none");
  Args a(std::vector<std::string>(argv.begin() + 1, argv.end()), {{"--tensors", false}});
  const ckpt::Checkpoint ck(argv[0]);
  std::printf("checkpoint  %s\n", ck.path().c_str());
  std::printf("files       %zu safetensors file(s), %zu tensors\n", ck.files().size(), ck.tensor_count());
  std::printf("model       %s (model_type %s)\n", ck.architecture().empty() ? "(no config.json architectures)" : ck.architecture().c_str(),
              ck.model_type().empty() ? "?" : ck.model_type().c_str());
  const auto& q = ck.quant();
  if (q.source.empty()) std::printf("quant       none (unquantized weights)\n");
  else {
    std::printf("quant       %s, group size %d, from %s%s%s\n", q.quant_algo.c_str(), q.group_size, q.source.c_str(),
                q.producer.empty() ? "" : ", producer ", q.producer.c_str());
    std::string ex;
    for (const auto& e : q.exclude_modules) ex += (ex.empty() ? "" : ", ") + e;
    std::printf("excluded    %s\n", ex.empty() ? "(none)" : ex.c_str());
  }
  std::printf("moe layers  %zu\n", ck.moe_layers().size());
  if (!ck.moe_layers().empty()) {
    std::string topk = "?", routing = "?";
    try {
      topk = std::to_string(ck.topk());
      routing = ck.routing(ck.moe_layers()[0]).describe();
    } catch (const Error& e) {
      topk = std::string("unknown (") + e.what() + ")";
    }
    std::printf("routing     top-k %s, %s\n", topk.c_str(), routing.c_str());
    std::printf("  %5s  %-34s  %-10s  %7s  %6s  %6s  %-9s  %-7s  %-11s  %s\n", "layer", "prefix", "scheme", "experts", "H", "I",
                "act", "weights", "input_scale", "router / correction bias");
    for (const auto& L : ck.moe_layers())
      std::printf("  %5lld  %-34s  %-10s  %7lld  %6lld  %6lld  %-9s  %-7s  %-11s  %s / %s\n", static_cast<long long>(L.layer),
                  L.prefix.c_str(), ckpt::to_string(L.scheme), static_cast<long long>(L.experts),
                  static_cast<long long>(L.hidden), static_cast<long long>(L.inter), L.gated ? "SwiGLU" : "ReLU^2",
                  L.quantized ? "NVFP4" : "bf16", L.has_input_scale ? "yes" : "no",
                  L.router.empty() ? "(missing)" : "yes", L.correction_bias.empty() ? "no" : "yes");
  }
  if (a.has("--tensors"))
    for (const auto& n : ck.tensor_names()) {
      const auto& t = ck.info(n);
      std::printf("  %-60s %-8s %s\n", n.c_str(), st::dtype_name(t.dtype), shape_str(t.shape).c_str());
    }
  return 0;
}

int cmd_run_checkpoint(const std::vector<std::string>& argv) {
  Args a(argv, {{"--checkpoint", true}, {"--layer", true}, {"--tokens", true}, {"--mode", true}, {"--seed", true},
                {"--hidden-states", true}, {"--json", true}});
  const std::string path = a.str("--checkpoint", "");
  if (!a.has("--layer")) throw Error("--layer: expected the index of a MoE layer, got none");
  const int64_t layer = a.integer("--layer", 0, 0, 1 << 20);
  const uint64_t seed = static_cast<uint64_t>(a.integer("--seed", 0, 0, INT64_MAX));
  const std::string mode_arg = a.str("--mode", "both");
  std::vector<Mode> modes;
  if (mode_arg == "both") modes = {Mode::W4A16, Mode::W4A4};
  else modes = {parse_mode(mode_arg)};

  const ckpt::Checkpoint ck(path);
  Progress prog("loading experts");
  ckpt::LoadedLayer L = ckpt::load_moe_layer(ck, layer, [&](int64_t d, int64_t t) { prog(d, t); });
  MoeSpec spec = L.spec;
  const int64_t H = spec.hidden, E = spec.experts, k = spec.topk;
  std::printf("checkpoint  %s, layer %lld (%s, %s): H=%lld I=%lld E=%lld top-k=%lld, %s\n", ck.path().c_str(),
              static_cast<long long>(layer), L.info.prefix.c_str(), ckpt::to_string(L.info.scheme), static_cast<long long>(H),
              static_cast<long long>(spec.inter), static_cast<long long>(E), static_cast<long long>(k), to_string(spec.activation));
  std::printf("routing     %s (router %s%s)\n", L.routing.describe().c_str(), L.info.router.c_str(),
              L.info.correction_bias.empty() ? "" : (", bias " + L.info.correction_bias).c_str());
  for (const auto& n : L.notes) std::printf("note        %s\n", n.c_str());

  std::vector<uint16_t> x;
  int64_t T;
  if (a.has("--hidden-states")) {
    const st::File f(a.str("--hidden-states", ""));
    const st::TensorInfo* t = f.find("hidden_states");
    if (!t && f.tensors().size() == 1) t = &f.tensors()[0];
    if (!t) throw Error(f.path() + ": expected a tensor \"hidden_states\" (or exactly one tensor), got " + std::to_string(f.tensors().size()));
    if (t->shape.size() != 2 || t->shape[1] != H)
      throw Error(detail::concat(f.path(), ": tensor \"", t->name, "\": expected shape [T, ", H, "], got ", shape_str(t->shape)));
    T = t->shape[0];
    for (float v : f.to_float(t->name)) {
      if (!std::isfinite(v)) throw Error(f.path() + ": tensor \"" + t->name + "\": expected finite values");
      x.push_back(float_to_bf16(v));
    }
    std::printf("tokens      %lld from %s\n", static_cast<long long>(T), f.path().c_str());
  } else {
    T = a.integer("--tokens", 16, 0, 1 << 20);
    x = random_hidden_states(T, H, seed);
    std::printf("tokens      %lld random (seed %llu)\n", static_cast<long long>(T), static_cast<unsigned long long>(seed));
  }
  // The real router: logits = x @ router^T in fp32.
  std::vector<float> logits(static_cast<size_t>(T * E));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) {
      float s = 0;
      for (int64_t c = 0; c < H; ++c) s += bf16_to_float(x[static_cast<size_t>(t * H + c)]) * L.router[static_cast<size_t>(e * H + c)];
      logits[static_cast<size_t>(t * E + e)] = s;
    }
  Routing R = route(TensorView(logits.data(), DType::F32, {T, E}), k, L.routing);
  TensorView xv(x.data(), DType::BF16, {T, H});
  TensorView idv(R.ids.data(), DType::I32, {T, k});
  TensorView wv(R.weights.data(), DType::F32, {T, k});
  std::string ref_label;
  std::vector<double> ref64;
  if (L.bf16) {
    ref64 = reference_moe_fp64(spec, *L.bf16, xv, idv, wv);
    ref_label = "the fp64 unquantized layer (bf16 weights from the checkpoint)";
  } else {
    ref64 = ckpt::reference_moe_fp64_dequant(L, xv, idv, wv);
    ref_label = "the fp64 evaluation of the checkpoint's DEQUANTIZED NVFP4 weights (an NVFP4 checkpoint has no bf16 "
                "originals): this measures kernel/activation error, not weight quantization error";
  }
  std::vector<ModeResult> rows;
  const bool ckpt_scales = !L.nvfp4.a13_scale.empty();
  for (Mode m : modes) {
    spec.mode = m;
    std::string scales = "-";
    if (m == Mode::W4A4) {
      if (ckpt_scales) scales = "checkpoint";
      else {
        // Calibrated on this batch as `fp4moe run` does: FC1 from amax(x), FC2 from amax(h).
        MoeSpec s16 = spec;
        s16.mode = Mode::W4A16;
        std::vector<float> h;
        if (T > 0) reference_moe(s16, L.nvfp4.view(), xv, idv, wv, &h);
        float ax = 0, ah = 0;
        for (auto v : x) ax = std::max(ax, std::fabs(bf16_to_float(v)));
        for (auto v : h) ah = std::max(ah, std::fabs(v));
        set_input_scales(L.nvfp4, ax > 0 ? ax : 1.0f, ah > 0 ? ah : 1.0f);
        scales = "this batch";
      }
    }
    L.nvfp4.spec = spec;
    const auto t0 = std::chrono::steady_clock::now();
    const auto out = reference_moe(spec, L.nvfp4.view(), xv, idv, wv);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ModeResult r;
    r.mode = m;
    r.backend = "cpu-reference";
    r.note = scales == "-" ? "" : "input scales: " + scales;
    r.err = compare_bf16(out, ref64);
    r.ms = ms;
    rows.push_back(r);
  }
  std::printf("backend     cpu-reference: checkpoint layers run on the CPU reference\n");
  print_report(ref_label, rows);
  if (a.has("--json"))
    write_json(a.str("--json", ""), Json()
                                        .str("checkpoint", ck.path())
                                        .num("layer", static_cast<double>(layer))
                                        .num("tokens", static_cast<double>(T))
                                        .str("reference", L.bf16 ? "fp64-bf16" : "fp64-dequantized-nvfp4")
                                        .raw("results", results_json(rows))
                                        .dump());
  return 0;
}

}  // namespace fp4moe::cli
