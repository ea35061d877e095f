// fp4moe run: one MoE layer on synthetic seeded data, checked against the fp64 unquantized layer.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>

#include "cli.hpp"
#include "fp4moe/api.hpp"
#include "fp4moe/bf16.hpp"
#include "fp4moe/device.hpp"
#include "fp4moe/metrics.hpp"
#include "fp4moe/presets.hpp"
#include "fp4moe/reference.hpp"
#include "fp4moe/routing.hpp"
#include "fp4moe/synthetic.hpp"

namespace fp4moe::cli {

namespace {

// Selection (fp4moe::select through the Moe API): the data is staged to the GPU when a GPU
// backend is chosen. In auto, when no backend can take device data (say, a batch too large for
// the decode kernel and no prefill kernel), the host is tried next - and the output says so.
std::unique_ptr<Moe> make_moe(const MoeSpec& spec, const MoeWeights& w, int64_t T, const std::string& backend,
                              std::string& why) {
  MoeOptions o;
  o.backend = backend;
  o.max_tokens = std::max<int64_t>(T, 1);
  o.weights_on = Memory::Host;
  const bool gpu = !probe_devices().gpus.empty() && probe_devices().built_with_cuda;
  o.data_on = (gpu && backend != kCpuReference) ? Memory::Device : Memory::Host;
  try {
    auto m = std::make_unique<Moe>(spec, w, o);
    why = m->report().chosen_candidate().verdict.reason;
    return m;
  } catch (const SelectionError& e) {
    if (backend != "auto" || o.data_on == Memory::Host) throw;
    o.data_on = Memory::Host;
    auto m = std::make_unique<Moe>(spec, w, o);
    why = m->report().chosen_candidate().verdict.reason + "; no GPU backend could run it (" + e.what() + ")";
    return m;
  }
}

}  // namespace

int cmd_run(const std::vector<std::string>& argv) {
  Args a(argv, {{"--preset", true}, {"--tokens", true}, {"--mode", true}, {"--seed", true}, {"--json", true}, {"--backend", true}});
  const std::string backend = a.str("--backend", "auto");
  if (backend != "auto") (void)backend_summary(backend);  // an unknown name fails before any work
  const Preset& p = find_preset(a.str("--preset", "qwen3-30b-a3b"));
  const int64_t T = a.integer("--tokens", 16, 0, 1 << 20);
  const uint64_t seed = static_cast<uint64_t>(a.integer("--seed", 0, 0, INT64_MAX));
  const std::string mode_arg = a.str("--mode", "both");
  std::vector<Mode> modes;
  if (mode_arg == "both") modes = {Mode::W4A16, Mode::W4A4};
  else modes = {parse_mode(mode_arg)};

  MoeSpec spec = p.spec();
  const int64_t H = spec.hidden, E = spec.experts, k = spec.topk;
  std::printf("preset      %s: H=%lld I=%lld E=%lld top-k=%lld, %s, routing: %s\n", p.name.c_str(),
              static_cast<long long>(H), static_cast<long long>(spec.inter), static_cast<long long>(E),
              static_cast<long long>(k), to_string(spec.activation), p.routing.describe().c_str());
  if (!p.note.empty()) std::printf("note        %s\n", p.note.c_str());
  std::printf("tokens      %lld, seed %llu\n", static_cast<long long>(T), static_cast<unsigned long long>(seed));

  // Inputs and routing (the router runs on seeded logits with the preset's method).
  auto x = random_hidden_states(T, H, seed);
  auto logits = random_logits(T, E, seed);
  RoutingSpec rs = p.routing;
  if (rs.method == RoutingMethod::SigmoidGroupedTopK) {
    auto bias = random_logits(1, E, seed + 17);
    rs.correction_bias.resize(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) rs.correction_bias[static_cast<size_t>(e)] = 0.05f * bias[static_cast<size_t>(e)];
  }
  Routing R = route(TensorView(logits.data(), DType::F32, {T, E}), k, rs);
  std::vector<bool> touched(static_cast<size_t>(E), false);
  for (auto id : R.ids) touched[static_cast<size_t>(id)] = true;
  const int64_t n_touched = std::count(touched.begin(), touched.end(), true);

  std::printf("weights     %lld experts, synthetic bf16 -> NVFP4 (ModelOpt algorithm), %lld touched\n",
              static_cast<long long>(E), static_cast<long long>(n_touched));
  Progress prog("quantizing experts");
  SyntheticLayer S = synthetic_layer(spec, seed, touched, [&](int64_t d, int64_t t) { prog(d, t); });

  TensorView xv(x.data(), DType::BF16, {T, H});
  TensorView idv(R.ids.data(), DType::I32, {T, k});
  TensorView wv(R.weights.data(), DType::F32, {T, k});
  const auto ref64 = reference_moe_fp64(spec, S.bf16, xv, idv, wv);

  std::vector<ModeResult> results;
  std::vector<float> h_calib;
  for (Mode m : modes) {
    spec.mode = m;
    S.nvfp4.spec = spec;
    if (m == Mode::W4A4) {
      // Static input scales calibrated on this batch, as ModelOpt does on calibration data:
      // FC1 from amax(x), FC2 from amax(h) of the W4A16 layer.
      float ax = 0, ah = 0;
      for (auto v : x) ax = std::max(ax, std::fabs(bf16_to_float(v)));
      MoeSpec s16 = spec;
      s16.mode = Mode::W4A16;
      S.nvfp4.spec = s16;
      S.nvfp4.a13_scale.clear();
      S.nvfp4.a2_scale.clear();
      if (T > 0) reference_moe(s16, S.nvfp4.view(), xv, idv, wv, &h_calib);
      for (auto v : h_calib) ah = std::max(ah, std::fabs(v));
      S.nvfp4.spec = spec;
      set_input_scales(S.nvfp4, ax > 0 ? ax : 1.0f, ah > 0 ? ah : 1.0f);
    }
    ModeResult r;
    r.mode = m;
    auto moe = make_moe(spec, S.nvfp4.view(), T, backend, r.why);
    r.backend = moe->backend();
    std::vector<uint16_t> out(static_cast<size_t>(T * H));
    const auto t0 = std::chrono::steady_clock::now();
    moe->forward_host(xv, idv, wv, MutableTensorView(out.data(), DType::BF16, {T, H}));
    r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    r.err = compare_bf16(out, ref64);
    results.push_back(r);
  }

  std::printf("backend     %s: %s\n", results[0].backend.c_str(), results[0].why.c_str());
  print_report("the fp64 unquantized layer (bf16 weights)", results);
  if (a.has("--json"))
    write_json(a.str("--json", ""), Json()
                                        .str("preset", p.name)
                                        .num("tokens", static_cast<double>(T))
                                        .num("seed", static_cast<double>(seed))
                                        .num("experts_touched", static_cast<double>(n_touched))
                                        .raw("results", results_json(results))
                                        .dump());
  return 0;
}

}  // namespace fp4moe::cli
