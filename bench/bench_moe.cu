// fp4moe bench: times an fp4moe MoE backend against the hardware floors and a cuBLAS bf16
// MoE baseline, all measured in the same run on the same GPU.
//
//   decode  (default M = 1..64): floor = bytes of the touched experts' NVFP4 weights and scales
//           / measured device-to-device copy bandwidth (bytes read + written).
//   prefill (default M = 256..16384): rate = useful FLOPs 2 * pairs * (H * N1 + I * H) / time,
//           compared with the measured cuBLAS bf16 8192^3 GEMM rate.
// Timing: CUDA events around CUDA-graph replays, median of --reps. Each replay holds N
// launches (--launches, rounded up to a multiple of C) that go round C copies of the layer's
// weights, C chosen so that the C - 1 other copies' touched weights (k experts each at least)
// are at least twice L2: every launch reads its weights from HBM, as the layers of a model's
// decode graph do; the time per launch is the replay's / N, so one replay's fixed cost (the
// events, the graph's launch: 2.5-4.5 us on an H200) is not counted N times. Where the GPU's
// memory holds fewer copies, that side is timed one launch per replay, after an L2 flush. The
// fp4moe kernel is also timed alone - one launch per replay, L2 flushed (a 4x-L2 read) before
// each - and that time is reported beside it (`fp4moe_single_us`). The baseline: the same
// routing grouped per expert on the host, a gather, one cuBLAS bf16 GEMM per touched expert
// (fp32 accumulation) for FC1, the activation, one GEMM per expert for FC2, and the same
// fixed-order fp32 combine.
// Decode also reports a read ceiling (`read_us`): one launch that does nothing but read the
// floor's bytes - the touched experts' NVFP4 bytes, at random expert offsets in a buffer of the
// same copies - timed the same way (in-graph, going round the copies). It is what a single
// launch can stream in this run, ramp-up and tail included: the floor divides by the bandwidth
// of a 1 GB copy, which a launch of a few MB does not reach (on an H200: 21 MB, the touched
// bytes of qwen3-30b-a3b at one token, in 1.30x the floor; from ~130 MB on, 0.88-0.95x, since a
// copy also writes).
// --routing random (default): top-k of uniformly random experts per token; skewed: every token
// to the same k experts (0..k-1), the worst case for load balance.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/backend_api.hpp"
#ifdef FP4MOE_DECODE_TRACE
#include "cuda/decode_kernel.cuh"
#endif
#include "fp4moe/presets.hpp"
#include "fp4moe/synthetic.hpp"

using namespace fp4moe;

#define CK(call)                                                                                   \
  do {                                                                                             \
    cudaError_t e_ = (call);                                                                       \
    if (e_ != cudaSuccess) {                                                                       \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", #call, __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                                                \
    }                                                                                              \
  } while (0)
#define CB(call)                                                                        \
  do {                                                                                  \
    cublasStatus_t s_ = (call);                                                         \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                  \
      std::fprintf(stderr, "cuBLAS error %d at %s:%d\n", static_cast<int>(s_), __FILE__, __LINE__); \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

namespace {

__global__ void fill_bf16(__nv_bfloat16* p, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * static_cast<size_t>(blockDim.x)) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = __float2bfloat16((static_cast<float>(h & 0xFFFF) / 65536.0f - 0.5f) * scale);
  }
}
__global__ void gather_rows(const __nv_bfloat16* x, const int* tok, __nv_bfloat16* xg, int P, int H) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < P * (H / 8); i += gridDim.x * blockDim.x) {
    const int s = i / (H / 8), c = i % (H / 8);
    reinterpret_cast<uint4*>(xg + static_cast<size_t>(s) * H)[c] =
        reinterpret_cast<const uint4*>(x + static_cast<size_t>(tok[s]) * H)[c];
  }
}
__global__ void activation(const __nv_bfloat16* y, __nv_bfloat16* h, int P, int I, int swiglu) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < P * I; i += gridDim.x * blockDim.x) {
    const int s = i / I, c = i % I;
    float v;
    if (swiglu) {
      const float g = __bfloat162float(y[static_cast<size_t>(s) * 2 * I + c]);
      const float u = __bfloat162float(y[static_cast<size_t>(s) * 2 * I + I + c]);
      v = g / (1.0f + expf(-g)) * u;
    } else {
      const float r = fmaxf(__bfloat162float(y[static_cast<size_t>(s) * I + c]), 0.0f);
      v = r * r;
    }
    h[i] = __float2bfloat16(v);
  }
}
__global__ void combine(const __nv_bfloat16* z, const int* slot_of_pair, const float* w, __nv_bfloat16* out, int T, int k,
                        int H) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < T * H; i += gridDim.x * blockDim.x) {
    const int t = i / H, o = i % H;
    float acc = 0.0f;
    for (int j = 0; j < k; ++j)
      acc = __fadd_rn(acc, __fmul_rn(w[t * k + j], __bfloat162float(z[static_cast<size_t>(slot_of_pair[t * k + j]) * H + o])));
    out[i] = __float2bfloat16(acc);
  }
}

__global__ void copy_kernel(const uint4* __restrict__ src, uint4* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * static_cast<size_t>(blockDim.x))
    dst[i] = src[i];
}

// Reads a buffer larger than L2: evicts the weights without leaving dirty lines behind (a
// memset would leave L2 full of writes that the timed kernel then pays to write back).
__global__ void flush_read(const uint4* __restrict__ p, size_t n, unsigned* sink) {
  uint32_t acc = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * static_cast<size_t>(blockDim.x)) {
    const uint4 v = __ldcg(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;  // practically never: keeps the loads alive
}

// The read ceiling's kernel: every thread reads 16-byte words of the n touched experts (expert
// ex[i] of the copy at base) at a grid stride, 8 loads in flight, L1 not allocated. (Measured
// on an H200 for 20 and 40 MB: 4 CTAs of 256 threads per SM with 8 loads each was the fastest
// of 1..8 CTAs per SM and 4, 8 or 16 loads.)
__global__ void __launch_bounds__(256) read_touched(const uint4* __restrict__ base, const int* __restrict__ ex,
                                                    unsigned expert_u4, unsigned n, unsigned* sink) {
  constexpr int kLoads = 8;
  const unsigned total = expert_u4 * n, nthr = gridDim.x * blockDim.x;
  uint32_t acc = 0;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += nthr * kLoads) {
    uint4 v[kLoads];
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      const unsigned j = i + u * nthr;
      v[u] = make_uint4(0, 0, 0, 0);
      if (j < total) {
        const uint4* a = base + static_cast<size_t>(ex[j / expert_u4]) * expert_u4 + j % expert_u4;
        asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                     : "=r"(v[u].x), "=r"(v[u].y), "=r"(v[u].z), "=r"(v[u].w)
                     : "l"(a));
      }
    }
#pragma unroll
    for (int u = 0; u < kLoads; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;  // practically never: keeps the loads alive
}

struct Timer {
  cudaStream_t st;
  cudaEvent_t a, b;
  void* flush = nullptr;
  size_t flush_bytes;
  explicit Timer(size_t l2) : flush_bytes(std::max<size_t>(4 * l2, 64u << 20)) {
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    CK(cudaMalloc(&flush, flush_bytes));
    CK(cudaMemset(flush, 0x5a, flush_bytes));
    CK(cudaMalloc(&sink, 16));
  }
  unsigned* sink = nullptr;
  // median of reps timed replays of g, each after an L2 flush; microseconds
  double time_graph(cudaGraphExec_t g, int reps, bool flush_l2 = true) {
    std::vector<float> ms;
    for (int i = 0; i < reps + 2; ++i) {
      if (flush_l2) flush_read<<<1024, 256, 0, st>>>(static_cast<const uint4*>(flush), flush_bytes / 16, sink);
      CK(cudaEventRecord(a, st));
      CK(cudaGraphLaunch(g, st));
      CK(cudaEventRecord(b, st));
      CK(cudaEventSynchronize(b));
      float t = 0;
      CK(cudaEventElapsedTime(&t, a, b));
      if (i >= 2) ms.push_back(t);  // two warm-up replays
    }
    std::sort(ms.begin(), ms.end());
    return 1000.0 * ms[ms.size() / 2];
  }
};

template <typename F>
cudaGraphExec_t capture(cudaStream_t st, F&& body) {
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  body();
  CK(cudaStreamEndCapture(st, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  CK(cudaGraphDestroy(g));
  return ge;
}

double measure_copy_gbps(Timer& tm) {
  const size_t n = size_t(2) << 30;
  void *src, *dst;
  CK(cudaMalloc(&src, n));
  CK(cudaMalloc(&dst, n));
  CK(cudaMemset(src, 1, n));
  // the better of cudaMemcpyAsync and a 16-byte-per-thread copy kernel
  auto g = capture(tm.st, [&] { CK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, tm.st)); });
  double us = tm.time_graph(g, 10, false);
  CK(cudaGraphExecDestroy(g));
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  g = capture(tm.st, [&] {
    copy_kernel<<<sms * 8, 512, 0, tm.st>>>(static_cast<const uint4*>(src), static_cast<uint4*>(dst), n / 16);
  });
  us = std::min(us, tm.time_graph(g, 10, false));
  CK(cudaGraphExecDestroy(g));
  CK(cudaFree(src));
  CK(cudaFree(dst));
  return 2.0 * n / (us * 1e-6) / 1e9;
}

double measure_gemm_tflops(Timer& tm, cublasHandle_t cb) {
  const int n = 8192;
  __nv_bfloat16 *A, *B, *C;
  CK(cudaMalloc(&A, size_t(n) * n * 2));
  CK(cudaMalloc(&B, size_t(n) * n * 2));
  CK(cudaMalloc(&C, size_t(n) * n * 2));
  fill_bf16<<<1024, 256, 0, tm.st>>>(A, size_t(n) * n, 1, 2.0f);
  fill_bf16<<<1024, 256, 0, tm.st>>>(B, size_t(n) * n, 2, 2.0f);
  const float one = 1.0f, zero = 0.0f;
  auto g = capture(tm.st, [&] {
    CB(cublasGemmEx(cb, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, A, CUDA_R_16BF, n, B, CUDA_R_16BF, n, &zero, C,
                    CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  });
  const double us = tm.time_graph(g, 20, false);
  CK(cudaGraphExecDestroy(g));
  CK(cudaFree(A));
  CK(cudaFree(B));
  CK(cudaFree(C));
  return 2.0 * n * double(n) * n / (us * 1e-6) / 1e12;
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(std::stoll(item));
  return v;
}
std::vector<std::string> parse_names(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(item);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> opt = {{"--backend", "decode"},
                                            {"--presets", "qwen3-30b-a3b,nemotron-3-nano-30b-a3b,deepseek-v3,gpt-oss-120b"},
                                            {"--tokens", ""},
                                            {"--mode", "w4a16"},
                                            {"--reps", "20"},
                                            {"--json", ""},
                                            {"--commit", "unknown"},
                                            {"--seed", "1"},
                                            {"--routing", "random"},
                                            {"--launches", "8"},
                                            {"--max-tokens", ""}};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (!opt.count(a) || i + 1 >= argc) {
      std::fprintf(stderr, "usage: bench_moe [--backend decode|prefill] [--presets a,b] [--tokens 1,2,..] [--mode w4a16|w4a4] [--reps N] [--json FILE] [--commit SHA] [--routing random|skewed] [--max-tokens N] [--launches N]\n");
      return 2;
    }
    opt[a] = argv[++i];
  }
  const bool prefill = opt["--backend"] == "prefill";
  const bool skewed = opt["--routing"] == "skewed";
  if (!skewed && opt["--routing"] != "random") {
    std::fprintf(stderr, "--routing: expected random or skewed, got %s\n", opt["--routing"].c_str());
    return 2;
  }
  if (!prefill && opt["--backend"] != "decode") {
    std::fprintf(stderr, "--backend: expected decode or prefill, got %s\n", opt["--backend"].c_str());
    return 2;
  }
  const auto Ms = parse_list(opt["--tokens"].empty() ? (prefill ? "256,1024,4096,16384" : "1,2,4,8,16,32,64")
                                                     : opt["--tokens"]);
  // the backend's max_tokens (what an engine sizes it for): by default the largest M measured
  int64_t max_tokens = *std::max_element(Ms.begin(), Ms.end());
  if (!opt["--max-tokens"].empty()) {
    const std::string& v = opt["--max-tokens"];
    size_t used = 0;
    try {
      max_tokens = std::stoll(v, &used);
    } catch (...) {
      used = 0;
    }
    if (used == 0 || used != v.size() || max_tokens < *std::max_element(Ms.begin(), Ms.end())) {
      std::fprintf(stderr, "--max-tokens: expected an integer, at least the largest M measured, got %s\n", v.c_str());
      return 2;
    }
  }
  const Mode mode = parse_mode(opt["--mode"]);
  const int reps = std::stoi(opt["--reps"]);
  const int launches_min = std::atoi(opt["--launches"].c_str());
  if (launches_min < 1 || launches_min > 64) {
    std::fprintf(stderr, "--launches: expected 1..64 launches per timed replay, got %s\n", opt["--launches"].c_str());
    return 2;
  }
  const uint64_t seed = std::stoull(opt["--seed"]);

  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  Timer tm(static_cast<size_t>(prop.l2CacheSize));
  cublasHandle_t cb;
  CB(cublasCreate(&cb));
  CB(cublasSetStream(cb, tm.st));
  void* cb_ws;
  CK(cudaMalloc(&cb_ws, 64 << 20));
  CB(cublasSetWorkspace(cb, cb_ws, 64 << 20));
  const double copy_gbps = measure_copy_gbps(tm);
  const double gemm_tf = measure_gemm_tflops(tm, cb);
  std::printf("device %s, %d SMs, L2 %d MB | copy %.0f GB/s (read+write) | cuBLAS bf16 8192^3 %.0f TFLOP/s | %s routing\n",
              prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20, copy_gbps, gemm_tf, opt["--routing"].c_str());

  std::ostringstream rows;
  bool first_row = true;
  std::printf("\n%-26s %6s %6s %8s %10s %10s %7s %10s %8s %9s %9s%s\n", "preset", "M", "exp", "floor_us", "fp4moe_us",
              "bound_us", "xfloor", "cublas_us", "speedup", prefill ? "TFLOP/s" : "GB/s", "alone_us",
              prefill ? "" : "   read_us");
  for (const auto& name : parse_names(opt["--presets"])) {
    const Preset& pr = find_preset(name);
    MoeSpec spec = pr.spec(mode);
    const int64_t H = spec.hidden, I = spec.inter, N1 = spec.n1(), E = spec.experts, k = spec.topk;
    const auto t0 = std::chrono::steady_clock::now();
    NvFp4Layer L = random_nvfp4_layer(spec, seed);
    if (mode == Mode::W4A4) set_input_scales(L, 4.0f, 4.0f);
    // copies of the layer, so that consecutive launches read their weights from HBM (see the top)
    const size_t l2 = static_cast<size_t>(prop.l2CacheSize);
    const size_t expert_bytes = L.expert_bytes();
    const size_t expert_bf16 = static_cast<size_t>(N1 * H + H * I) * 2;
    auto copies_wanted = [&](size_t eb) { return 1 + static_cast<int>((2 * l2 + k * eb - 1) / (k * eb)); };
    const int want = copies_wanted(expert_bytes), want_bf16 = copies_wanted(expert_bf16);
    // as many of them as the GPU's memory holds, leaving 1 GB and one bf16 copy's room
    const size_t bf16_copy = static_cast<size_t>(E) * expert_bf16, reserve = size_t(1) << 30;
    auto free_bytes = [] {
      size_t f = 0, t = 0;
      CK(cudaMemGetInfo(&f, &t));
      return f;
    };
    std::vector<std::unique_ptr<cuda::MoeKernel>> kern;
    auto make = [&] {
      kern.push_back(prefill ? cuda::make_prefill_kernel(spec, L.view(), cuda::WeightsOn::Host, max_tokens, 0)
                             : cuda::make_decode_kernel(spec, L.view(), cuda::WeightsOn::Host, max_tokens, 0));
    };
    make();
    const size_t fp4_copy = kern[0]->weight_bytes() + kern[0]->workspace_bytes();
    while (static_cast<int>(kern.size()) < want && free_bytes() > fp4_copy + bf16_copy + reserve) make();
    L = NvFp4Layer{};  // host copy no longer needed
    // bf16 baseline weights: every expert, device resident
    std::vector<__nv_bfloat16*> W1, W2;
    while (static_cast<int>(W1.size()) < want_bf16 && (W1.empty() || free_bytes() > bf16_copy + reserve)) {
      const int c = static_cast<int>(W1.size());
      W1.push_back(nullptr), W2.push_back(nullptr);
      CK(cudaMalloc(&W1.back(), size_t(E) * N1 * H * 2));
      CK(cudaMalloc(&W2.back(), size_t(E) * H * I * 2));
      fill_bf16<<<4096, 256, 0, tm.st>>>(W1.back(), size_t(E) * N1 * H, 11 + 2 * c, 0.05f);
      fill_bf16<<<4096, 256, 0, tm.st>>>(W2.back(), size_t(E) * H * I, 12 + 2 * c, 0.05f);
    }
    const int copies = static_cast<int>(kern.size()), copies_bf16 = static_cast<int>(W1.size());
    // launches per timed replay: a multiple of the copies; or, without enough copies, one launch
    // per replay after an L2 flush
    const bool rotate = copies == want, rotate_bf16 = copies_bf16 == want_bf16;
    auto launches = [&](bool rot, int c) { return rot ? c * ((launches_min + c - 1) / c) : 1; };
    const int n_fp4 = launches(rotate, copies), n_bf16 = launches(rotate_bf16, copies_bf16);
    // the read ceiling's buffer (decode, when the kernel is timed going round its copies): as many
    // copies of every expert's NVFP4 bytes, if the memory holds them
    const size_t read_copy = static_cast<size_t>(E) * expert_bytes;
    uint8_t* RB = nullptr;
    const bool read_ceiling = !prefill && rotate && expert_bytes % 16 == 0 &&
                              read_copy * copies / 16 < (size_t(1) << 31) && free_bytes() > read_copy * copies + reserve;
    if (read_ceiling) {
      CK(cudaMalloc(&RB, read_copy * copies));
      CK(cudaMemsetAsync(RB, 0x5a, read_copy * copies, tm.st));
    } else if (!prefill) {
      std::fprintf(stderr, "  %s: no read ceiling (memory or size)\n", name.c_str());
    }
    CK(cudaStreamSynchronize(tm.st));
    if (!rotate || !rotate_bf16)
      std::fprintf(stderr, "  %s: memory for %d of %d fp4 and %d of %d bf16 weight copies: %s timed one launch per replay, after an L2 flush\n",
                   name.c_str(), copies, want, copies_bf16, want_bf16,
                   !rotate && !rotate_bf16 ? "both" : !rotate ? "fp4moe" : "the cuBLAS baseline");
    std::fprintf(stderr, "  %s: prepared in %.1f s (%d copies, %d launches per replay; bf16: %d, %d)\n", name.c_str(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), copies, n_fp4, copies_bf16,
                 n_bf16);

    for (int64_t M : Ms) {
      const int64_t P = M * k;
      auto x = random_hidden_states(M, H, seed + static_cast<uint64_t>(M));
      Routing r = random_routing(M, E, k, seed + 100 + static_cast<uint64_t>(M));
      if (skewed)  // every token to experts 0..k-1 (the weights stay random)
        for (int64_t p = 0; p < P; ++p) r.ids[static_cast<size_t>(p)] = static_cast<int32_t>(p % k);
      // host grouping for the baseline (and the touched-expert count for the floor)
      std::vector<std::vector<int>> pairs_of(static_cast<size_t>(E));
      for (int64_t p = 0; p < P; ++p) pairs_of[static_cast<size_t>(r.ids[static_cast<size_t>(p)])].push_back(static_cast<int>(p));
      std::vector<int> tok_of_slot, slot_of_pair(static_cast<size_t>(P)), ecount, eoff;
      std::vector<int64_t> experts;
      for (int64_t e = 0; e < E; ++e) {
        const auto& v = pairs_of[static_cast<size_t>(e)];
        if (v.empty()) continue;
        experts.push_back(e);
        eoff.push_back(static_cast<int>(tok_of_slot.size()));
        ecount.push_back(static_cast<int>(v.size()));
        for (int p : v) {
          slot_of_pair[static_cast<size_t>(p)] = static_cast<int>(tok_of_slot.size());
          tok_of_slot.push_back(static_cast<int>(p / k));
        }
      }
      const int64_t touched = static_cast<int64_t>(experts.size());
      // device buffers
      __nv_bfloat16 *dx, *dout, *dxg, *dy, *dh, *dz;
      int *dids, *dtok, *dslot;
      float* dw;
      CK(cudaMalloc(&dx, size_t(M) * H * 2));
      CK(cudaMalloc(&dout, size_t(M) * H * 2));
      CK(cudaMalloc(&dxg, size_t(P) * H * 2));
      CK(cudaMalloc(&dy, size_t(P) * N1 * 2));
      CK(cudaMalloc(&dh, size_t(P) * I * 2));
      CK(cudaMalloc(&dz, size_t(P) * H * 2));
      CK(cudaMalloc(&dids, size_t(P) * 4));
      CK(cudaMalloc(&dtok, size_t(P) * 4));
      CK(cudaMalloc(&dslot, size_t(P) * 4));
      CK(cudaMalloc(&dw, size_t(P) * 4));
      CK(cudaMemcpy(dx, x.data(), x.size() * 2, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dids, r.ids.data(), size_t(P) * 4, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dw, r.weights.data(), size_t(P) * 4, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dtok, tok_of_slot.data(), size_t(P) * 4, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dslot, slot_of_pair.data(), size_t(P) * 4, cudaMemcpyHostToDevice));

#ifdef FP4MOE_DECODE_TRACE
      // the profiling build: the timeline of the last launch of one more replay of g
      auto print_trace = [&](cudaGraphExec_t g, bool flush_l2, double us, const char* what) {
        cuda::decode_trace_reset();
        CK(cudaDeviceSynchronize());
        (void)tm.time_graph(g, 1, flush_l2);
        std::printf("  %s M=%lld: %.1f %s\n", name.c_str(), static_cast<long long>(M), us, what);
        cuda::decode_trace_print();
      };
#endif
      double fp4_us = 0;
      cudaGraphExec_t g_fp4;
      if (rotate) {
        g_fp4 = capture(tm.st, [&] {
          for (int j = 0; j < n_fp4; ++j) kern[static_cast<size_t>(j % copies)]->forward(dx, dids, dw, M, dout, tm.st);
        });
        fp4_us = tm.time_graph(g_fp4, reps, false) / n_fp4;
#ifdef FP4MOE_DECODE_TRACE
        // the last launch of one more replay: code and small data warm, weights from HBM
        if (!prefill) print_trace(g_fp4, false, fp4_us, "us in-graph; the last launch of a replay:");
#endif
        CK(cudaGraphExecDestroy(g_fp4));
      }
      g_fp4 = capture(tm.st, [&] { kern[0]->forward(dx, dids, dw, M, dout, tm.st); });
      const double single_us = tm.time_graph(g_fp4, reps);
      if (!rotate) fp4_us = single_us;
#ifdef FP4MOE_DECODE_TRACE
      // one more replay, after an L2 flush (code and data cold)
      if (!prefill) print_trace(g_fp4, true, single_us, "us alone");
#endif
      CK(cudaGraphExecDestroy(g_fp4));
      CK(cudaGetLastError());

      double read_us = -1;  // -1: not measured
      if (read_ceiling) {
        int* dex;
        std::vector<int> ex(experts.begin(), experts.end());
        CK(cudaMalloc(&dex, ex.size() * 4));
        CK(cudaMemcpy(dex, ex.data(), ex.size() * 4, cudaMemcpyHostToDevice));
        const unsigned expert_u4 = static_cast<unsigned>(expert_bytes / 16);
        auto g_read = capture(tm.st, [&] {
          for (int j = 0; j < n_fp4; ++j)
            read_touched<<<4 * prop.multiProcessorCount, 256, 0, tm.st>>>(
                reinterpret_cast<const uint4*>(RB + static_cast<size_t>(j % copies) * read_copy), dex, expert_u4,
                static_cast<unsigned>(ex.size()), tm.sink);
        });
        read_us = tm.time_graph(g_read, reps, false) / n_fp4;
        CK(cudaGraphExecDestroy(g_read));
        CK(cudaFree(dex));
        CK(cudaGetLastError());
      }

      const float one = 1.0f, zero = 0.0f;
      // one launch of the baseline on weight copy c
      auto base_launch = [&](int c) {
        const __nv_bfloat16* w1 = W1[static_cast<size_t>(c)];
        const __nv_bfloat16* w2 = W2[static_cast<size_t>(c)];
        gather_rows<<<std::min<int64_t>(4096, (P * H / 8 + 255) / 256), 256, 0, tm.st>>>(dx, dtok, dxg, static_cast<int>(P), static_cast<int>(H));
        for (size_t i = 0; i < experts.size(); ++i) {
          const int64_t e = experts[i];
          CB(cublasGemmEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N1), ecount[i], static_cast<int>(H), &one,
                          w1 + size_t(e) * N1 * H, CUDA_R_16BF, static_cast<int>(H), dxg + size_t(eoff[i]) * H, CUDA_R_16BF,
                          static_cast<int>(H), &zero, dy + size_t(eoff[i]) * N1, CUDA_R_16BF, static_cast<int>(N1),
                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
        activation<<<std::min<int64_t>(4096, (P * I + 255) / 256), 256, 0, tm.st>>>(dy, dh, static_cast<int>(P), static_cast<int>(I),
                                                                             spec.activation == Activation::SwiGLU);
        for (size_t i = 0; i < experts.size(); ++i) {
          const int64_t e = experts[i];
          CB(cublasGemmEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(H), ecount[i], static_cast<int>(I), &one,
                          w2 + size_t(e) * H * I, CUDA_R_16BF, static_cast<int>(I), dh + size_t(eoff[i]) * I, CUDA_R_16BF,
                          static_cast<int>(I), &zero, dz + size_t(eoff[i]) * H, CUDA_R_16BF, static_cast<int>(H),
                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
        combine<<<std::min<int64_t>(4096, (M * H + 255) / 256), 256, 0, tm.st>>>(dz, dslot, dw, dout, static_cast<int>(M), static_cast<int>(k),
                                                                          static_cast<int>(H));
      };
      auto g_base = capture(tm.st, [&] {
        for (int j = 0; j < n_bf16; ++j) base_launch(j % copies_bf16);
      });
      const double base_us = tm.time_graph(g_base, reps, !rotate_bf16) / n_bf16;
      CK(cudaGraphExecDestroy(g_base));
      CK(cudaGetLastError());

      const double bytes = double(touched) * double(expert_bytes);
      const double floor_us = bytes / (copy_gbps * 1e9) * 1e6;
      const double bound_us = 1.25 * floor_us + 4.0;
      const double flops = 2.0 * double(P) * double(H * N1 + I * H);
      const double tflops = flops / (fp4_us * 1e-6) / 1e12;
      const double gbps = bytes / (fp4_us * 1e-6) / 1e9;
      std::printf("%-26s %6lld %6lld %8.1f %10.1f %10.1f %7.2f %10.1f %8.2f %9.1f %9.1f", name.c_str(),
                  static_cast<long long>(M), static_cast<long long>(touched), floor_us, fp4_us, bound_us, fp4_us / floor_us,
                  base_us, base_us / fp4_us, prefill ? tflops : gbps, single_us);
      if (!prefill) std::printf(" %9.1f", read_us);
      std::printf("\n");
      rows << (first_row ? "" : ",\n") << "    {\"preset\": \"" << name << "\", \"mode\": \"" << to_string(mode)
           << "\", \"M\": " << M << ", \"touched_experts\": " << touched << ", \"weight_bytes\": " << bytes
           << ", \"floor_us\": " << floor_us << ", \"fp4moe_us\": " << fp4_us << ", \"ratio_to_floor\": " << fp4_us / floor_us
           << ", \"fp4moe_single_us\": " << single_us << ", \"weight_copies\": " << copies
           << ", \"launches_per_replay\": " << n_fp4 << ", \"cublas_weight_copies\": " << copies_bf16
           << ", \"cublas_launches_per_replay\": " << n_bf16
           << ", \"decode_bound_us\": " << bound_us << ", \"cublas_bf16_us\": " << base_us
           << (prefill ? "" : ", \"read_ceiling_us\": ") << (prefill ? std::string() : std::to_string(read_us))
           << ", \"speedup_vs_cublas\": " << base_us / fp4_us << ", \"effective_tflops\": " << tflops
           << ", \"ratio_to_gemm_rate\": " << tflops / gemm_tf << ", \"achieved_GBps\": " << gbps << "}";
      first_row = false;
      for (void* p : {static_cast<void*>(dx), static_cast<void*>(dout), static_cast<void*>(dxg), static_cast<void*>(dy),
                      static_cast<void*>(dh), static_cast<void*>(dz), static_cast<void*>(dids), static_cast<void*>(dtok),
                      static_cast<void*>(dslot), static_cast<void*>(dw)})
        CK(cudaFree(p));
    }
    for (auto* p : W1) CK(cudaFree(p));
    for (auto* p : W2) CK(cudaFree(p));
    if (RB != nullptr) CK(cudaFree(RB));
  }
  if (!opt["--json"].empty()) {
    std::time_t now = std::time(nullptr);
    char date[32];
    std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    std::ofstream f(opt["--json"]);
    f << "{\n  \"bench\": \"" << (prefill ? "prefill" : "decode") << "\", \"device\": \"" << prop.name
      << "\", \"commit\": \"" << opt["--commit"] << "\", \"date\": \"" << date << "\", \"routing\": \"" << opt["--routing"]
      << "\",\n  \"copy_GBps\": " << copy_gbps
      << ", \"cublas_bf16_gemm_tflops\": " << gemm_tf << ", \"reps\": " << reps << ", \"max_tokens\": " << max_tokens
      << ", \"timing\": \"CUDA events around CUDA-graph replays of N launches on weight copies in turn (each launch's weights from HBM), median / N; N = launches_per_replay (1: not enough memory for the copies, one launch per replay after an L2 flush); fp4moe_single_us: one launch per replay, L2 flushed before each; read_ceiling_us (decode): a launch that only reads the touched experts' NVFP4 bytes, timed like fp4moe_us (-1: not measured)\",\n  \"rows\": [\n"
      << rows.str() << "\n  ]\n}\n";
    std::printf("\nwrote %s\n", opt["--json"].c_str());
  }
  return 0;
}
