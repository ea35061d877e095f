// fp4moe internal: the grouped GEMM of the prefill backend (mma.sync m16n8k16 bf16, cp.async
// multi-stage pipeline, persistent tile loop over all experts' tiles). Compiles for sm_80 and
// sm_90a.
//
// Roles: tokens (gathered rows, bf16) are the M side (A, row-major, via ldmatrix), expert
// weights the N side (B). Weights arrive as NVFP4 codes in the prefill layout (see
// prefill.cu, prepare_*) and are dequantized exactly to bf16 in registers, straight into the
// B fragments:
//   code e2m1 (sign s, 3 bits em3) -> bf16 bits (s << 15 | em3 << 6) = e2m1 * 2^-126 (a
//   subnormal for the 0.5 code), times the prepared bf16 block scale s_e4m3 * 2^110 gives
//   e2m1 * s_e4m3 * 2^-16 exactly (at most 6 significant bits, far inside bf16's range).
// The 2^16 is given back in the fp32 epilogue together with the global scale, so the fp32
// accumulation sees exactly the reference's products, scaled by a power of two.
#pragma once
#include <cuda.h>  // CUtensorMap
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "cuda/fp4_bits.hpp"
#include "cuda/nvfp4_device.cuh"

namespace fp4moe::cuda::prefill {

constexpr int kBN = 128;      // weight rows (output columns) per tile
constexpr int kBK = 64;       // K per pipeline stage
constexpr int kStages = 4;    // cp.async pipeline depth
constexpr int kThreads = 256; // 8 warps: 2 (M) x 4 (N)
constexpr float kScaleBias = 65536.0f;  // 2^16, see the header comment

enum Epi : int { kEpiSwiGLU = 0, kEpiReLU2 = 1, kEpiFc2 = 2 };

struct GemmParams {
  // A operand as a TMA tensor map (wgmma path): [slots][a_cols] bf16, boxes of 64 K x BM rows,
  // 128-byte swizzle (rows past the buffer and K past a_cols read as zeros)
  CUtensorMap a_map;
  // A operand: one bf16 row per slot (FC1: the staged input, FC2: h), row-major
  const __nv_bfloat16* a;
  int64_t a_stride;  // elements
  int a_cols;        // valid K of A; columns beyond are zero-filled
  // B operand: prepared codes [E][nt][kc][128][32 B] and scales [E][nt][kc][128][4 x bf16]
  const uint8_t* w_codes;
  const uint32_t* w_scales;
  int nt, kc;
  // schedule (device, written by the routing kernels of this call)
  const int* sorted_pair;  // [slots] pair index p = t * k + j
  const int2* mtiles;      // [m tiles] each expert's token tiles in expert order: {first slot, e | rows << 16}
  const int* n_mtiles;     // [1] how many m tiles this call has (tiles = m tiles x nt)
  int* tile_claim;         // tiles past the first round are claimed from this counter (wgmma path)
  const float* gscale;     // [E] fp32 epilogue scale, including 2^16
  // FC1 output
  const float* a2_scale;   // [E] dequant-direction FC2 input scale (W4A4), or null
  int quant_out;           // W4A4: re-quantize h per 16-block
  __nv_bfloat16* h;
  int64_t h_stride;
  // FC2 output: term[p][o] = w[p] * z (fp32), o < out_cols
  float* term;
  const float* topk_w;
  int out_cols;
};

// ---- PTX wrappers ----
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
// Bytes of prepared block scales per weight row and 64-wide K chunk: four bf16.
constexpr int kScaleRowBytes = 8;
// Register J (0..3) of a prepared code word (fp4_bits.hpp: 8 e2m1 codes, bits scattered for a
// rotate-and-mask dequantization) as bf16x2, times the block scale in half H (0: low) of the
// scale word (a broadcast operand of the bf16x2 multiply, no extra instruction).
template <int J, int H>
__device__ __forceinline__ uint32_t fp4x2_to_bf16x2(uint32_t w, uint32_t scales) {
  const uint32_t v = word_reg_bits(w, J);
  const __nv_bfloat162 a = *reinterpret_cast<const __nv_bfloat162*>(&v);
  const __nv_bfloat162 s2 = *reinterpret_cast<const __nv_bfloat162*>(&scales);
  const __nv_bfloat162 s = H ? __high2bfloat162(s2) : __low2bfloat162(s2);
  __nv_bfloat162 r = __hmul2(a, s);  // exact: both are exact and the product fits
  return *reinterpret_cast<uint32_t*>(&r);
}

// ---- the persistent tile loop's shared steps (both kernels) ----
// Which expert, column block and token rows a tile is: tiles are m-tile-major (tile = m * nt +
// ntile), and the routing wrote each m tile's expert and slot range (one load: a tile's start
// is one L2 round trip, not a search over the experts).
struct TileCoord {
  int e, ntile, row0, rows;
};
__device__ __forceinline__ TileCoord tile_coord(const GemmParams& p, int tile) {
  const int m = tile / p.nt;
  const int2 v = p.mtiles[m];
  TileCoord c;
  c.e = v.y & 0xFFFF;
  c.rows = v.y >> 16;
  c.row0 = v.x;
  c.ntile = tile - m * p.nt;
  return c;
}
// FC2: the pair index and top-k weight of each of the tile's rows (-1 and 0 past its rows).
template <int BM>
__device__ __forceinline__ void stage_fc2_pairs(const GemmParams& p, const TileCoord& c, int tid, int* s_pair,
                                                float* s_w) {
  if (tid < BM) {
    const int pr = tid < c.rows ? p.sorted_pair[c.row0 + tid] : -1;
    s_pair[tid] = pr;
    s_w[tid] = pr >= 0 ? p.topk_w[pr] : 0.0f;
  }
}

// ---- the kernel ----
// WM: warps along M (1 or 2); the 8 warps split the 128 weight rows in 8 / WM slices. With
// WM = 1 every warp dequantizes a distinct 16-row weight slice (no redundant dequantization)
// and reads the whole A tile; with WM = 2 two warps share each 32-row slice.
template <int BM, int WM = 1>
struct GemmShape {
  static constexpr int kWarpM = BM / WM;
  static constexpr int kMT = kWarpM / 16;
  static constexpr int kWarpsN = 8 / WM;
  static constexpr int kWarpN = kBN / kWarpsN;
  static constexpr int kNT8 = kWarpN / 8;
  static constexpr int kAStage = BM * kBK * 2;
  static constexpr int kBStage = kBN * 32;
  static constexpr int kSStage = kBN * kScaleRowBytes;
  static constexpr int kStage = kAStage + kBStage + kSStage;
  static constexpr int kSmem = kStages * kStage;
  static_assert(BM % 32 == 0 && kWarpM % 16 == 0, "BM");
  static_assert(BM * (kBN + 8) * 2 <= kSmem, "epilogue tile must fit in the pipeline buffers");
};

// FC1's last step, shared by the mma.sync and wgmma kernels: the tile's activations, staged
// in shared memory as bf16 (BM rows of HC columns, row stride HS), go to h row by row in
// 16-column blocks - re-quantized per 16-block with the expert's FC2 input scale in W4A4.
template <int BM, int HC, int HS>
__device__ __forceinline__ void store_h_tile(const GemmParams& p, const __nv_bfloat16* hs, int e, int row0, int rows,
                                             int ntile, int tid) {
  const float a2 = p.a2_scale ? p.a2_scale[e] : 1.0f;
  constexpr int SEG = HC / 16;
  for (int sidx = tid; sidx < BM * SEG; sidx += kThreads) {
    const int r = sidx / SEG, c16 = sidx - r * SEG;
    if (r >= rows) continue;
    const uint4* src = reinterpret_cast<const uint4*>(hs + r * HS + c16 * 16);
    uint4 u[2] = {src[0], src[1]};
    if (p.quant_out) quantize_bf16_block16(u, a2);
    uint4* dst = reinterpret_cast<uint4*>(p.h + static_cast<int64_t>(row0 + r) * p.h_stride + ntile * HC + c16 * 16);
    dst[0] = u[0];
    dst[1] = u[1];
  }
}

template <int BM, int WM, int EPI>
__global__ void __launch_bounds__(kThreads, BM == 64 ? 3 : 2) grouped_gemm_kernel(const GemmParams p) {
  using S = GemmShape<BM, WM>;
  constexpr int MT = S::kMT;
  constexpr int NT8 = S::kNT8;  // n8 tiles per warp
  constexpr int AR = BM / 32;  // A rows per thread per stage
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ int s_pair[BM];
  __shared__ float s_w[BM];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / S::kWarpsN, wn = warp % S::kWarpsN;
  const int total = p.n_mtiles[0] * p.nt;

  for (int tile = blockIdx.x; tile < total; tile += gridDim.x) {
    const TileCoord tc = tile_coord(p, tile);
    const int e = tc.e, ntile = tc.ntile, row0 = tc.row0, rows = tc.rows;
    if constexpr (EPI == kEpiFc2) stage_fc2_pairs<BM>(p, tc, tid, s_pair, s_w);
    int a_row[AR];  // slot of A per loaded tile row, -1 past the expert's rows
#pragma unroll
    for (int i = 0; i < AR; ++i) {
      const int r = (tid >> 3) + 32 * i;
      a_row[i] = r < rows ? row0 + r : -1;
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
      cp_async16(sa + S::kAStage + tid * 16, wc + tid * 16, 16);
      if (tid < S::kSStage / 16) {
        const uint8_t* ws = reinterpret_cast<const uint8_t*>(p.w_scales) + (wblock + kc) * S::kSStage;
        cp_async16(sa + S::kAStage + S::kBStage + tid * 16, ws + tid * 16, 16);
      }
    };

    float acc[MT][NT8][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < NT8; ++j)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.0f;

    const int KC = p.kc;
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < KC) load_stage(s, s);
      cp_async_commit();
    }
    for (int kc = 0; kc < KC; ++kc) {
      cp_async_wait<kStages - 2>();
      __syncthreads();
      {
        const int nk = kc + kStages - 1;
        if (nk < KC) load_stage(nk % kStages, nk);
        cp_async_commit();
      }
      const uint8_t* sa = smem + (kc % kStages) * S::kStage;
      const uint8_t* sb = sa + S::kAStage;
      const uint8_t* ss = sb + S::kBStage;
      uint2 wq[NT8];
      uint2 sc[NT8];
#pragma unroll
      for (int j = 0; j < NT8; ++j) {
        const int n = wn * S::kWarpN + j * 8 + (lane >> 2);
        wq[j] = *reinterpret_cast<const uint2*>(sb + n * 32 + (lane & 3) * 8);
        sc[j] = *reinterpret_cast<const uint2*>(ss + n * kScaleRowBytes);
      }
#pragma unroll
      for (int kb = 0; kb < 4; ++kb) {
        uint32_t bf[NT8][2];
#pragma unroll
        for (int j = 0; j < NT8; ++j) {
          const uint32_t w = kb < 2 ? wq[j].x : wq[j].y;
          const uint32_t s2 = kb < 2 ? sc[j].x : sc[j].y;
          if (kb & 1) {
            bf[j][0] = fp4x2_to_bf16x2<2, 1>(w, s2);
            bf[j][1] = fp4x2_to_bf16x2<3, 1>(w, s2);
          } else {
            bf[j][0] = fp4x2_to_bf16x2<0, 0>(w, s2);
            bf[j][1] = fp4x2_to_bf16x2<1, 0>(w, s2);
          }
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          uint32_t af[4];
          const int r = wm * S::kWarpM + mt * 16 + (lane & 15);
          const int chunk = kb * 2 + (lane >> 4);
          ldmatrix_x4(af, sa + r * 128 + ((chunk ^ (r & 7)) << 4));
#pragma unroll
          for (int j = 0; j < NT8; ++j) mma_bf16(acc[mt][j], af, bf[j][0], bf[j][1]);
        }
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // the pipeline buffers become the epilogue tile

    const float g = p.gscale[e];
    if constexpr (EPI == kEpiFc2) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < NT8; ++j)
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const int r = wm * S::kWarpM + mt * 16 + (lane >> 2) + hf * 8;
            const int col = ntile * kBN + wn * S::kWarpN + j * 8 + (lane & 3) * 2;
            if (r < rows && col < p.out_cols) {
              const float z0 = acc[mt][j][hf * 2] * g, z1 = acc[mt][j][hf * 2 + 1] * g;
              const float w = s_w[r];
              float2 t;
              t.x = w * z0;
              t.y = w * z1;
              *reinterpret_cast<float2*>(p.term + static_cast<int64_t>(s_pair[r]) * p.out_cols + col) = t;
            }
          }
    } else {
      constexpr int HC = EPI == kEpiSwiGLU ? kBN / 2 : kBN;  // h columns per tile
      constexpr int HS = HC + 8;                             // padded smem row (elements)
      __nv_bfloat16* hs = reinterpret_cast<__nv_bfloat16*>(smem);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < NT8; ++j)
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const int r = wm * S::kWarpM + mt * 16 + (lane >> 2) + hf * 8;
            const int cl = wn * S::kWarpN + j * 8 + (lane & 3) * 2;
            const float y0 = acc[mt][j][hf * 2] * g, y1 = acc[mt][j][hf * 2 + 1] * g;
            if constexpr (EPI == kEpiSwiGLU) {
              // prepared rows interleave gate (even) and up (odd) of one intermediate index
              const float hv = silu_fast(y0) * y1;
              hs[r * HS + (cl >> 1)] = __float2bfloat16_rn(hv);
            } else {
              const float r0 = y0 > 0.0f ? y0 : 0.0f, r1 = y1 > 0.0f ? y1 : 0.0f;
              hs[r * HS + cl] = __float2bfloat16_rn(r0 * r0);
              hs[r * HS + cl + 1] = __float2bfloat16_rn(r1 * r1);
            }
          }
      __syncthreads();
      store_h_tile<BM, HC, HS>(p, hs, e, row0, rows, ntile, tid);
    }
    __syncthreads();  // s_pair and the smem tile are rewritten by the next tile
  }
}

}  // namespace fp4moe::cuda::prefill
