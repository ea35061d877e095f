// fp4moe internal: device helpers shared by the CUDA kernel families (decode, prefill): async
// copies, the bf16 tensor-core MMA, and NVFP4 activation quantization bit-identical to
// fp4moe::quantize_activation_row on the host (see README "Conventions").
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace fp4moe::cuda {

// SiLU of the FC1 epilogues: the hardware's fast exp and division (a few ulp in fp32, before h's
// bf16 rounding: far inside the tolerances). IEEE division adds a slow-path branch per value:
// in prefill its calling convention made the kernels keep their loop state in local memory; in
// decode its convergence regions kept a task's values from overlapping, ~1 us of dependent math
// at the end of every FC1 task (profiling build, qwen3-30b-a3b at one token, H200).
__device__ __forceinline__ float silu_fast(float g) { return __fdividef(g, 1.0f + __expf(-g)); }

// ---- PTX wrappers ----
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte async copy global -> shared, through L2 only (.cg: streamed data skips L1) or, with
// kL1, also cached in L1 (.ca: read-only data that other warps of the SM read again);
// src_bytes 0 zero-fills the destination without reading (rows past the end, K padding).
template <bool kL1 = false>
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes = 16) {
  if constexpr (kL1)
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes));
  else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// An L2 cache policy that marks lines evict-first (for weights, read once per call: they do
// not push the small reused data - activations, intermediates - out of L2).
__device__ __forceinline__ uint64_t l2_evict_first_policy() {
  uint64_t pol;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
  return pol;
}
// D += A (16x16 bf16, row) * B (16x8 bf16, col), fp32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---- e2m1 ----
// Round to nearest, ties to the even code, saturating; sign set when x < 0; NaN -> +6.
__device__ __forceinline__ uint32_t e2m1_code(float x) {
  if (isnan(x)) return 7u;
  const uint32_t sign = x < 0.0f ? 8u : 0u;
  const float a = fabsf(x);
  uint32_t c;
  if (a <= 0.25f) c = 0;
  else if (a < 0.75f) c = 1;
  else if (a <= 1.25f) c = 2;
  else if (a < 1.75f) c = 3;
  else if (a <= 2.5f) c = 4;
  else if (a < 3.5f) c = 5;
  else if (a <= 5.0f) c = 6;
  else c = 7;
  return sign | c;
}
// The value of a code: e = bits 2..1, m = bit 0 -> 2^(e-1) * (1 + m/2), or m/2 when e = 0.
__device__ __forceinline__ float e2m1_value(uint32_t c) {
  const uint32_t e = (c >> 1) & 3u, m = c & 1u;
  const float mag = e ? __uint_as_float(((126u + e) << 23) | (m << 22)) : 0.5f * static_cast<float>(m);
  return (c & 8u) ? -mag : mag;
}

// ---- activation quantization (per 16-block, input scale in the dequant direction) ----
// s = e4m3_rn_sat(amax / (6 * input_scale)), as a float.
__device__ __forceinline__ float act_block_scale(float amax, float input_scale) {
  const __nv_fp8_storage_t sb =
      __nv_cvt_float_to_fp8(__fdiv_rn(amax, __fmul_rn(6.0f, input_scale)), __NV_SATFINITE, __NV_E4M3);
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(sb, __NV_E4M3)));
}
// e2m1(x / (s * input_scale)) * s - the 16-bit MMA operand (exact in bf16); 0 when s is 0.
__device__ __forceinline__ float act_quant_value(float x, float s, float input_scale) {
  if (s == 0.0f) return 0.0f;
  return __fmul_rn(e2m1_value(e2m1_code(__fdiv_rn(x, __fmul_rn(s, input_scale)))), s);
}
// One whole block held by one thread.
__device__ __forceinline__ void quantize_block16(float (&v)[16], float input_scale) {
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) amax = fmaxf(amax, fabsf(v[i]));
  const float s = act_block_scale(amax, input_scale);
#pragma unroll
  for (int i = 0; i < 16; ++i) v[i] = act_quant_value(v[i], s, input_scale);
}
// The same for a block of 16 bf16 values packed in two 16-byte words, quantized in place (the
// quantized values are exact in bf16).
__device__ __forceinline__ void quantize_bf16_block16(uint4 (&u)[2], float input_scale) {
  float v[16];
  const __nv_bfloat16* hb = reinterpret_cast<const __nv_bfloat16*>(u);
#pragma unroll
  for (int i = 0; i < 16; ++i) v[i] = __bfloat162float(hb[i]);
  quantize_block16(v, input_scale);
  __nv_bfloat16* ob = reinterpret_cast<__nv_bfloat16*>(u);
#pragma unroll
  for (int i = 0; i < 16; ++i) ob[i] = __float2bfloat16_rn(v[i]);
}

}  // namespace fp4moe::cuda
