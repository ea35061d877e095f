// fp4moe: the prefill backend (hundreds to tens of thousands of tokens).
//
// One forward() is a fixed sequence of launches, all sized from max_tokens (CUDA-graph safe,
// no host read of device counts, no allocation):
//   1. route_count / route_scan / route_scatter: group the routed pairs by expert on the GPU
//      (per-expert counts, slot offsets, tile schedule); ids outside [0, E) are counted in a
//      device flag and skipped.
//   2. stage the FC1 input in slot order (one row per routed pair, grouped by expert), in W4A4
//      quantized per 16-block with the pair's expert's a13_scale: both GEMMs read their A rows
//      as contiguous slot ranges (the wgmma path with TMA boxes).
//   3. FC1 grouped GEMM over all experts' tiles (persistent), activation + bf16 rounding (+ W4A4
//      re-quantization) fused into its epilogue, h written per slot.
//   4. FC2 grouped GEMM, epilogue writes term[p] = w[p] * z[p] in fp32.
//   5. combine: out[t] = bf16(sum over j in order of term[t * k + j]) - the reference's order,
//      so the result is bitwise reproducible.
// The prefill weight layout (prepared once on the GPU at construction) is this file's own:
//   codes  [E][nt][kc][128 rows][32 B]: per row and 64-wide K chunk, thread q (0..3) of an
//          mma B fragment finds its 16 codes in bytes [8q, 8q + 8), two words of 8 codes whose
//          bits are scattered for a rotate-and-mask dequantization (fp4_bits.hpp, the same
//          as the decode layout's)
//   scales [E][nt][kc][128 rows][4 bf16]: e4m3 block scale * 2^110 for the chunk's four 16-blocks
// FC1 rows are reordered for SwiGLU: mma.sync path, each (gate, up) pair in adjacent rows;
// wgmma path (sm_90a, prefill_wgmma.cuh, chosen at construction on Hopper when the loaded
// binary is sm_90a), per 16-row block 8 gate rows then their 8 up rows. The wgmma path's tile
// height (16..128 token rows, its MMA width) is picked per call from T * k / E
// (pick_tile_rows); the mma.sync path's is 64 or 128.
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuda/backend_api.hpp"
#include "cuda/common.cuh"
#include "cuda/prefill_gemm.cuh"
#include "cuda/prefill_wgmma.cuh"
#include "fp4moe/error.hpp"
#include "fp4moe/format.hpp"

namespace fp4moe::cuda {
namespace prefill {
namespace {

constexpr int kMaxExperts = 512;

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// ---- weight preparation ----
// src: [E][rows][K/2] packed, src_scale [E][rows][K/16]; row_map[r] = source row of prepared row
// r (or -1 for a zero row). Writes the layout described at the top of the file.
__global__ void prepare_codes_kernel(const uint8_t* __restrict__ src, const int* __restrict__ row_map, int64_t E,
                                     int64_t src_rows, int64_t K, int nt, int kc, uint8_t* __restrict__ dst) {
  // one thread per (e, prepared row, kc, q): 8 output bytes
  const int64_t n_items = E * nt * 128LL * kc * 4;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n_items;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int q = static_cast<int>(idx & 3);
    int64_t rest = idx >> 2;
    const int c = static_cast<int>(rest % kc);
    rest /= kc;
    const int r = static_cast<int>(rest % (nt * 128LL));
    const int64_t e = rest / (nt * 128LL);
    const int sr = row_map[r];
    uint32_t words[2] = {0, 0};
    for (int wi = 0; wi < 2; ++wi)
      for (int jj = 0; jj < 4; ++jj) {
        const int kb = wi * 2 + (jj >> 1);
        const int64_t k = static_cast<int64_t>(c) * kBK + kb * 16 + (jj & 1) * 8 + 2 * q;
        uint32_t byte = 0;
        if (sr >= 0 && k < K) byte = src[(e * src_rows + sr) * (K / 2) + k / 2];
        // register jj of the word: the low nibble (k) is its low element, the high (k + 1) its high
        for (int half = 0; half < 2; ++half)
          for (int role = 0; role < 4; ++role)
            words[wi] |= ((byte >> (4 * half + role)) & 1u) << code_bit(jj, half, role);
      }
    const int nt_i = r / 128, rl = r % 128;
    uint8_t* d = dst + (((e * nt + nt_i) * kc + c) * 128 + rl) * 32 + q * 8;
    reinterpret_cast<uint2*>(d)[0] = make_uint2(words[0], words[1]);
  }
}

__global__ void prepare_scales_kernel(const uint8_t* __restrict__ src_scale, const int* __restrict__ row_map,
                                      int64_t E, int64_t src_rows, int64_t K, int nt, int kc,
                                      uint32_t* __restrict__ dst) {
  const int64_t n_items = E * nt * 128LL * kc;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n_items;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(idx % kc);
    int64_t rest = idx / kc;
    const int r = static_cast<int>(rest % (nt * 128LL));
    const int64_t e = rest / (nt * 128LL);
    const int sr = row_map[r];
    uint32_t out[2] = {0, 0};
    for (int kb = 0; kb < 4; ++kb) {
      const int64_t k = static_cast<int64_t>(c) * kBK + kb * 16;
      float s = 0.0f;
      if (sr >= 0 && k < K) {
        const uint8_t b = src_scale[(e * src_rows + sr) * (K / 16) + k / 16];
        s = __half2float(__half(__nv_cvt_fp8_to_halfraw(b, __NV_E4M3)));
      }
      const float sv = s * 1.2980742146337069e33f;  // * 2^110: exact
      const uint32_t bits = __float_as_uint(sv);
      uint32_t b16 = bits >> 16;                    // exact (low bits are zero) or NaN
      if (sv != sv) b16 = 0x7fc0u;
      out[kb >> 1] |= b16 << (16 * (kb & 1));
    }
    const int nt_i = r / 128, rl = r % 128;
    uint32_t* d = dst + (((e * nt + nt_i) * kc + c) * 128 + rl) * 2;
    reinterpret_cast<uint2*>(d)[0] = make_uint2(out[0], out[1]);
  }
}

// ---- routing ----
__global__ void route_count_kernel(const int32_t* __restrict__ ids, int np, int E, int* __restrict__ counts,
                                   unsigned long long* __restrict__ invalid) {
  pdl_launch_dependents();
  __shared__ int hist[kMaxExperts];
  for (int i = threadIdx.x; i < E; i += blockDim.x) hist[i] = 0;
  __syncthreads();
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p < np) {
    const int e = ids[p];
    if (e >= 0 && e < E) atomicAdd(&hist[e], 1);
    else atomicAdd(invalid, 1ULL);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < E; i += blockDim.x)
    if (hist[i]) atomicAdd(&counts[i], hist[i]);
}

// One block of kMaxExperts threads, thread e for expert e: exclusive prefix sums of the counts
// and of the m tiles (token tiles of bm rows), then each expert's m-tile records {first slot,
// e | rows << 16} (tile_coord). Integer sums are exact and associative, so the result is the
// serial loop's whatever the order of the additions: warp shuffle scans, then each thread adds
// the totals of the warps before its own.
constexpr int kScanThreads = kMaxExperts;
static_assert(kScanThreads % 32 == 0 && kScanThreads <= 1024, "route_scan_kernel: one block, whole warps");
static_assert(kMaxExperts <= 0x10000, "an m-tile record holds the expert in 16 bits");
__global__ void __launch_bounds__(kScanThreads)
    route_scan_kernel(const int* __restrict__ counts, int E, int bm, int* __restrict__ offsets, int* __restrict__ cursor,
                      int2* __restrict__ mtiles, int* __restrict__ n_mtiles, int* __restrict__ claims) {
  pdl_launch_dependents();
  pdl_wait();
  __shared__ int warp_sum[2][kScanThreads / 32];
  const int e = threadIdx.x, lane = e & 31, warp = e >> 5;
  if (e < 2) claims[e] = 0;  // the FC1 and FC2 tile claim counters of this call
  int c = 0, mt = 0;
  if (e < E) {
    c = counts[e];
    mt = (c + bm - 1) / bm;
  }
  int v0 = c, v1 = mt;  // inclusive scans within the warp
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int u0 = __shfl_up_sync(0xffffffffu, v0, d);
    const int u1 = __shfl_up_sync(0xffffffffu, v1, d);
    if (lane >= d) {
      v0 += u0;
      v1 += u1;
    }
  }
  if (lane == 31) {
    warp_sum[0][warp] = v0;
    warp_sum[1][warp] = v1;
  }
  __syncthreads();
  for (int w = 0; w < warp; ++w) {
    v0 += warp_sum[0][w];
    v1 += warp_sum[1][w];
  }
  if (e < E) {
    const int off = v0 - c, m0 = v1 - mt;
    offsets[e] = off;
    cursor[e] = off;
    for (int j = 0; j < mt; ++j) mtiles[m0 + j] = make_int2(off + j * bm, e | (min(bm, c - j * bm) << 16));
  }
  if (e == (E > 0 ? E - 1 : 0)) {  // the totals (every count from E on is 0)
    offsets[E] = v0;
    n_mtiles[0] = v1;
  }
}

// The order of pairs inside an expert's slot range is not deterministic, and does not need
// to be: every row of a GEMM tile is computed independently of the others, and the combine
// reads terms by pair index.
__global__ void route_scatter_kernel(const int32_t* __restrict__ ids, int np, int E, int* __restrict__ cursor,
                                     int* __restrict__ sorted_pair) {
  pdl_launch_dependents();
  pdl_wait();
  __shared__ int hist[kMaxExperts];
  __shared__ int base[kMaxExperts];
  for (int i = threadIdx.x; i < E; i += blockDim.x) hist[i] = 0;
  __syncthreads();
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  int e = -1, rank = 0;
  if (p < np) {
    e = ids[p];
    if (e >= 0 && e < E) rank = atomicAdd(&hist[e], 1);
    else e = -1;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < E; i += blockDim.x)
    if (hist[i]) base[i] = atomicAdd(&cursor[i], hist[i]);
  __syncthreads();
  if (e >= 0) sorted_pair[base[e] + rank] = p;
}

// ---- FC1 input staging: one thread per (slot, 16-block) ----
// xs[slot] = x[token of the slot's pair], in W4A4 quantized with the expert's a13_scale (or the
// one shared scale). Slots past the valid pairs (offsets[E]) are left alone.
__global__ void stage_input_kernel(const __nv_bfloat16* __restrict__ x, int H, int topk, int np,
                                   const int* __restrict__ sorted_pair, const int* __restrict__ offsets, int E,
                                   const int32_t* __restrict__ ids, const float* __restrict__ a13, int quant,
                                   int per_expert, __nv_bfloat16* __restrict__ xs) {
  pdl_launch_dependents();
  pdl_wait();
  const int nb = H / 16;
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= static_cast<int64_t>(np) * nb) return;
  const int slot = static_cast<int>(idx / nb), b = static_cast<int>(idx % nb);
  if (slot >= offsets[E]) return;
  const int pr = sorted_pair[slot];
  const uint4* src = reinterpret_cast<const uint4*>(x + static_cast<int64_t>(pr / topk) * H + b * 16);
  uint4 u[2] = {src[0], src[1]};
  if (quant) quantize_bf16_block16(u, a13 ? a13[per_expert ? ids[pr] : 0] : 1.0f);
  uint4* dst = reinterpret_cast<uint4*>(xs + static_cast<int64_t>(slot) * H + b * 16);
  dst[0] = u[0];
  dst[1] = u[1];
}

// A TMA map of a [rows][cols] bf16 row-major buffer in boxes of 64 columns x box_rows rows,
// 128-byte swizzled in shared memory (the wgmma kernel's B-tile layout); out-of-range reads
// give zeros.
CUtensorMap make_row_map(const void* base, int64_t rows, int64_t cols, int box_rows) {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult q{};
    FP4MOE_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q));
    if (fn == nullptr || q != cudaDriverEntryPointSuccess)
      throw Error("prefill: the CUDA driver does not provide cuTensorMapEncodeTiled (needed by the sm_90a kernels)");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  CUtensorMap m{};
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(cols) * 2};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(kBK), static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t elem[2] = {1, 1};
  const CUresult r = encode(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(base), dims, strides, box, elem,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw Error("prefill: cuTensorMapEncodeTiled failed (error " + std::to_string(static_cast<int>(r)) + ") for a [" +
                std::to_string(rows) + "][" + std::to_string(cols) + "] bf16 buffer, box rows " + std::to_string(box_rows));
  return m;
}

// ---- combine: 4 outputs per thread, the reference's order ----
__global__ void combine_kernel(const float* __restrict__ term, const int32_t* __restrict__ ids, int T, int k, int H,
                               int E, __nv_bfloat16* __restrict__ out) {
  pdl_launch_dependents();
  pdl_wait();
  const int q = H / 4;
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= static_cast<int64_t>(T) * q) return;
  const int t = static_cast<int>(idx / q), o = static_cast<int>(idx % q) * 4;
  float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
  for (int j = 0; j < k; ++j) {
    const int64_t pr = static_cast<int64_t>(t) * k + j;
    const int e = ids[pr];
    if (e < 0 || e >= E) continue;
    const float4 v = *reinterpret_cast<const float4*>(term + pr * H + o);
    a0 = a0 + v.x;
    a1 = a1 + v.y;
    a2 = a2 + v.z;
    a3 = a3 + v.w;
  }
  __nv_bfloat162 lo = __floats2bfloat162_rn(a0, a1), hi = __floats2bfloat162_rn(a2, a3);
  uint2 pk;
  pk.x = *reinterpret_cast<uint32_t*>(&lo);
  pk.y = *reinterpret_cast<uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(out + static_cast<int64_t>(t) * H + o) = pk;
}

// ---- host side ----
template <typename T>
struct DevArray {
  T* p = nullptr;
  size_t n = 0;
  DevArray() = default;
  DevArray(const DevArray&) = delete;
  DevArray& operator=(const DevArray&) = delete;
  ~DevArray() {
    if (p) cudaFree(p);
  }
  void alloc(size_t count) {
    n = count;
    if (count) FP4MOE_CUDA_CHECK(cudaMalloc(&p, count * sizeof(T)));
  }
  size_t bytes() const { return n * sizeof(T); }
};

class PrefillKernel final : public MoeKernel {
 public:
  PrefillKernel(const MoeSpec& spec, const MoeWeights& w, WeightsOn where, int64_t max_tokens, int device)
      : spec_(spec), max_tokens_(max_tokens), device_(device) {
    validate_weights(spec, w);
    FP4MOE_CHECK_ARG(spec.experts <= kMaxExperts, "experts (E)", "<= 512 for the prefill backend", spec.experts);
    FP4MOE_CHECK_ARG(max_tokens > 0, "max_tokens", "> 0", max_tokens);
    FP4MOE_CHECK_ARG(max_tokens * spec.topk < (1LL << 30), "max_tokens * topk", "< 2^30", max_tokens * spec.topk);
    FP4MOE_CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp prop{};
    FP4MOE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    FP4MOE_CHECK_ARG(prop.major >= 8, "device", "compute capability >= 8.0", prop.major * 10 + prop.minor);
    sms_ = prop.multiProcessorCount;
    // wgmma path: a Hopper device running this library's sm_90a code (the loaded binary's
    // version says which code the driver picked); FP4MOE_PREFILL_MMA=sync forces mma.sync.
    {
      cudaFuncAttributes fa{};
      FP4MOE_CUDA_CHECK(cudaFuncGetAttributes(&fa, wgmma_gemm_kernel<64, kEpiFc2>));
      const char* force = std::getenv("FP4MOE_PREFILL_MMA");
      use_wgmma_ = prop.major == 9 && fa.binaryVersion >= 90 && !(force && std::strcmp(force, "sync") == 0);
      chain_ = prop.major == 9 && fa.binaryVersion >= 90;  // the loaded code has the griddepcontrol waits
      // tuning knobs of the tile-height choice (pick_tile_rows): FP4MOE_PREFILL_DQ_ROWS, the
      // dequantization cost of a tile in token rows of MMA work; FP4MOE_PREFILL_TILE_ROWS
      // forces a height (one of kWgTileRows)
      const char* dq = std::getenv("FP4MOE_PREFILL_DQ_ROWS");
      if (dq) dq_rows_ = std::max(0.0, std::atof(dq));
      const char* force_rows = std::getenv("FP4MOE_PREFILL_TILE_ROWS");
      if (force_rows) force_rows_ = std::atoi(force_rows);
    }

    const int64_t E = spec.experts, H = spec.hidden, I = spec.inter, N1 = spec.n1();
    const bool swiglu = spec.activation == Activation::SwiGLU;
    a4_ = spec.mode == Mode::W4A4;
    ih_ = swiglu ? round_up(I, 64) : round_up(I, kBN);
    const int64_t np1 = swiglu ? 2 * ih_ : ih_;
    nt1_ = static_cast<int>(np1 / kBN);
    kc1_ = static_cast<int>(round_up(H, kBK) / kBK);
    nt2_ = static_cast<int>(round_up(H, kBN) / kBN);
    kc2_ = static_cast<int>(ih_ / kBK);

    // row maps
    std::vector<int> map1(static_cast<size_t>(np1), -1), map2(static_cast<size_t>(nt2_) * kBN, -1);
    for (int64_t r = 0; r < np1; ++r) {
      if (swiglu) {
        // mma.sync: (gate, up) of one index in adjacent rows; wgmma: per 16-row block, 8 gate
        // rows then their 8 up rows
        const int64_t i = use_wgmma_ ? (r / 16) * 8 + (r % 8) : r / 2;
        if (i >= I) continue;
        const bool gate = use_wgmma_ ? (r % 16) < 8 : (r % 2) == 0;
        const bool gate_first = spec.gate_up_order == GateUpOrder::GateUp;
        map1[static_cast<size_t>(r)] = static_cast<int>((gate == gate_first) ? i : I + i);
      } else if (r < I) {
        map1[static_cast<size_t>(r)] = static_cast<int>(r);
      }
    }
    for (int64_t r = 0; r < H; ++r) map2[static_cast<size_t>(r)] = static_cast<int>(r);

    codes1_.alloc(static_cast<size_t>(E) * nt1_ * kc1_ * kBN * 32);
    scales1_.alloc(static_cast<size_t>(E) * nt1_ * kc1_ * kBN * 2);
    codes2_.alloc(static_cast<size_t>(E) * nt2_ * kc2_ * kBN * 32);
    scales2_.alloc(static_cast<size_t>(E) * nt2_ * kc2_ * kBN * 2);
    prepare(w.w13, w.w13_scale, where, map1, N1, H, nt1_, kc1_, codes1_.p, scales1_.p);
    prepare(w.w2, w.w2_scale, where, map2, H, I, nt2_, kc2_, codes2_.p, scales2_.p);

    // epilogue scales
    const std::vector<float> g13 = per_expert_scales(w.w13_scale_2, where, E), g2 = per_expert_scales(w.w2_scale_2, where, E);
    std::vector<float> a13 = per_expert_scales(w.a13_scale, where, E), a2 = per_expert_scales(w.a2_scale, where, E);
    std::vector<float> s1(static_cast<size_t>(E)), s2(static_cast<size_t>(E)), a2v(static_cast<size_t>(E), 1.0f);
    for (int64_t e = 0; e < E; ++e) {
      const size_t u = static_cast<size_t>(e);
      const float ga = a4_ && !a13.empty() ? g13[u] * a13[u] : g13[u];
      const float gb = a4_ && !a2.empty() ? g2[u] * a2[u] : g2[u];
      s1[u] = ga * kScaleBias;
      s2[u] = gb * kScaleBias;
      if (!a2.empty()) a2v[u] = a2[u];
    }
    gs1_.alloc(static_cast<size_t>(E));
    gs2_.alloc(static_cast<size_t>(E));
    a2s_.alloc(static_cast<size_t>(E));
    FP4MOE_CUDA_CHECK(cudaMemcpy(gs1_.p, s1.data(), s1.size() * 4, cudaMemcpyHostToDevice));
    FP4MOE_CUDA_CHECK(cudaMemcpy(gs2_.p, s2.data(), s2.size() * 4, cudaMemcpyHostToDevice));
    FP4MOE_CUDA_CHECK(cudaMemcpy(a2s_.p, a2v.data(), a2v.size() * 4, cudaMemcpyHostToDevice));
    if (a4_) {
      per_pair_quant_ = false;
      for (float v : a13)
        if (v != a13[0]) per_pair_quant_ = true;
      if (!a13.empty()) {
        a13s_.alloc(static_cast<size_t>(E));
        FP4MOE_CUDA_CHECK(cudaMemcpy(a13s_.p, a13.data(), a13.size() * 4, cudaMemcpyHostToDevice));
      }
    }

    // workspace
    const int64_t npmax = max_tokens * spec.topk;
    // (TMA row coordinates are 32-bit: max_tokens * topk < 2^30 was checked above)
    meta_.alloc(static_cast<size_t>(3 * E + 4));
    sorted_.alloc(static_cast<size_t>(npmax));
    // m tiles of the shortest tile height (16 rows) at most: one per 16 pairs plus one per expert
    mtiles_.alloc(static_cast<size_t>(npmax / 16 + E + 1));
    xs_.alloc(static_cast<size_t>(npmax * H));
    h_.alloc(static_cast<size_t>(npmax * ih_));
    // zeroed once: a tile's rows past its expert read whatever the buffers hold (their products
    // are never stored), and never uninitialized memory
    FP4MOE_CUDA_CHECK(cudaMemset(xs_.p, 0, xs_.bytes()));
    FP4MOE_CUDA_CHECK(cudaMemset(h_.p, 0, h_.bytes()));
    if (use_wgmma_)
      for (int i = 0; i < kWgTileCount; ++i) {
        map1_[i] = make_row_map(xs_.p, npmax, H, kWgTileRows[i]);
        map2_[i] = make_row_map(h_.p, npmax, ih_, kWgTileRows[i]);
      }
    term_.alloc(static_cast<size_t>(npmax * H));
    invalid_.alloc(1);
    FP4MOE_CUDA_CHECK(cudaMemset(invalid_.p, 0, sizeof(unsigned long long)));

    // kernels: opt into the shared memory they need, size the persistent grids
    const auto setup = [&](auto kern, int bm_smem, int& grid) {
      FP4MOE_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, bm_smem));
      int occ = 0;
      FP4MOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, kThreads, bm_smem));
      grid = std::max(1, occ) * sms_;
    };
    if (use_wgmma_) {
      if (swiglu) setup_wg<kEpiSwiGLU>(setup, grid1w_);
      else setup_wg<kEpiReLU2>(setup, grid1w_);
      setup_wg<kEpiFc2>(setup, grid2w_);
    } else if (swiglu) {
      setup(grouped_gemm_kernel<128, 1, kEpiSwiGLU>, GemmShape<128, 1>::kSmem, grid1_[1]);
      setup(grouped_gemm_kernel<64, 1, kEpiSwiGLU>, GemmShape<64, 1>::kSmem, grid1_[0]);
    } else {
      setup(grouped_gemm_kernel<128, 1, kEpiReLU2>, GemmShape<128, 1>::kSmem, grid1_[1]);
      setup(grouped_gemm_kernel<64, 1, kEpiReLU2>, GemmShape<64, 1>::kSmem, grid1_[0]);
    }
    if (!use_wgmma_) {
      setup(grouped_gemm_kernel<128, 1, kEpiFc2>, GemmShape<128, 1>::kSmem, grid2_[1]);
      setup(grouped_gemm_kernel<64, 1, kEpiFc2>, GemmShape<64, 1>::kSmem, grid2_[0]);
    }
    FP4MOE_CUDA_CHECK(cudaDeviceSynchronize());
  }

  const char* name() const override { return use_wgmma_ ? "prefill-wgmma-sm90a" : "prefill-mma-sm80"; }
  int64_t max_tokens() const override { return max_tokens_; }
  size_t weight_bytes() const override {
    return codes1_.bytes() + scales1_.bytes() + codes2_.bytes() + scales2_.bytes();
  }
  size_t workspace_bytes() const override {
    return meta_.bytes() + sorted_.bytes() + mtiles_.bytes() + xs_.bytes() + h_.bytes() + term_.bytes();
  }
  int64_t take_invalid_id_count() override {
    unsigned long long v = 0;
    FP4MOE_CUDA_CHECK(cudaMemcpy(&v, invalid_.p, sizeof(v), cudaMemcpyDeviceToHost));
    FP4MOE_CUDA_CHECK(cudaMemset(invalid_.p, 0, sizeof(v)));
    return static_cast<int64_t>(v);
  }

  void forward(const void* x, const int32_t* ids, const float* wts, int64_t tokens, void* out,
               void* stream_v) override {
    FP4MOE_CHECK_ARG(tokens >= 0 && tokens <= max_tokens_, "tokens", "0..max_tokens", tokens);
    if (tokens == 0) return;
    cudaStream_t st = static_cast<cudaStream_t>(stream_v);
    const int E = static_cast<int>(spec_.experts), H = static_cast<int>(spec_.hidden), k = static_cast<int>(spec_.topk);
    const int T = static_cast<int>(tokens), np = T * k;
    // tile height from the average rows per expert (a host value: graph safe)
    const bool big = static_cast<int64_t>(np) >= 96LL * E;
    const int bm = use_wgmma_ ? pick_tile_rows(np, E) : big ? 128 : 64;

    int* counts = meta_.p;
    int* cursor = counts + E;
    int* offsets = cursor + E;
    int* n_mtiles = offsets + E + 1;
    int* claims = n_mtiles + 1;  // [2] tile claims of the FC1 and FC2 GEMMs
    FP4MOE_CUDA_CHECK(cudaMemsetAsync(counts, 0, static_cast<size_t>(E) * sizeof(int), st));
    const int rblocks = (np + 255) / 256;
    // each kernel after the first launches while the one before it finishes (sm_90: pdl_wait)
    launch_chained(false, route_count_kernel, rblocks, 256, 0, st, ids, np, E, counts, invalid_.p);
    launch_chained(chain_, route_scan_kernel, 1, kScanThreads, 0, st, counts, E, bm, offsets, cursor, mtiles_.p, n_mtiles,
                   claims);
    launch_chained(chain_, route_scatter_kernel, rblocks, 256, 0, st, ids, np, E, cursor, sorted_.p);
    FP4MOE_CUDA_CHECK(cudaGetLastError());

    {
      const int64_t n = static_cast<int64_t>(np) * (H / 16);
      launch_chained(chain_, stage_input_kernel, static_cast<unsigned>((n + 255) / 256), 256, 0, st,
                     static_cast<const __nv_bfloat16*>(x), H, k, np, static_cast<const int*>(sorted_.p),
                     static_cast<const int*>(offsets), E, ids, static_cast<const float*>(a13s_.p), a4_ ? 1 : 0,
                     per_pair_quant_ ? 1 : 0, xs_.p);
      FP4MOE_CUDA_CHECK(cudaGetLastError());
    }

    const int64_t worst_m = (np + bm - 1) / bm + E;  // worst-case m tiles over all experts
    GemmParams p1{};
    if (use_wgmma_) p1.a_map = map1_[wg_index(bm)];
    p1.a = xs_.p;
    p1.a_stride = H;
    p1.a_cols = H;
    p1.w_codes = codes1_.p;
    p1.w_scales = scales1_.p;
    p1.nt = nt1_;
    p1.kc = kc1_;
    p1.sorted_pair = sorted_.p;
    p1.mtiles = mtiles_.p;
    p1.n_mtiles = n_mtiles;
    p1.tile_claim = claims;
    p1.gscale = gs1_.p;
    p1.a2_scale = a2s_.p;
    p1.quant_out = a4_ ? 1 : 0;
    p1.h = h_.p;
    p1.h_stride = ih_;
    const int g1 = static_cast<int>(std::min<int64_t>(use_wgmma_ ? grid1w_[wg_index(bm)] : grid1_[big], worst_m * nt1_));
    const bool swiglu = spec_.activation == Activation::SwiGLU;
    if (swiglu) launch_gemm<kEpiSwiGLU>(bm, g1, st, p1);
    else launch_gemm<kEpiReLU2>(bm, g1, st, p1);
    FP4MOE_CUDA_CHECK(cudaGetLastError());

    GemmParams p2{};
    if (use_wgmma_) p2.a_map = map2_[wg_index(bm)];
    p2.a = h_.p;
    p2.a_stride = ih_;
    p2.a_cols = static_cast<int>(ih_);
    p2.w_codes = codes2_.p;
    p2.w_scales = scales2_.p;
    p2.nt = nt2_;
    p2.kc = kc2_;
    p2.sorted_pair = sorted_.p;
    p2.mtiles = mtiles_.p;
    p2.n_mtiles = n_mtiles;
    p2.tile_claim = claims + 1;
    p2.gscale = gs2_.p;
    p2.term = term_.p;
    p2.topk_w = wts;
    p2.out_cols = H;
    const int g2 = static_cast<int>(std::min<int64_t>(use_wgmma_ ? grid2w_[wg_index(bm)] : grid2_[big], worst_m * nt2_));
    launch_gemm<kEpiFc2>(bm, g2, st, p2);
    FP4MOE_CUDA_CHECK(cudaGetLastError());

    const int64_t nc = static_cast<int64_t>(T) * (H / 4);
    launch_chained(chain_, combine_kernel, static_cast<unsigned>((nc + 255) / 256), 256, 0, st,
                   static_cast<const float*>(term_.p), ids, T, k, H, E, static_cast<__nv_bfloat16*>(out));
    FP4MOE_CUDA_CHECK(cudaGetLastError());
  }

 private:
  // One warp row (WM = 1): each warp dequantizes its own 16 weight rows (measured faster than
  // WM = 2 on an H200 for both tile heights).
  template <int EPI>
  void launch_gemm(int bm, int grid, cudaStream_t st, const GemmParams& p) {
    if (use_wgmma_) {
      launch_wg<EPI>(bm, grid, st, p);
      return;
    }
    if (bm == 128) grouped_gemm_kernel<128, 1, EPI><<<grid, kThreads, GemmShape<128, 1>::kSmem, st>>>(p);
    else grouped_gemm_kernel<64, 1, EPI><<<grid, kThreads, GemmShape<64, 1>::kSmem, st>>>(p);
  }
  template <int EPI, int I = 0>
  static void launch_wg(int bm, int grid, cudaStream_t st, const GemmParams& p) {
    if constexpr (I < kWgTileCount) {
      constexpr int BM = kWgTileRows[I];
      if (bm == BM) launch_chained(true, wgmma_gemm_kernel<BM, EPI>, grid, kThreads, WgShape<BM>::kSmem, st, p);
      else launch_wg<EPI, I + 1>(bm, grid, st, p);
    }
  }
  template <int EPI, int I = 0, typename Setup>
  static void setup_wg(const Setup& setup, int (&grids)[kWgTileCount]) {
    if constexpr (I < kWgTileCount) {
      constexpr int BM = kWgTileRows[I];
      setup(wgmma_gemm_kernel<BM, EPI>, WgShape<BM>::kSmem, grids[I]);
      setup_wg<EPI, I + 1>(setup, grids);
    }
  }
  static int wg_index(int bm) {
    for (int i = 0; i < kWgTileCount; ++i)
      if (kWgTileRows[i] == bm) return i;
    return kWgTileCount - 1;
  }

  // The wgmma tile height (= its MMA width) from the average routed rows per expert a = np / E
  // (a host value: graph safe). From 100 rows on average the tallest tile: dequantization per
  // MMA row is least there (an H200 sweep of every preset at M = 4096 and 16384: 128 beat
  // every lower height by 5% to 40%). Below, with c ~ Poisson(a) rows on an expert (random
  // routing), a height N costs E[ceil(c / N)] tiles of max(N, dq_rows_) + N row-units each:
  // every tile dequantizes the expert's weights once (dq_rows_, in rows of MMA work,
  // overlapping the MMA), and its MMA work is N rows whatever its fill. (Sweeps at M = 1024 on
  // an H200: this picks the fastest height, 80 for a = 64 (64 and 96 slower), 64 for a = 48, 40
  // for a = 32 (32, 48, 56, 64 slower; 48 by 2-3% since the k-loop lost its per-stage address
  // arithmetic, so the MMA weighs more: its weight here went from N / 4 to N).)
  int pick_tile_rows(int64_t np, int64_t E) const {
    if (force_rows_ > 0) {
      for (int i = 0; i < kWgTileCount; ++i)
        if (kWgTileRows[i] == force_rows_) return force_rows_;
    }
    const double a = static_cast<double>(np) / static_cast<double>(E);
    if (a >= 100.0) return 128;
    const int cmax = static_cast<int>(a + 12.0 * std::sqrt(a) + 16.0);
    std::vector<double> pmf(static_cast<size_t>(cmax) + 1);
    double lp = -a;  // log P(c = 0)
    for (int c = 0; c <= cmax; ++c) {
      if (c > 0) lp += std::log(a) - std::log(static_cast<double>(c));
      pmf[static_cast<size_t>(c)] = std::exp(lp);
    }
    int best = 128;
    double best_cost = 1e300;
    for (int i = kWgTileCount - 1; i >= 0; --i) {
      const int n = kWgTileRows[i];
      double tiles = 0.0;
      for (int c = 1; c <= cmax; ++c) tiles += pmf[static_cast<size_t>(c)] * ((c + n - 1) / n);
      const double cost = tiles * (std::max(static_cast<double>(n), dq_rows_) + n);
      if (cost < best_cost * 0.999) {
        best_cost = cost;
        best = n;
      }
    }
    return best;
  }

  void prepare(const TensorView& codes, const TensorView& scales, WeightsOn where, const std::vector<int>& map,
               int64_t src_rows, int64_t K, int nt, int kc, uint8_t* dst_codes, uint32_t* dst_scales) {
    const int64_t E = spec_.experts;
    const size_t cbytes = static_cast<size_t>(E * src_rows * K / 2), sbytes = static_cast<size_t>(E * src_rows * K / 16);
    DevArray<uint8_t> tmp_c, tmp_s;
    const uint8_t* dc = codes.as<uint8_t>();
    const uint8_t* ds = scales.as<uint8_t>();
    if (where == WeightsOn::Host) {
      tmp_c.alloc(cbytes);
      tmp_s.alloc(sbytes);
      FP4MOE_CUDA_CHECK(cudaMemcpy(tmp_c.p, dc, cbytes, cudaMemcpyHostToDevice));
      FP4MOE_CUDA_CHECK(cudaMemcpy(tmp_s.p, ds, sbytes, cudaMemcpyHostToDevice));
      dc = tmp_c.p;
      ds = tmp_s.p;
    }
    DevArray<int> dmap;
    dmap.alloc(map.size());
    FP4MOE_CUDA_CHECK(cudaMemcpy(dmap.p, map.data(), map.size() * sizeof(int), cudaMemcpyHostToDevice));
    prepare_codes_kernel<<<sms_ * 8, 256>>>(dc, dmap.p, E, src_rows, K, nt, kc, dst_codes);
    FP4MOE_CUDA_CHECK(cudaGetLastError());
    prepare_scales_kernel<<<sms_ * 8, 256>>>(ds, dmap.p, E, src_rows, K, nt, kc, dst_scales);
    FP4MOE_CUDA_CHECK(cudaGetLastError());
    FP4MOE_CUDA_CHECK(cudaDeviceSynchronize());  // before the temporaries go
  }

  MoeSpec spec_;
  int64_t max_tokens_;
  int device_;
  int sms_ = 0;
  bool a4_ = false, per_pair_quant_ = false, use_wgmma_ = false;
  bool chain_ = false;  // programmatic dependent launches (the sm_90a code is loaded)
  int64_t ih_ = 0;
  int nt1_ = 0, kc1_ = 0, nt2_ = 0, kc2_ = 0;
  int grid1_[2] = {0, 0}, grid2_[2] = {0, 0};
  int grid1w_[kWgTileCount] = {}, grid2w_[kWgTileCount] = {};
  double dq_rows_ = 64.0;
  int force_rows_ = 0;
  DevArray<uint8_t> codes1_, codes2_;
  DevArray<uint32_t> scales1_, scales2_;
  DevArray<float> gs1_, gs2_, a2s_, a13s_;
  DevArray<int> meta_, sorted_;
  DevArray<int2> mtiles_;
  DevArray<__nv_bfloat16> xs_, h_;  // the FC1 input and h, one row per slot
  CUtensorMap map1_[kWgTileCount] = {}, map2_[kWgTileCount] = {};  // their TMA maps per tile height
  DevArray<float> term_;
  DevArray<unsigned long long> invalid_;
};

}  // namespace
}  // namespace prefill

std::unique_ptr<MoeKernel> make_prefill_kernel(const MoeSpec& spec, const MoeWeights& weights, WeightsOn where,
                                               int64_t max_tokens, int device) {
  return std::make_unique<prefill::PrefillKernel>(spec, weights, where, max_tokens, device);
}

}  // namespace fp4moe::cuda
