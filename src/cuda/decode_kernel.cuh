// fp4moe: the fused NVFP4 MoE decode kernel (sm_80 / sm_90a, mma.sync).
//
// One cooperative, persistent launch does the whole layer for 1..64 tokens:
//   prologue (every CTA, redundantly): compact the routed pairs per expert into slots, in a
//            deterministic order (expert, then pair index), so every CTA agrees on them;
//   Q   (W4A4 only) one warp per pair: x quantized with the expert's FC1 input scale -> xq;
//   FC1 one warp per (expert, 16 or 32 intermediate rows): y = W1 x, activation, bf16 (and in
//       W4A4 the FP4 re-quantization), written to h - complete sums, no reduction across warps;
//   FC2 one warp per (expert, 32 output rows): z = W2 h, complete sums, fp32;
//   combine one warp per (token, 256 outputs): out = bf16(sum_j w_j z_j), j in order.
// Dependencies between phases are per-expert completion counters (integers, so their order
// does not matter); warps take tasks round-robin in phase order and only ever wait on tasks
// with a smaller index, and the cooperative launch guarantees every warp is resident, so the
// waits cannot deadlock. No floating-point atomics: the result is bitwise reproducible.
// The last CTA to finish resets the counters, so the next launch (or graph replay) starts
// from zero without a memset.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fp4moe::cuda {

struct DecodeParams {
  const uint8_t* w1;  // prepared FC1 task streams [E][n1_tasks]
  const uint8_t* w2;  // prepared FC2 task streams [E][n2_tasks]
  const float* g1;    // [E] FC1 epilogue scale: w13_scale_2 (* a13 in W4A4)
  const float* g2;    // [E] FC2 epilogue scale: w2_scale_2 (* a2 in W4A4)
  const float* a13;   // [E] FC1 input scale (dequant direction), W4A4
  const float* a2;    // [E] FC2 input scale (dequant direction), W4A4
  const __nv_bfloat16* x;
  const int32_t* ids;
  const float* wts;
  __nv_bfloat16* out;
  __nv_bfloat16* xq;  // [P][Hk]  W4A4 quantized x per slot
  __nv_bfloat16* h;   // [P][Ik]
  float* z;           // [P][H]
  unsigned* counters;  // q_done[E], fc1_done[E], fc2_done[E], exit
  unsigned* invalid;   // count of pairs with an expert id outside [0, E)
  int T, k, E, H, Hk, I, Ik;
  int n1_tasks, n2_tasks, chunks1, chunks2;
  long long task1_bytes, task2_bytes;
  int w4a4, swiglu;
};

inline constexpr int kDecodeWarps = 4;    // warps per CTA
inline constexpr int kDecodeDepth = 4;    // cp.async chunks in flight per warp
inline constexpr int kCombineCols = 256;  // outputs per combine task

// Dynamic shared memory of one CTA for P = T * k pairs and E experts.
inline size_t decode_smem_bytes(int P, int E) {
  const size_t staging = static_cast<size_t>(kDecodeWarps) * (kDecodeDepth * 2 + 4) * 512;
  const size_t routing = static_cast<size_t>(P) * (2 + 2 + 4) + static_cast<size_t>(E) * 4 * 4 + 64;
  return staging + ((routing + 15) / 16) * 16;
}

// The kernel for up to 8 * nt token columns per expert and pass (nt in {1, 2, 4, 8}), as a
// pointer for cudaLaunchKernelExC (kernel templates stay inside decode_kernel.cu).
const void* fused_decode_kernel_ptr(int nt);

}  // namespace fp4moe::cuda
