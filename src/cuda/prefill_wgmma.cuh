// fp4moe internal: the Hopper (sm_90a) grouped GEMM of the prefill backend: wgmma with the
// dequantized weights as the register-sourced A operand ("swap AB": weight rows are the M side,
// 64 per warpgroup) and the gathered token rows as the shared-memory B operand (K-major, 128-byte
// swizzle), a cp.async multi-stage pipeline, the persistent tile loop and the epilogues of
// prefill_gemm.cuh. The prepared weight layout is the same as the mma.sync path's: the 8 code
// bytes a thread reads for rows g and g + 8 of its warp's 16-row slice are exactly the k
// positions of the wgmma A fragment (which is the mma.sync m16n8k16 A fragment per warp).
// SwiGLU rows are ordered per 16-row block as 8 gate rows then the 8 matching up rows, so a
// thread holds (gate, up) of one intermediate index in its accumulator pair (c, c + 2).
// Compiled only for sm_90a (__CUDA_ARCH_FEAT_SM90_ALL); elsewhere the kernel body is empty and
// the host never selects it (it checks the loaded binary's version).
#pragma once
#include "cuda/prefill_gemm.cuh"

namespace fp4moe::cuda::prefill {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FP4MOE_PREFILL_WGMMA 1
#endif

#ifdef FP4MOE_PREFILL_WGMMA
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// cp.async writes (generic proxy) become visible to wgmma's operand reads (async proxy).
__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row groups 1024 bytes apart
// (stride byte offset), leading byte offset unused for this layout; the tile base is
// 1024-byte aligned (base offset 0), and a k16 step inside the 128-byte row advances the start
// address by 32 bytes.
__device__ __forceinline__ uint64_t smem_desc_sw128(uint32_t saddr) {
  uint64_t d = static_cast<uint64_t>((saddr & 0x3FFFFu) >> 4);
  d |= static_cast<uint64_t>(1) << 16;
  d |= static_cast<uint64_t>(1024 >> 4) << 32;
  d |= static_cast<uint64_t>(1) << 62;
  return d;
}

__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}
__device__ __forceinline__ void wgmma_m64n128k16_rs(float (&d)[64], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}

template <int N>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc) {
  if constexpr (N == 64) wgmma_m64n64k16_rs(d, a, desc);
  else wgmma_m64n128k16_rs(d, a, desc);
}
#endif  // FP4MOE_PREFILL_WGMMA

template <int BM>
struct WgShape {
  static constexpr int kStages = 4;
  static constexpr int kDist = kStages - 2;  // prefetch distance: the previous stage's wgmma group may still run
  static constexpr int kBTile = BM * 128;    // token rows x 64 K, bf16, 128-byte swizzle
  static constexpr int kStage = kBTile + kBN * 32 + kBN * 16;
  static constexpr int kSmem = 1024 + kStages * kStage + BM * 8;  // + alignment slack, s_pair, s_w
  static_assert(kStage % 1024 == 0, "stage alignment");
  static_assert(BM * (kBN + 8) * 2 <= kStages * kStage, "epilogue tile");
};

template <int BM, int EPI>
__global__ void __launch_bounds__(kThreads, BM == 64 ? 3 : 2) wgmma_gemm_kernel(const GemmParams p) {
#ifdef FP4MOE_PREFILL_WGMMA
  using S = WgShape<BM>;
  constexpr int AR = BM / 32;  // token rows per thread per stage
  constexpr int NA = BM / 2;   // accumulators per thread
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024u - (smem_addr(smem_raw) & 1023u)) & 1023u);
  int* s_pair = reinterpret_cast<int*>(smem + S::kStages * S::kStage);
  float* s_w = reinterpret_cast<float*>(s_pair + BM);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wg = warp >> 2, w4 = warp & 3, g = lane >> 2, q = lane & 3;
  const int nrow = wg * 64 + w4 * 16 + g;  // this thread's weight rows: nrow, nrow + 8
  const int total = p.tile_start[p.experts];

  for (int tile = blockIdx.x; tile < total; tile += gridDim.x) {
    int lo = 0, hi = p.experts - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) >> 1;
      if (p.tile_start[mid] <= tile) lo = mid; else hi = mid - 1;
    }
    const int e = lo;
    const int local = tile - p.tile_start[e];
    const int mtile = local / p.nt, ntile = local - mtile * p.nt;
    const int row0 = p.offsets[e] + mtile * BM;
    const int rows = min(BM, p.offsets[e + 1] - row0);

    if (EPI == kEpiFc2 && tid < BM) {
      const int pr = tid < rows ? p.sorted_pair[row0 + tid] : -1;
      s_pair[tid] = pr;
      s_w[tid] = pr >= 0 ? p.topk_w[pr] : 0.0f;
    }
    int a_row[AR];
#pragma unroll
    for (int i = 0; i < AR; ++i) {
      const int r = (tid >> 3) + 32 * i;
      a_row[i] = -1;
      if (r < rows) {
        const int slot = row0 + r;
        if (p.a_row_mode == 2) a_row[i] = slot;
        else {
          const int pr = p.sorted_pair[slot];
          a_row[i] = p.a_row_mode == 0 ? pr / p.topk : pr;
        }
      }
    }
    const size_t wblock = (static_cast<size_t>(e) * p.nt + ntile) * p.kc;

    auto load_stage = [&](int stage, int kc) {
      uint8_t* sa = smem + stage * S::kStage;
      const int chunk = tid & 7;
      const int kcol = kc * kBK + chunk * 8;
#pragma unroll
      for (int i = 0; i < AR; ++i) {
        const int r = (tid >> 3) + 32 * i;
        const bool ok = a_row[i] >= 0 && kcol < p.a_cols;
        const __nv_bfloat16* src = ok ? p.a + static_cast<int64_t>(a_row[i]) * p.a_stride + kcol : p.a;
        cp_async16(sa + r * 128 + ((chunk ^ (r & 7)) << 4), src, ok ? 16 : 0);
      }
      const uint8_t* wc = p.w_codes + (wblock + kc) * (kBN * 32);
      cp_async16(sa + S::kBTile + tid * 16, wc + tid * 16, 16);
      if (tid < kBN) {
        const uint8_t* ws = reinterpret_cast<const uint8_t*>(p.w_scales) + (wblock + kc) * (kBN * 16);
        cp_async16(sa + S::kBTile + kBN * 32 + tid * 16, ws + tid * 16, 16);
      }
    };

    float acc[NA];
#pragma unroll
    for (int i = 0; i < NA; ++i) acc[i] = 0.0f;

    const int KC = p.kc;
#pragma unroll
    for (int s = 0; s < S::kDist; ++s) {
      if (s < KC) load_stage(s, s);
      cp_async_commit();
    }
    // One k-stage: the previous stage's wgmma group runs on while this stage waits for its
    // data, issues the next loads and reads its codes; it is retired just before the A
    // fragment registers are rewritten (wgmma reads them asynchronously).
    for (int kc = 0; kc < KC; ++kc) {
      cp_async_wait<S::kDist - 1>();
      fence_proxy_async_smem();
      __syncthreads();  // stage kc landed for all; every group that read stage kc - 2 has retired
      {
        const int nk = kc + S::kDist;
        if (nk < KC) load_stage(nk % S::kStages, nk);
        cp_async_commit();
      }
      const uint8_t* sa = smem + (kc % S::kStages) * S::kStage;
      const uint8_t* sb = sa + S::kBTile;
      const uint8_t* ss = sb + kBN * 32;
      const uint2 w0 = *reinterpret_cast<const uint2*>(sb + nrow * 32 + q * 8);
      const uint2 w1 = *reinterpret_cast<const uint2*>(sb + (nrow + 8) * 32 + q * 8);
      const uint4 s0 = *reinterpret_cast<const uint4*>(ss + nrow * 16);
      const uint4 s1 = *reinterpret_cast<const uint4*>(ss + (nrow + 8) * 16);
      wgmma_wait<0>();
      uint32_t af[4][4];
#pragma unroll
      for (int kb = 0; kb < 4; ++kb) {
        const uint32_t x0 = kb < 2 ? w0.x : w0.y, x1 = kb < 2 ? w1.x : w1.y;
        const uint32_t c0 = kb == 0 ? s0.x : kb == 1 ? s0.y : kb == 2 ? s0.z : s0.w;
        const uint32_t c1 = kb == 0 ? s1.x : kb == 1 ? s1.y : kb == 2 ? s1.z : s1.w;
        if (kb & 1) {
          af[kb][0] = fp4x2_to_bf16x2<2>(x0, c0);
          af[kb][1] = fp4x2_to_bf16x2<2>(x1, c1);
          af[kb][2] = fp4x2_to_bf16x2<3>(x0, c0);
          af[kb][3] = fp4x2_to_bf16x2<3>(x1, c1);
        } else {
          af[kb][0] = fp4x2_to_bf16x2<0>(x0, c0);
          af[kb][1] = fp4x2_to_bf16x2<0>(x1, c1);
          af[kb][2] = fp4x2_to_bf16x2<1>(x0, c0);
          af[kb][3] = fp4x2_to_bf16x2<1>(x1, c1);
        }
      }
      wgmma_fence();
      const uint32_t sbase = smem_addr(sa);
#pragma unroll
      for (int kb = 0; kb < 4; ++kb) wgmma_rs<BM>(acc, af[kb], smem_desc_sw128(sbase + kb * 32));
      wgmma_commit();
    }
    wgmma_wait<0>();
    cp_async_wait<0>();
    __syncthreads();  // the pipeline buffers become the epilogue tile

    const float gsc = p.gscale[e];
    if constexpr (EPI == kEpiFc2) {
#pragma unroll
      for (int j = 0; j < BM / 8; ++j)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int tok = 8 * j + 2 * q + (c & 1);
          const int col = ntile * kBN + nrow + (c >> 1) * 8;
          if (tok < rows && col < p.out_cols)
            p.term[static_cast<int64_t>(s_pair[tok]) * p.out_cols + col] = s_w[tok] * (acc[j * 4 + c] * gsc);
        }
    } else {
      constexpr int HC = EPI == kEpiSwiGLU ? kBN / 2 : kBN;
      constexpr int HS = HC + 8;
      __nv_bfloat16* hs = reinterpret_cast<__nv_bfloat16*>(smem);
#pragma unroll
      for (int j = 0; j < BM / 8; ++j)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int tok = 8 * j + 2 * q + c;
          if constexpr (EPI == kEpiSwiGLU) {
            const float y0 = acc[j * 4 + c] * gsc, y1 = acc[j * 4 + 2 + c] * gsc;  // gate, up
            const float hv = (y0 / (1.0f + expf(-y0))) * y1;
            hs[tok * HS + (wg * 32 + w4 * 8 + g)] = __float2bfloat16_rn(hv);
          } else {
            const float y0 = acc[j * 4 + c] * gsc, y1 = acc[j * 4 + 2 + c] * gsc;
            const float r0 = y0 > 0.0f ? y0 : 0.0f, r1 = y1 > 0.0f ? y1 : 0.0f;
            hs[tok * HS + nrow] = __float2bfloat16_rn(r0 * r0);
            hs[tok * HS + nrow + 8] = __float2bfloat16_rn(r1 * r1);
          }
        }
      __syncthreads();
      const float a2 = p.a2_scale ? p.a2_scale[e] : 1.0f;
      constexpr int SEG = HC / 16;
      for (int sidx = tid; sidx < BM * SEG; sidx += kThreads) {
        const int r = sidx / SEG, c16 = sidx - r * SEG;
        if (r >= rows) continue;
        const uint4* src = reinterpret_cast<const uint4*>(hs + r * HS + c16 * 16);
        uint4 u[2] = {src[0], src[1]};
        if (p.quant_out) {
          float v[16];
          const __nv_bfloat16* hb = reinterpret_cast<const __nv_bfloat16*>(u);
#pragma unroll
          for (int i = 0; i < 16; ++i) v[i] = __bfloat162float(hb[i]);
          quantize_block16(v, a2);
          __nv_bfloat16* ob = reinterpret_cast<__nv_bfloat16*>(u);
#pragma unroll
          for (int i = 0; i < 16; ++i) ob[i] = __float2bfloat16_rn(v[i]);
        }
        uint4* dst = reinterpret_cast<uint4*>(p.h + static_cast<int64_t>(row0 + r) * p.h_stride + ntile * HC + c16 * 16);
        dst[0] = u[0];
        dst[1] = u[1];
      }
    }
    __syncthreads();
  }
#endif
}

}  // namespace fp4moe::cuda::prefill
