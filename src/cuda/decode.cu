// fp4moe: the decode backend - weight preparation, workspace and launch of the fused kernel.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "cuda/backend_api.hpp"
#include "cuda/common.cuh"
#include "cuda/decode_kernel.cuh"
#include "cuda/decode_layout.hpp"
#include "fp4moe/error.hpp"

namespace fp4moe::cuda {

namespace {

template <typename T>
T* device_alloc(size_t n) {
  void* p = nullptr;
  if (n == 0) n = 1;
  FP4MOE_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
  return static_cast<T*>(p);
}

// Copies a tensor view's bytes to the host (from wherever it lives).
std::vector<uint8_t> to_host(const TensorView& t, WeightsOn where) {
  std::vector<uint8_t> v(static_cast<size_t>(t.numel()) * dtype_size(t.dtype));
  if (v.empty()) return v;
  if (where == WeightsOn::Host) std::copy_n(static_cast<const uint8_t*>(t.data), v.size(), v.data());
  else FP4MOE_CUDA_CHECK(cudaMemcpy(v.data(), t.data, v.size(), cudaMemcpyDeviceToHost));
  return v;
}

// %nsmid: every %smid of the device is below it.
__global__ void sm_id_bound_kernel(int* out) {
  unsigned n;
  asm volatile("mov.u32 %0, %%nsmid;" : "=r"(n));
  *out = static_cast<int>(n);
}

// Absent scales mean 1.0.
std::vector<float> per_expert_or_one(const TensorView& t, WeightsOn where, int64_t E) {
  std::vector<float> v = per_expert_scales(t, where, E);
  if (v.empty()) v.assign(static_cast<size_t>(E), 1.0f);
  return v;
}

class DecodeKernel final : public MoeKernel {
 public:
  DecodeKernel(const MoeSpec& spec, const MoeWeights& w, WeightsOn where, int64_t max_tokens, int device)
      : spec_(spec), max_tokens_(max_tokens), device_(device) {
    validate_weights(spec, w);
    FP4MOE_CHECK_ARG(max_tokens >= 1 && max_tokens <= kDecodeMaxTokens, "max_tokens",
                     detail::concat("1..", kDecodeMaxTokens, " for the decode backend"), max_tokens);
    FP4MOE_CHECK_ARG(spec.topk <= 32, "topk", "<= 32 for the decode backend", spec.topk);
    FP4MOE_CHECK_ARG(spec.experts <= 32767, "experts", "<= 32767", spec.experts);
    FP4MOE_CUDA_CHECK(cudaSetDevice(device));
    dims_ = decode_dims(spec);
    const int64_t E = spec.experts;
    const auto w13 = to_host(w.w13, where), w13s = to_host(w.w13_scale, where);
    const auto w2 = to_host(w.w2, where), w2s = to_host(w.w2_scale, where);
    DecodePrepared prep = prepare_decode_weights(spec, w13.data(), w13s.data(), w2.data(), w2s.data());
    const auto g13 = per_expert_or_one(w.w13_scale_2, where, E), g2s = per_expert_or_one(w.w2_scale_2, where, E);
    const auto a13 = per_expert_or_one(w.a13_scale, where, E), a2 = per_expert_or_one(w.a2_scale, where, E);
    const bool a4 = spec.mode == Mode::W4A4;
    std::vector<float> g1(static_cast<size_t>(E)), g2(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {
      const size_t i = static_cast<size_t>(e);
      FP4MOE_CHECK_ARG(!a4 || (a13[i] > 0 && a2[i] > 0), "a13_scale/a2_scale",
                       "positive input scales (dequant direction)", detail::concat(a13[i], " / ", a2[i]));
      // times 2^63 (exact): the kernel's MMA operand is the weight times 2^-63 (decode_kernel.cu)
      g1[i] = (a4 ? g13[i] * a13[i] : g13[i]) * 0x1p63f;
      g2[i] = (a4 ? g2s[i] * a2[i] : g2s[i]) * 0x1p63f;
    }
    weight_bytes_ = prep.w1.size() + prep.w2.size();
    w1_ = device_alloc<uint8_t>(prep.w1.size());
    w2_ = device_alloc<uint8_t>(prep.w2.size());
    FP4MOE_CUDA_CHECK(cudaMemcpy(w1_, prep.w1.data(), prep.w1.size(), cudaMemcpyHostToDevice));
    FP4MOE_CUDA_CHECK(cudaMemcpy(w2_, prep.w2.data(), prep.w2.size(), cudaMemcpyHostToDevice));
    scales_ = device_alloc<float>(4 * static_cast<size_t>(E));
    std::vector<float> sc(g1);
    sc.insert(sc.end(), g2.begin(), g2.end());
    sc.insert(sc.end(), a13.begin(), a13.end());
    sc.insert(sc.end(), a2.begin(), a2.end());
    FP4MOE_CUDA_CHECK(cudaMemcpy(scales_, sc.data(), sc.size() * sizeof(float), cudaMemcpyHostToDevice));

    const int64_t P = max_tokens * spec.topk;
    // the kernel addresses x, xq and h rows by 32-bit element offsets
    const int64_t row_elems = P * std::max(dims_.Hk, dims_.Ik);
    FP4MOE_CHECK_ARG(row_elems < (int64_t{1} << 31), "max_tokens",
                     "max_tokens * topk * max(hidden, intermediate) below 2^31 for the decode backend", row_elems);
    ws_xq_ = a4 ? device_alloc<uint16_t>(static_cast<size_t>(P * dims_.H)) : nullptr;
    ws_h_ = device_alloc<uint16_t>(static_cast<size_t>(P * dims_.Ik));
    ws_z_ = device_alloc<float>(static_cast<size_t>(P * dims_.H));
    cudaDeviceProp prop{};
    FP4MOE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    FP4MOE_CHECK_ARG(prop.major >= 8, "device", "compute capability >= 8.0", detail::concat(prop.major, ".", prop.minor));
    FP4MOE_CHECK_ARG(prop.cooperativeLaunch, "device", "cooperative launch support", "none");
    setup(static_cast<int>(P), prop);

    // the launch word, invalid ids, CTA arrivals at launch per SM id, two counter sets
    // (DecodeParams::counters), then one per split FC1 task (fewer than the warps of the grid: see
    // the kernel)
    const int64_t round = int64_t{max_grid_} * kDecodeWarps;  // the most warps of any call's grid
    const int64_t split_ctr_at = kDecodeSmArrivalsAt + sm_ids_ + 2 * int64_t{decode_counter_set(static_cast<int>(E), sm_ids_)};
    const int64_t ncounters = split_ctr_at + round;
    counters_ = device_alloc<unsigned>(static_cast<size_t>(ncounters));
    FP4MOE_CUDA_CHECK(cudaMemset(counters_, 0, static_cast<size_t>(ncounters) * sizeof(unsigned)));
    split_ctr_ = counters_ + split_ctr_at;
    // partial sums of split FC1 tasks: 1 KB per split but the last, kMaxFc1Splits - 1 per task
    const int64_t part_bytes = round * (kMaxFc1Splits - 1) * 1024;
    ws_part_ = device_alloc<float>(static_cast<size_t>(part_bytes / 4));
    workspace_bytes_ = (a4 ? P * dims_.H * 2 : 0) + P * dims_.Ik * 2 + P * dims_.H * 4 + ncounters * 4 + part_bytes;
  }

  ~DecodeKernel() override {
    void* bufs[] = {w1_, w2_, scales_, ws_xq_, ws_h_, ws_z_, counters_, ws_part_};
    for (void* p : bufs)
      if (p) cudaFree(p);
  }

  const char* name() const override { return "cuda-decode"; }
  int64_t max_tokens() const override { return max_tokens_; }
  size_t weight_bytes() const override { return weight_bytes_; }
  size_t workspace_bytes() const override { return static_cast<size_t>(workspace_bytes_); }

  void forward(const void* x, const int32_t* ids, const float* wts, int64_t T, void* out, void* stream) override {
    FP4MOE_CHECK_ARG(T >= 0 && T <= max_tokens_, "tokens", detail::concat("0..", max_tokens_, " (max_tokens)"), T);
    if (T == 0) return;
    const void* ptrs[] = {x, out};
    const char* names[] = {"x", "out"};
    for (int i = 0; i < 2; ++i)
      FP4MOE_CHECK_ARG(ptrs[i] && reinterpret_cast<uintptr_t>(ptrs[i]) % 16 == 0, names[i],
                       "a 16-byte aligned device pointer", ptrs[i] ? "a misaligned pointer" : "null");
    FP4MOE_CHECK_ARG(ids && wts, "topk_ids/topk_weights", "device pointers", "null");
    const int64_t E = spec_.experts;
    DecodeParams p{};
    p.w1 = w1_;
    p.w2 = w2_;
    p.g1 = scales_;
    p.g2 = scales_ + E;
    p.a13 = scales_ + 2 * E;
    p.a2 = scales_ + 3 * E;
    p.x = static_cast<const __nv_bfloat16*>(x);
    p.ids = ids;
    p.wts = wts;
    p.out = static_cast<__nv_bfloat16*>(out);
    p.xq = reinterpret_cast<__nv_bfloat16*>(ws_xq_);
    p.h = reinterpret_cast<__nv_bfloat16*>(ws_h_);
    p.z = ws_z_;
    p.counters = counters_;
    p.invalid = counters_ + kDecodeInvalidIdCounter;
    p.T = static_cast<int>(T);
    p.k = static_cast<int>(spec_.topk);
    p.E = static_cast<int>(E);
    p.H = static_cast<int>(dims_.H);
    p.Ik = static_cast<int>(dims_.Ik);
    p.n1_tasks = static_cast<int>(dims_.n1_tasks);
    p.n2_tasks = static_cast<int>(dims_.n2_tasks);
    p.chunks1 = static_cast<int>(dims_.chunks1);
    p.chunks2 = static_cast<int>(dims_.chunks2);
    p.expert1_bytes = dims_.expert1_bytes;
    p.expert2_bytes = dims_.expert2_bytes;
    p.swiglu = dims_.swiglu;
    p.sm_ids = sm_ids_;
    const DecodeLaunchShape& ls = shape_[static_cast<size_t>(T - 1)];
    p.ctas_per_sm = ls.ctas_per_sm;
    p.pf_chunks = ls.fc1_first_round ? std::min<int>(kDecodeDepth, p.chunks1) : 0;
    p.part = ws_part_;
    p.wide_grid_magic = wide_magic_[0];
    p.wide_n1_magic = wide_magic_[1];
    p.wide_c2_magic = wide_magic_[2];
    for (int i = 0; i <= kWideWarps; ++i) p.wide_fc1_split[i] = wide_fc1_split_[i], p.wide_fc2_split[i] = wide_fc2_split_[i];
    p.split_ctr = split_ctr_;
    if (T <= wide_max_tokens_) launch_wide(p, static_cast<cudaStream_t>(stream));
    else launch(p, ls, static_cast<cudaStream_t>(stream));
  }

  int64_t take_invalid_id_count() override {
    unsigned v = 0;
    FP4MOE_CUDA_CHECK(cudaMemcpy(&v, counters_ + kDecodeInvalidIdCounter, sizeof(v), cudaMemcpyDeviceToHost));
    FP4MOE_CUDA_CHECK(cudaMemset(counters_ + kDecodeInvalidIdCounter, 0, sizeof(unsigned)));
    return v;
  }

 private:
  // The launch shape of every token count (decode_launch_shapes(): every CTA that fits, with
  // max_tokens' shared memory, but for batches whose FC1 tasks overflow that grid's first round).
  void setup(int P, const cudaDeviceProp& prop) {
    const void* fn = fused_decode_kernel_ptr(spec_.mode == Mode::W4A4);
    const int E = static_cast<int>(spec_.experts), k = static_cast<int>(spec_.topk);
    cudaFuncAttributes fa{};
    FP4MOE_CUDA_CHECK(cudaFuncGetAttributes(&fa, fn));
    // Programmatic dependent launches on sm_90 (both kernels begin with pdl_wait(), so nothing they
    // touch is read or written before the previous kernel in the stream has completed): the launch
    // overlaps that kernel's end. Measured on an H200 (one lease, two runs each, in-graph, every
    // launch after another of the layer): 0.4-0.7 us less at 1, 2 and 8 tokens of qwen3-30b-a3b,
    // nemotron and gpt-oss-120b (qwen3 one token 15.4 -> 14.9 us). FP4MOE_DECODE_PDL=0 turns it off.
    const char* pdl = std::getenv("FP4MOE_DECODE_PDL");
    chain_ = prop.major == 9 && fa.binaryVersion >= 90 && !(pdl && std::strcmp(pdl, "0") == 0);
    const size_t smem_limit = prop.sharedMemPerBlockOptin - fa.sharedSizeBytes;  // dynamic, beside the static
    const size_t smem_own = decode_smem_bytes(P, E);
    FP4MOE_CHECK_ARG(smem_own <= smem_limit, "experts/max_tokens",
                     detail::concat("a routing table within ", smem_limit, " bytes of shared memory"), smem_own);
    auto per_sm = [&](size_t smem) {  // (the limit raised first: a launch may then use that much)
      raise_dynamic_smem_limit(fn, device_, smem);
      int n = 0;
      FP4MOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, fn, kDecodeWarps * 32, smem));
      if (n < 1) throw Error("cuda-decode: the kernel cannot be resident with this shape (shared memory)");
      FP4MOE_CHECK_ARG(n <= kDecodeMaxTiers, "device", detail::concat("at most ", kDecodeMaxTiers, " CTAs per SM"), n);
      return n;
    };
    shape_ = decode_launch_shapes(dims_, P / k, smem_limit, prop.multiProcessorCount, per_sm);
    fn_ = fn;
    max_grid_ = 0;
    for (const DecodeLaunchShape& ls : shape_) max_grid_ = std::max<int>(max_grid_, ls.ctas_per_sm * prop.multiProcessorCount);
    sms_ = prop.multiProcessorCount;
    sm_ids_ = sm_id_bound();
    setup_wide(prop);
  }

  // The wide kernel (decode_kernel.cuh) takes batches of up to wide_max_tokens_ tokens, within
  // kWideMaxPairs routed pairs and when one CTA of it fits each SM with that batch's shared memory:
  // by default up to kDecodeWideTokens tokens when each CTA owns at most one 16-row output tile
  // (H <= 16 x SMs), and one token of a layer whose tiles are at most 1.5 x SMs;
  // FP4MOE_DECODE_WIDE=N sets N tokens whatever the shape (0: never - tests and measurements run
  // either kernel on any batch this way). The wide kernel gains in FC1 (each task's K over a CTA's
  // warps) and loses in FC2 where the tiles outnumber the SMs (the CTAs with two stream twice the bytes);
  // a gated FC1 has twice FC2's bytes. Measured on an H200 (session 19, two runs each, against the
  // fused kernel, us): qwen3-30b-a3b 18.7 -> 18.45 at one token, 23.7 -> 22.5 at two, 30.0 -> 36.7
  // at four; nemotron (168 tiles, ReLU^2) 24.6 -> 26.5 and 32.8 -> 37.0, deepseek-v3 (448) 61 -> 76
  // at one token; gpt-oss-120b (180) 33.2 -> 31.9 at one token but 40.0 -> 46.6 at two. Session 20
  // (one lease, two runs each, after the wide kernel's FC2 and combine changes): qwen3-30b-a3b
  // 18.5 -> 16.8 and 23.4 -> 21.5, gpt-oss-120b 33.1 -> 30.4-30.7 at one token, nemotron 24.3-24.5
  // -> 24.9-25.0 at one token. Session 23 (FC2's even split and 4-chunk rings, one lease, three runs
  // each): nemotron at one token 24.6-24.8 fused, 23.8-24.1 wide (now its default), at two 32.6-32.7
  // fused, 36.1 wide; gpt-oss-120b at two 40.6-40.7 fused, 43.8-44.0 wide. Session 26 (a CTA's two
  // tiles in one pass, one lease, two runs each): at two tokens nemotron 31.9-32.2 fused, 32.1-32.2
  // wide, gpt-oss-120b 39.8-40.1 fused, 40.1-40.4 wide - no gain from moving those batches.
  // Session 32 (qwen3-30b-a3b, one lease, two or three runs each, us, fused -> wide): with max_tokens
  // 8 (the fused grid 5 CTAs per SM) 3 tokens 29.2 -> 29.0-29.1, 4 tokens 33.6-33.7 -> 31.1, 5 tokens
  // 36.1-36.2 -> 37.7-37.8; but with max_tokens 64 (4 CTAs per SM, the bench's) 3 tokens 27.5-27.6 ->
  // 29.1, 4 tokens 29.1-29.2 -> 31.1 (W4A4 30.2 -> 31.5, 32.4 -> 33.3). The fused kernel at 4 tokens
  // is 4.5 us faster with 4 CTAs per SM than with 5 (and 2 us slower at 8 tokens: 50.2 against 48.3);
  // since kDecodeTableTokens every max_tokens gives it those 4, so kDecodeWideTokens stays 2.
  void setup_wide(const cudaDeviceProp& prop) {
    const int E = static_cast<int>(spec_.experts), k = static_cast<int>(spec_.topk);
    const int64_t tiles = spec_.hidden / 16, sms = prop.multiProcessorCount;
    int64_t want = tiles <= sms ? kDecodeWideTokens : 2 * tiles <= 3 * sms ? 1 : 0;
    if (const char* env = std::getenv("FP4MOE_DECODE_WIDE"); env && *env) want = std::max(0, std::atoi(env));
    const int64_t T = std::min({want, max_tokens_, int64_t{kWideMaxPairs / k}});
    wide_max_tokens_ = 0;
    if (T < 1) return;
    const void* fn = wide_decode_kernel_ptr(spec_.mode == Mode::W4A4);
    cudaFuncAttributes fa{};
    FP4MOE_CUDA_CHECK(cudaFuncGetAttributes(&fa, fn));
    const size_t smem = decode_wide_smem_bytes(static_cast<int>(T * k), E);
    if (smem + fa.sharedSizeBytes > prop.sharedMemPerBlockOptin) return;
    raise_dynamic_smem_limit(fn, device_, smem);
    int n = 0;
    FP4MOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, fn, kWideWarps * 32, smem));
    if (n < 1) return;
    // the work assignment's divisions as multiplies (DecodeParams::wide_grid_magic), exact while x * d
    // < 2^32: x <= n1 * grid for the grid (n1 = token tiles x tasks), x < n1 for n1_tasks, x below
    // kWideWarps token tiles' chunks for chunks2
    const uint64_t n1_tasks = static_cast<uint64_t>(dims_.n1_tasks), grid = static_cast<uint64_t>(sms_);
    const uint64_t c2 = static_cast<uint64_t>(dims_.chunks2);
    const uint64_t n1 = static_cast<uint64_t>(T * k) * n1_tasks, lim = uint64_t{1} << 32;
    if (n1 * grid * grid >= lim || n1 * n1_tasks >= lim || static_cast<uint64_t>(kWideWarps) * c2 * c2 >= lim ||
        dims_.chunks1 > 4095 || dims_.chunks2 > 4095)
      return;
    auto magic = [](uint64_t d) { return d <= 1 ? 0u : static_cast<unsigned>(((uint64_t{1} << 32) + d - 1) / d); };
    wide_magic_[0] = magic(grid);
    wide_magic_[1] = magic(n1_tasks);
    wide_magic_[2] = magic(c2);
    // n items (a CTA's FC1 tasks, or FC2's token tiles) of `chunks` chunks each over the warps: with
    // fewer items than warps, each item's chunks in s ranges of cps (as the kernel had computed them)
    auto split = [](int n, int chunks) {
      int s = n > 0 && n < kWideWarps ? std::min(kWideWarps / n, chunks) : 1;
      const int cps = (chunks + s - 1) / s;
      s = (chunks + cps - 1) / cps;
      return std::pair<int, int>{s, cps};
    };
    const int chunks1 = static_cast<int>(dims_.chunks1), chunks2 = static_cast<int>(dims_.chunks2);
    for (int n = 0; n <= kWideWarps; ++n) {
      const auto [s1, cps1] = split(n, chunks1);
      wide_fc1_split_[n] = static_cast<unsigned>(s1) | static_cast<unsigned>(cps1) << 5 | static_cast<unsigned>((256 + s1 - 1) / s1) << 17;
      // FC2: all the token tiles' chunks split evenly over the warps instead where that leaves the
      // longest warp fewer chunks
      const auto [s2, cps2] = split(n, chunks2);
      const bool spread = n < kWideWarps && (n * chunks2 + kWideWarps - 1) / kWideWarps < cps2;
      wide_fc2_split_[n] = static_cast<unsigned>(s2) | static_cast<unsigned>(cps2) << 5 | static_cast<unsigned>(spread) << 17;
    }
    wide_max_tokens_ = T;
    wide_smem_ = smem;
    wide_fn_ = fn;
  }

  void launch_wide(DecodeParams& p, cudaStream_t stream) {
    launch_cooperative(wide_fn_, sms_, kWideWarps, wide_smem_, chain_, p, stream);
  }

  // A kernel's dynamic shared memory limit is one per process and device: only ever raised, so
  // that an object built later with a smaller routing table leaves an earlier one's launches valid.
  static void raise_dynamic_smem_limit(const void* fn, int device, size_t smem) {
    static std::mutex m;
    static std::map<std::pair<const void*, int>, size_t> limit;
    std::lock_guard<std::mutex> lock(m);
    size_t& cur = limit[{fn, device}];
    if (smem <= cur) return;
    FP4MOE_CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    cur = smem;
  }

  // %nsmid of the current device (the kernel counts CTA arrivals per SM id)
  static int sm_id_bound() {
    int* d = device_alloc<int>(1);
    int n = 0;
    sm_id_bound_kernel<<<1, 1>>>(d);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaMemcpy(&n, d, sizeof(int), cudaMemcpyDeviceToHost);
    cudaFree(d);
    FP4MOE_CUDA_CHECK(e);
    if (n < 1) throw Error(detail::concat("cuda-decode: the device reports an SM id bound of ", n));
    return n;
  }

  void launch(DecodeParams& p, const DecodeLaunchShape& ls, cudaStream_t stream) {
    launch_cooperative(fn_, ls.ctas_per_sm * sms_, kDecodeWarps, ls.smem, chain_, p, stream);
  }

  static void launch_cooperative(const void* fn, int grid, int warps, size_t smem, bool chained, DecodeParams& p,
                                 cudaStream_t stream) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(static_cast<unsigned>(grid));
    cfg.blockDim = dim3(static_cast<unsigned>(warps * 32));
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeCooperative;  // all CTAs resident: the per-expert waits cannot deadlock
    attr[0].val.cooperative = 1;
    attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;  // (DecodeKernel::chain_)
    attr[1].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = chained ? 2 : 1;
    void* args[] = {&p};
    FP4MOE_CUDA_CHECK(cudaLaunchKernelExC(&cfg, fn, args));
  }

  MoeSpec spec_;
  int64_t max_tokens_;
  int device_;
  DecodeDims dims_;
  uint8_t* w1_ = nullptr;
  uint8_t* w2_ = nullptr;
  float* scales_ = nullptr;
  uint16_t* ws_xq_ = nullptr;
  uint16_t* ws_h_ = nullptr;
  float* ws_z_ = nullptr;
  float* ws_part_ = nullptr;
  unsigned* counters_ = nullptr;
  unsigned* split_ctr_ = nullptr;  // within counters_: one per split FC1 task
  size_t weight_bytes_ = 0;
  int64_t workspace_bytes_ = 0;
  const void* fn_ = nullptr;
  std::vector<DecodeLaunchShape> shape_;  // [tokens - 1]
  int max_grid_ = 0, sms_ = 0, sm_ids_ = 0;
  unsigned wide_magic_[3] = {};  // DecodeParams::wide_grid_magic, wide_n1_magic, wide_c2_magic
  unsigned wide_fc1_split_[kWideWarps + 1] = {}, wide_fc2_split_[kWideWarps + 1] = {};
  int64_t wide_max_tokens_ = 0;  // batches of up to this many tokens run the wide kernel
  size_t wide_smem_ = 0;
  const void* wide_fn_ = nullptr;  // the wide kernel of this layer's mode
  bool chain_ = false;  // programmatic dependent launches (the sm_90a code is loaded)
};

}  // namespace

std::unique_ptr<MoeKernel> make_decode_kernel(const MoeSpec& spec, const MoeWeights& weights, WeightsOn where,
                                              int64_t max_tokens, int device) {
  return std::make_unique<DecodeKernel>(spec, weights, where, max_tokens, device);
}

}  // namespace fp4moe::cuda
