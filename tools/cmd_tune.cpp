// fp4moe tune: measures cuda-decode against cuda-prefill at small token counts on this GPU and
// writes the hybrid crossover for the layer into the tune file (see select.hpp).
#include <algorithm>
#include <cstdio>
#include <memory>
#include <vector>

#include "cli.hpp"
#include "fp4moe/api.hpp"
#include "fp4moe/presets.hpp"
#include "fp4moe/select.hpp"
#include "fp4moe/synthetic.hpp"

#ifdef FP4MOE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace fp4moe::cli {

namespace {

// The crossover that loses least against the faster path at the measured token counts: calls
// with M < c take decode. Returns (c, worst ratio to the faster path).
std::pair<int64_t, double> best_crossover(const std::vector<int64_t>& Ms, const std::vector<double>& dec,
                                          const std::vector<double>& pre) {
  std::vector<int64_t> cands(Ms.begin(), Ms.end());
  cands.push_back(kMaxCrossover);
  int64_t best = kMaxCrossover;
  double best_loss = 1e30;
  for (int64_t c : cands) {
    double loss = 1.0;
    for (size_t i = 0; i < Ms.size(); ++i) {
      const double t = Ms[i] < c ? dec[i] : pre[i];
      loss = std::max(loss, t / std::min(dec[i], pre[i]));
    }
    if (loss < best_loss - 1e-9 || (loss <= best_loss + 1e-9 && c > best)) best = c, best_loss = loss;
  }
  return {best, best_loss};
}

}  // namespace

int cmd_tune(const std::vector<std::string>& argv) {
  Args a(argv, {{"--preset", true}, {"--mode", true}, {"--iters", true}, {"--out", true}, {"--device", true}});
  const std::string preset = a.str("--preset", "qwen3-30b-a3b");
  const Preset& p = find_preset(preset);
  const MoeSpec spec = p.spec(parse_mode(a.str("--mode", "w4a16")));
  const int iters = static_cast<int>(a.integer("--iters", 20, 1, 10000));
  const int device = static_cast<int>(a.integer("--device", 0, 0, 1024));
  const std::string path = a.str("--out", tune_file_path());

  // Both kernels must be able to run here; say why not otherwise.
  const DeviceDesc d = DeviceDesc::probe();
  Problem prob;
  prob.spec = spec;
  prob.max_tokens = (kMaxCrossover - 1);
  prob.data = Memory::Device;
  prob.weights = Memory::Host;
  prob.device = device;
  std::string why;
  for (const char* b : {kCudaDecode, kCudaPrefill}) {
    const CanImplement v = can_implement(b, prob, d);
    if (v.verdict == Verdict::No) why += std::string("\n  ") + b + ": " + v.reason;
  }
  if (!why.empty()) {
    std::fprintf(stderr, "fp4moe tune: measuring the crossover needs a GPU that runs cuda-decode and cuda-prefill:%s\n",
                 why.c_str());
    return 1;
  }
#ifndef FP4MOE_WITH_CUDA
  return 1;  // unreachable: can_implement said no above
#else
  std::printf("tune        %s (%s) on %s, %d iterations per point\n", p.name.c_str(), to_string(spec.mode),
              d.gpus[static_cast<size_t>(device)].name.c_str(), iters);
  NvFp4Layer L = random_nvfp4_layer(spec, 1);
  if (spec.mode == Mode::W4A4) set_input_scales(L, 4.0f, 4.0f);
  const LogLevel saved = log_level();
  if (saved == LogLevel::Info) set_log_level(LogLevel::Warn);  // the two explicit selections are not news
  struct Restore {
    LogLevel l;
    ~Restore() { set_log_level(l); }
  } restore{saved};
  MoeOptions o;
  o.max_tokens = (kMaxCrossover - 1);
  o.device = device;
  o.data_on = Memory::Device;
  o.backend = kCudaDecode;
  Moe dec(spec, L.view(), o);
  o.backend = kCudaPrefill;
  Moe pre(spec, L.view(), o);

  const std::vector<int64_t> Ms = {1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 56, 64};
  const int64_t Mmax = Ms.back(), H = spec.hidden, k = spec.topk;
  auto check = [](cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
  };
  check(cudaSetDevice(device), "cudaSetDevice");
  void *dx, *di, *dw, *dout;
  check(cudaMalloc(&dx, static_cast<size_t>(Mmax * H) * 2), "cudaMalloc");
  check(cudaMalloc(&dout, static_cast<size_t>(Mmax * H) * 2), "cudaMalloc");
  check(cudaMalloc(&di, static_cast<size_t>(Mmax * k) * 4), "cudaMalloc");
  check(cudaMalloc(&dw, static_cast<size_t>(Mmax * k) * 4), "cudaMalloc");
  const auto x = random_hidden_states(Mmax, H, 3);
  check(cudaMemcpy(dx, x.data(), x.size() * 2, cudaMemcpyHostToDevice), "copy");
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "event");
  check(cudaEventCreate(&e1), "event");
  auto time_us = [&](Moe& m, int64_t M) {
    const TensorView xv(dx, DType::BF16, {M, H}), iv(di, DType::I32, {M, k}), wv(dw, DType::F32, {M, k});
    const MutableTensorView ov(dout, DType::BF16, {M, H});
    for (int i = 0; i < 3; ++i) m.forward(xv, iv, wv, ov, nullptr);  // warm up
    std::vector<float> t;
    for (int i = 0; i < iters; ++i) {
      check(cudaEventRecord(e0, nullptr), "record");
      m.forward(xv, iv, wv, ov, nullptr);
      check(cudaEventRecord(e1, nullptr), "record");
      check(cudaEventSynchronize(e1), "sync");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
      t.push_back(ms * 1000.0f);
    }
    std::sort(t.begin(), t.end());
    return static_cast<double>(t[t.size() / 2]);
  };
  std::vector<double> td, tp;
  std::printf("  %6s  %12s  %12s\n", "M", "decode us", "prefill us");
  for (int64_t M : Ms) {
    const Routing r = random_routing(M, spec.experts, k, static_cast<uint64_t>(M));
    check(cudaMemcpy(di, r.ids.data(), r.ids.size() * 4, cudaMemcpyHostToDevice), "copy");
    check(cudaMemcpy(dw, r.weights.data(), r.weights.size() * 4, cudaMemcpyHostToDevice), "copy");
    td.push_back(time_us(dec, M));
    tp.push_back(time_us(pre, M));
    std::printf("  %6lld  %12.1f  %12.1f\n", static_cast<long long>(M), td.back(), tp.back());
  }
  const auto [c, loss] = best_crossover(Ms, td, tp);
  // Check: the hybrid backend itself, with this crossover, against the faster path at each M.
  o.backend = kHybrid;
  o.crossover = c;
  Moe hyb(spec, L.view(), o);
  double worst = 0;
  std::printf("  %6s  %12s  %12s\n", "M", "hybrid us", "vs faster");
  for (size_t i = 0; i < Ms.size(); ++i) {
    const int64_t M = Ms[i];
    const Routing r = random_routing(M, spec.experts, k, static_cast<uint64_t>(M));
    check(cudaMemcpy(di, r.ids.data(), r.ids.size() * 4, cudaMemcpyHostToDevice), "copy");
    check(cudaMemcpy(dw, r.weights.data(), r.weights.size() * 4, cudaMemcpyHostToDevice), "copy");
    const double th = time_us(hyb, M), ratio = th / std::min(td[i], tp[i]);
    worst = std::max(worst, ratio);
    std::printf("  %6lld  %12.1f  %11.1f%%\n", static_cast<long long>(M), th, (ratio - 1.0) * 100.0);
  }
  std::printf("hybrid      worst %.1f%% slower than the faster path (measured)\n", (worst - 1.0) * 100.0);
  for (void* ptr : {dx, di, dw, dout}) cudaFree(ptr);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);

  write_tune_entry(path, tune_entry(d.gpus[static_cast<size_t>(device)].name, spec, c));
  std::printf("crossover   %lld tokens (hybrid is within %.1f%% of the faster path at every measured M)\n",
              static_cast<long long>(c), (loss - 1.0) * 100.0);
  std::printf("wrote       %s\n", path.c_str());
  return 0;
#endif
}

}  // namespace fp4moe::cli
