// The prefill backend against the CPU reference: fresh random layers and inputs for the model
// presets, both numerics modes, both activations and gate/up orders, every wgmma tile height,
// skewed routing, edge-case block scales, invalid expert ids, bitwise reproducibility,
// CUDA-graph replay, and a timing print.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cctype>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "cuda/backend_api.hpp"
#include "fp4moe/bf16.hpp"
#include "fp4moe/metrics.hpp"
#include "fp4moe/presets.hpp"
#include "fp4moe/reference.hpp"
#include "fp4moe/synthetic.hpp"
#include "gpu_test_util.hpp"

using namespace fp4moe;
using fp4moe::testing::DeviceBuffer;

namespace {

// Keeps a test layer's weights under ~2G values: full E for most presets, fewer experts
// (never fewer than 2k) for the largest ones.
int64_t test_experts(const MoeSpec& s) {
  const int64_t per = s.hidden * s.n1() + s.inter * s.hidden;
  const int64_t cap = std::max<int64_t>(2 * s.topk, 2000000000LL / per);
  return std::min(s.experts, cap);
}

// W4A4 input scales: FC1 from the x amax (random_hidden_states stays within +-3.5), FC2 from
// the reference's h on a few tokens. per_expert_spread gives each expert its own a13_scale.
void calibrate(NvFp4Layer& L, uint64_t seed, bool per_expert_spread) {
  MoeSpec s16 = L.spec;
  s16.mode = Mode::W4A16;
  const int64_t T = 8;
  auto x = random_hidden_states(T, s16.hidden, seed + 11);
  auto r = random_routing(T, s16.experts, s16.topk, seed + 12);
  std::vector<float> h;
  NvFp4Layer tmp = L;
  tmp.a13_scale.clear();
  tmp.a2_scale.clear();
  tmp.spec = s16;
  reference_moe(s16, tmp.view(), {x.data(), DType::BF16, {T, s16.hidden}}, {r.ids.data(), DType::I32, {T, s16.topk}},
                {r.weights.data(), DType::F32, {T, s16.topk}}, &h);
  float hmax = 0;
  for (float v : h) hmax = std::max(hmax, std::fabs(v));
  set_input_scales(L, 3.5f, std::max(hmax, 1e-3f));
  if (per_expert_spread)
    for (size_t e = 0; e < L.a13_scale.size(); ++e) L.a13_scale[e] *= 1.0f + 0.25f * static_cast<float>(e % 3);
}

struct Inputs {
  std::vector<uint16_t> x;
  Routing r;
};

Inputs make_inputs(const MoeSpec& s, int64_t T, uint64_t seed) {
  return {random_hidden_states(T, s.hidden, seed + 1), random_routing(T, s.experts, s.topk, seed + 2)};
}

struct GpuRun {
  std::vector<uint16_t> out, out2;
  int64_t invalid = 0;
};

// Runs forward twice (output poisoned before each) and returns both outputs.
GpuRun run_gpu(cuda::MoeKernel& K, const MoeSpec& s, const Inputs& in, const std::vector<int32_t>* ids_override = nullptr) {
  const int64_t T = in.r.tokens;
  DeviceBuffer<uint16_t> x(in.x), out(static_cast<size_t>(T * s.hidden));
  DeviceBuffer<int32_t> ids(ids_override ? *ids_override : in.r.ids);
  DeviceBuffer<float> w(in.r.weights);
  GpuRun g;
  for (int rep = 0; rep < 2; ++rep) {
    out.poison();
    K.forward(x.get(), ids.get(), w.get(), T, out.get(), nullptr);
    FP4MOE_TEST_CUDA(cudaDeviceSynchronize());
    (rep == 0 ? g.out : g.out2) = out.download();
  }
  g.invalid = K.take_invalid_id_count();
  return g;
}

// The CPU reference's output as doubles.
std::vector<double> reference_out(const MoeSpec& s, const NvFp4Layer& L, const Inputs& in,
                                  const Routing* ref_routing = nullptr) {
  const Routing& r = ref_routing ? *ref_routing : in.r;
  const int64_t T = r.tokens;
  auto ref = reference_moe(s, L.view(), {in.x.data(), DType::BF16, {T, s.hidden}}, {r.ids.data(), DType::I32, {T, s.topk}},
                           {r.weights.data(), DType::F32, {T, s.topk}});
  std::vector<double> refd(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) refd[i] = bf16_to_float(ref[i]);
  return refd;
}

ErrorStats vs_reference(const MoeSpec& s, const NvFp4Layer& L, const Inputs& in, const std::vector<uint16_t>& got,
                        const Routing* ref_routing = nullptr) {
  return compare_bf16(got, reference_out(s, L, in, ref_routing));
}

double tolerance(Mode m) { return m == Mode::W4A16 ? 2e-3 : 5e-3; }

void check_case(const std::string& what, const MoeSpec& s, const NvFp4Layer& L, cuda::MoeKernel& K, int64_t T,
                uint64_t seed) {
  const Inputs in = make_inputs(s, T, seed);
  const GpuRun g = run_gpu(K, s, in);
  const ErrorStats st = vs_reference(s, L, in, g.out);
  std::printf("  %-44s M=%-5lld rel_l2=%.3e max_abs=%.3e nonfinite=%lld\n", what.c_str(), static_cast<long long>(T),
              st.rel_l2, st.max_abs, static_cast<long long>(st.nonfinite));
  EXPECT_EQ(st.nonfinite, 0) << what << " M=" << T;
  EXPECT_LE(st.rel_l2, tolerance(s.mode)) << what << " M=" << T;
  EXPECT_TRUE(g.out == g.out2) << what << " M=" << T << ": re-run not bitwise identical";
  EXPECT_EQ(g.invalid, 0);
}

class PresetTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PresetTest, MatchesReference) {
  FP4MOE_SKIP_WITHOUT_GPU();
  const Preset& P = find_preset(GetParam());
  MoeSpec s = P.spec(Mode::W4A16);
  s.experts = test_experts(s);
  const uint64_t seed = 1000 + std::hash<std::string>{}(P.name) % 1000;
  NvFp4Layer L16 = random_nvfp4_layer(s, seed);
  // the largest shapes run M = 2048 only where the CPU reference stays quick
  const int64_t per = s.hidden * (s.n1() + s.inter);
  std::vector<int64_t> Ms = {65, 300};
  if (per * 2048 * s.topk <= 120'000'000'000LL) Ms.push_back(2048);
  {
    auto K = cuda::make_prefill_kernel(s, L16.view(), cuda::WeightsOn::Host, 2048, 0);
    for (int64_t T : Ms) check_case(P.name + " w4a16 E=" + std::to_string(s.experts), s, L16, *K, T, seed + T);
  }
  MoeSpec s4 = s;
  s4.mode = Mode::W4A4;
  NvFp4Layer L4 = L16;
  L4.spec = s4;
  calibrate(L4, seed, /*per_expert_spread=*/P.name.size() % 2 == 0);
  {
    auto K = cuda::make_prefill_kernel(s4, L4.view(), cuda::WeightsOn::Host, 2048, 0);
    for (int64_t T : Ms) check_case(P.name + " w4a4 E=" + std::to_string(s.experts), s4, L4, *K, T, seed + 7 + T);
  }
}

std::vector<std::string> preset_names() {
  std::vector<std::string> v;
  for (const auto& p : presets()) v.push_back(p.name);
  return v;
}

INSTANTIATE_TEST_SUITE_P(Presets, PresetTest, ::testing::ValuesIn(preset_names()),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

MoeSpec small_spec(Activation a, Mode m, GateUpOrder o = GateUpOrder::GateUp) {
  MoeSpec s;
  s.hidden = 272;  // not a multiple of 64: K padding
  s.inter = 208;   // not a multiple of 64
  s.experts = 12;
  s.topk = 3;
  s.activation = a;
  s.mode = m;
  s.gate_up_order = o;
  return s;
}

// Both activations, both gate/up orders, both modes, device-resident weights, W4A4 with and
// without the FC2 input scale (absent = 1.0, which zeroes small blocks).
TEST(PrefillSmall, ActivationsOrdersModes) {
  FP4MOE_SKIP_WITHOUT_GPU();
  int n = 0;
  for (Activation a : {Activation::SwiGLU, Activation::ReLU2})
    for (GateUpOrder o : {GateUpOrder::GateUp, GateUpOrder::UpGate})
      for (Mode m : {Mode::W4A16, Mode::W4A4}) {
        if (a == Activation::ReLU2 && o == GateUpOrder::UpGate) continue;
        for (int variant = 0; variant < (m == Mode::W4A4 ? 3 : 1); ++variant) {
          const MoeSpec s = small_spec(a, m, o);
          const uint64_t seed = 77 + 13 * n++;
          NvFp4Layer L = random_nvfp4_layer(s, seed);
          if (m == Mode::W4A4) {
            calibrate(L, seed, variant == 1);
            if (variant == 2) L.a2_scale.clear();
          }
          // weights given as device pointers
          DeviceBuffer<uint8_t> w13(L.w13), w13s(L.w13_scale), w2(L.w2), w2s(L.w2_scale);
          DeviceBuffer<float> g13(L.w13_scale_2), g2(L.w2_scale_2);
          std::vector<float> a13 = L.a13_scale.empty() ? std::vector<float>{1.0f} : L.a13_scale;
          std::vector<float> a2 = L.a2_scale.empty() ? std::vector<float>{1.0f} : L.a2_scale;
          DeviceBuffer<float> da13(a13), da2(a2);
          MoeWeights w = L.view();
          w.w13.data = w13.get();
          w.w13_scale.data = w13s.get();
          w.w2.data = w2.get();
          w.w2_scale.data = w2s.get();
          w.w13_scale_2.data = g13.get();
          w.w2_scale_2.data = g2.get();
          if (!L.a13_scale.empty()) w.a13_scale.data = da13.get();
          if (!L.a2_scale.empty()) w.a2_scale.data = da2.get();
          auto K = cuda::make_prefill_kernel(s, w, cuda::WeightsOn::Device, 700, 0);
          const std::string what = std::string("small ") + to_string(a) + " " + to_string(o) + " " + to_string(m) +
                                   " v" + std::to_string(variant);
          for (int64_t T : {1, 65, 700}) check_case(what, s, L, *K, T, seed + T);
        }
      }
}

// Sets an environment variable for its lifetime, then restores the previous value (or unsets it).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    setenv(name, value.c_str(), 1);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  ~ScopedEnv() {
    if (had_) setenv(name_, old_.c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

// Every tile height the wgmma dispatch can pick (kWgTileRows in src/cuda/prefill_wgmma.cuh; keep
// in step), each forced through FP4MOE_PREFILL_TILE_ROWS (read once, at construction), against
// the reference: both modes, both activations, W4A4 with a per-expert a13_scale (per-pair
// quantization) and with a shared one. E = 4, k = 2: M = 643 gives 300..347 rows per expert
// (3 tiles of 128, ~20 of 16, the last one mostly partial), M = 37 14..26 (one partial tile from
// 32 rows on, full and partial ones at 16 and 24), M = 1 two experts of one row and two empty
// ones. The reference runs once per input set; the mma.sync path (not sm_90a) ignores the
// variable, so there it runs once, with its own height.
TEST(PrefillSmall, EveryTileHeight) {
  FP4MOE_SKIP_WITHOUT_GPU();
  constexpr int kHeights[] = {16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128};
  const std::vector<int64_t> Ms = {1, 37, 643};
  int n = 0;
  for (Activation a : {Activation::SwiGLU, Activation::ReLU2})
    for (Mode m : {Mode::W4A16, Mode::W4A4}) {
      const bool up_gate = a == Activation::SwiGLU && m == Mode::W4A4;
      MoeSpec s = small_spec(a, m, up_gate ? GateUpOrder::UpGate : GateUpOrder::GateUp);
      s.experts = 4;
      s.topk = 2;
      const uint64_t seed = 501 + 17 * n++;
      NvFp4Layer L = random_nvfp4_layer(s, seed);
      if (m == Mode::W4A4) calibrate(L, seed, /*per_expert_spread=*/a == Activation::SwiGLU);
      std::vector<Inputs> ins;
      std::vector<std::vector<double>> refs;
      for (int64_t T : Ms) {
        ins.push_back(make_inputs(s, T, seed + static_cast<uint64_t>(T)));
        refs.push_back(reference_out(s, L, ins.back()));
      }
      for (int bm : kHeights) {
        ScopedEnv force("FP4MOE_PREFILL_TILE_ROWS", std::to_string(bm));
        auto K = cuda::make_prefill_kernel(s, L.view(), cuda::WeightsOn::Host, Ms.back(), 0);
        const bool wgmma = std::string(K->name()).find("wgmma") != std::string::npos;
        const std::string what = std::string("tile ") + (wgmma ? std::to_string(bm) : std::string("(mma.sync)")) +
                                 " " + to_string(a) + " " + to_string(s.gate_up_order) + " " + to_string(m);
        for (size_t i = 0; i < Ms.size(); ++i) {
          const GpuRun g = run_gpu(*K, s, ins[i]);
          const ErrorStats st = compare_bf16(g.out, refs[i]);
          std::printf("  %-44s M=%-5lld rel_l2=%.3e max_abs=%.3e nonfinite=%lld\n", what.c_str(),
                      static_cast<long long>(Ms[i]), st.rel_l2, st.max_abs, static_cast<long long>(st.nonfinite));
          EXPECT_EQ(st.nonfinite, 0) << what << " M=" << Ms[i];
          EXPECT_LE(st.rel_l2, tolerance(m)) << what << " M=" << Ms[i];
          EXPECT_TRUE(g.out == g.out2) << what << " M=" << Ms[i] << ": re-run not bitwise identical";
          EXPECT_EQ(g.invalid, 0);
        }
        if (!wgmma) {
          std::printf("  %s: FP4MOE_PREFILL_TILE_ROWS applies to the sm_90a wgmma path only\n", K->name());
          break;
        }
      }
    }
}

// Block scales the synthetic layers never have (set_edge_block_scales), then one NaN scale,
// whose NaN must reach exactly the outputs it reaches in the reference. (The prepared layout
// turns each scale into a bf16 times a power of two: these are its edge cases.)
TEST(PrefillSmall, EdgeBlockScales) {
  FP4MOE_SKIP_WITHOUT_GPU();
  int n = 0;
  for (int variant : {0, 1})
    for (Activation a : {Activation::SwiGLU, Activation::ReLU2})
      for (Mode m : {Mode::W4A16, Mode::W4A4}) {
        const MoeSpec s = small_spec(a, m);
        const uint64_t seed = 901 + 7 * n++;
        NvFp4Layer L = random_nvfp4_layer(s, seed);
        fp4moe::testing::set_edge_block_scales(L.w13_scale, variant);
        fp4moe::testing::set_edge_block_scales(L.w2_scale, variant);
        if (m == Mode::W4A4) calibrate(L, seed, false);
        auto K = cuda::make_prefill_kernel(s, L.view(), cuda::WeightsOn::Host, 300, 0);
        const std::string what = std::string("edge scales v") + std::to_string(variant) + " " + to_string(a) + " " +
                                 to_string(m);
        for (int64_t T : {65, 300}) check_case(what, s, L, *K, T, seed + static_cast<uint64_t>(T));

        // one NaN scale: expert 0, FC2 row 0 (output column 0), first 16-block
        L.w2_scale[0] = 0x7F;
        auto Kn = cuda::make_prefill_kernel(s, L.view(), cuda::WeightsOn::Host, 300, 0);
        const Inputs in = make_inputs(s, 300, seed + 5);
        const GpuRun g = run_gpu(*Kn, s, in);
        const auto st = fp4moe::testing::compare_with_nans(g.out, reference_out(s, L, in));
        std::printf("  %-44s M=%-5d rel_l2=%.3e (NaN outputs: %lld in the reference, %lld mismatched)\n",
                    (what + " + NaN").c_str(), 300, st.finite.rel_l2, static_cast<long long>(st.nan_ref),
                    static_cast<long long>(st.nan_mismatch));
        EXPECT_GT(st.nan_ref, 0) << what;
        EXPECT_EQ(st.nan_mismatch, 0) << what;
        EXPECT_EQ(st.finite.nonfinite, 0) << what;
        EXPECT_LE(st.finite.rel_l2, tolerance(m)) << what;
      }
}

// All tokens routed to the same k experts.
TEST(PrefillSkewed, AllTokensSameExperts) {
  FP4MOE_SKIP_WITHOUT_GPU();
  MoeSpec s = find_preset("qwen3-30b-a3b").spec(Mode::W4A16);
  for (Mode m : {Mode::W4A16, Mode::W4A4}) {
    s.mode = m;
    NvFp4Layer L = random_nvfp4_layer(s, 5);
    if (m == Mode::W4A4) calibrate(L, 5, false);
    auto K = cuda::make_prefill_kernel(s, L.view(), cuda::WeightsOn::Host, 2048, 0);
    Inputs in = make_inputs(s, 2048, 9);
    for (int64_t t = 0; t < in.r.tokens; ++t)
      for (int64_t j = 0; j < s.topk; ++j) in.r.ids[static_cast<size_t>(t * s.topk + j)] = static_cast<int32_t>(40 + j);
    const GpuRun g = run_gpu(*K, s, in);
    const ErrorStats st = vs_reference(s, L, in, g.out);
    std::printf("  skewed %s rel_l2=%.3e\n", to_string(m), st.rel_l2);
    EXPECT_EQ(st.nonfinite, 0);
    EXPECT_LE(st.rel_l2, tolerance(m));
    EXPECT_TRUE(g.out == g.out2);
  }
}

// Out-of-range ids contribute nothing and are counted; compared with the reference where
// those pairs carry weight 0 on a valid expert.
TEST(PrefillInvalidIds, SkippedAndCounted) {
  FP4MOE_SKIP_WITHOUT_GPU();
  for (Mode m : {Mode::W4A16, Mode::W4A4}) {
    MoeSpec s = small_spec(Activation::SwiGLU, m);
    NvFp4Layer L = random_nvfp4_layer(s, 31);
    if (m == Mode::W4A4) calibrate(L, 31, true);
    auto K = cuda::make_prefill_kernel(s, L.view(), cuda::WeightsOn::Host, 300, 0);
    Inputs in = make_inputs(s, 300, 32);
    std::vector<int32_t> bad = in.r.ids;
    Routing ref_r = in.r;
    int64_t n_bad = 0;
    for (int64_t t = 0; t < in.r.tokens; t += 7) {
      const size_t p = static_cast<size_t>(t * s.topk + (t % s.topk));
      bad[p] = (t % 2) ? -1 - static_cast<int32_t>(t) : static_cast<int32_t>(s.experts + t);
      ref_r.weights[p] = 0.0f;  // ref_r.ids[p] keeps its (valid, distinct) id
      ++n_bad;
    }
    const GpuRun g = run_gpu(*K, s, in, &bad);
    const ErrorStats st = vs_reference(s, L, in, g.out, &ref_r);
    EXPECT_EQ(st.nonfinite, 0);
    EXPECT_LE(st.rel_l2, tolerance(m));
    EXPECT_EQ(g.invalid, 2 * n_bad);  // two forward() calls
    EXPECT_EQ(K->take_invalid_id_count(), 0);
  }
}

// Captured in a CUDA graph and replayed: the same bits as eager execution.
TEST(PrefillGraph, ReplayMatchesEager) {
  FP4MOE_SKIP_WITHOUT_GPU();
  for (Mode m : {Mode::W4A16, Mode::W4A4}) {
    MoeSpec s = small_spec(Activation::ReLU2, m);
    NvFp4Layer L = random_nvfp4_layer(s, 41);
    if (m == Mode::W4A4) calibrate(L, 41, true);
    auto K = cuda::make_prefill_kernel(s, L.view(), cuda::WeightsOn::Host, 500, 0);
    Inputs in = make_inputs(s, 500, 42);
    const GpuRun eager = run_gpu(*K, s, in);
    DeviceBuffer<uint16_t> x(in.x), out(static_cast<size_t>(in.r.tokens * s.hidden));
    DeviceBuffer<int32_t> ids(in.r.ids);
    DeviceBuffer<float> w(in.r.weights);
    cudaStream_t st;
    FP4MOE_TEST_CUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    FP4MOE_TEST_CUDA(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    K->forward(x.get(), ids.get(), w.get(), in.r.tokens, out.get(), st);
    FP4MOE_TEST_CUDA(cudaStreamEndCapture(st, &graph));
    FP4MOE_TEST_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    for (int i = 0; i < 2; ++i) {
      out.poison();
      FP4MOE_TEST_CUDA(cudaGraphLaunch(exec, st));
      FP4MOE_TEST_CUDA(cudaStreamSynchronize(st));
      EXPECT_TRUE(out.download() == eager.out) << "graph replay " << i;
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(st);
  }
}

// Timing (prints only; the shared bench program owns the official numbers).
TEST(PrefillPerf, PrintRates) {
  FP4MOE_SKIP_WITHOUT_GPU();
  if (std::getenv("FP4MOE_PERF") == nullptr) GTEST_SKIP() << "set FP4MOE_PERF=1 to time";
  // FP4MOE_PERF_ONLY=<preset>, FP4MOE_PERF_M=<tokens>, FP4MOE_PERF_MODE=w4a16|w4a4 narrow the sweep
  const char* only = std::getenv("FP4MOE_PERF_ONLY");
  const char* only_m = std::getenv("FP4MOE_PERF_M");
  const char* only_mode = std::getenv("FP4MOE_PERF_MODE");
  for (const char* name : {"qwen3-30b-a3b", "nemotron-3-nano-30b-a3b", "glm-4.5-air", "deepseek-v3"}) {
    if (only && std::string(only) != name) continue;
    MoeSpec s = find_preset(name).spec(Mode::W4A16);
    if (std::string(name) == "deepseek-v3") s.experts = 64;  // host memory for the layer
    NvFp4Layer L = random_nvfp4_layer(s, 3);
    for (Mode m : {Mode::W4A16, Mode::W4A4}) {
      if (only_mode && std::string(only_mode) != to_string(m)) continue;
      s.mode = m;
      L.spec = s;
      if (m == Mode::W4A4) set_input_scales(L, 3.5f, 20.0f);
      const int64_t maxT = 16384;
      auto K = cuda::make_prefill_kernel(s, L.view(), cuda::WeightsOn::Host, maxT, 0);
      for (int64_t T : {1024LL, 4096LL, 16384LL}) {
        if (only_m && std::atoll(only_m) != T) continue;
        Inputs in = make_inputs(s, T, 17);
        DeviceBuffer<uint16_t> x(in.x), out(static_cast<size_t>(T * s.hidden));
        DeviceBuffer<int32_t> ids(in.r.ids);
        DeviceBuffer<float> w(in.r.weights);
        cudaEvent_t a, b;
        cudaEventCreate(&a);
        cudaEventCreate(&b);
        for (int i = 0; i < 3; ++i) K->forward(x.get(), ids.get(), w.get(), T, out.get(), nullptr);
        std::vector<float> ms;
        for (int i = 0; i < 10; ++i) {
          cudaEventRecord(a);
          K->forward(x.get(), ids.get(), w.get(), T, out.get(), nullptr);
          cudaEventRecord(b);
          cudaEventSynchronize(b);
          float t = 0;
          cudaEventElapsedTime(&t, a, b);
          ms.push_back(t);
        }
        std::sort(ms.begin(), ms.end());
        const double flop = 2.0 * T * s.topk * (s.hidden * s.n1() + s.inter * s.hidden);
        std::printf("PERF %-26s E=%-3lld %-5s M=%-6lld %8.3f ms  %6.1f TFLOP/s\n", name,
                    static_cast<long long>(s.experts), to_string(m), static_cast<long long>(T), ms[5],
                    flop / (ms[5] * 1e-3) / 1e12);
        cudaEventDestroy(a);
        cudaEventDestroy(b);
      }
    }
  }
}

}  // namespace
