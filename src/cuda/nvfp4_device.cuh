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

__device__ __forceinline__ uint32_t bf2_bits(__nv_bfloat162 v) { return *reinterpret_cast<uint32_t*>(&v); }

// ---- IEEE division without its slow-path call ----
// x / d in fp32 (div.rn, __fdiv_rn) compiles to a refined reciprocal, a range check (FCHK) and a
// call to a slow path; each call's convergence region keeps consecutive divisions from
// overlapping: W4A4's quantization of one 2048-wide x row took a warp ~12 us that way (profiling
// build, qwen3-30b-a3b at one token, H200). div_rn_fast is the same sequence of one reciprocal
// and five FMAs without the check: it returns IEEE's quotient bitwise wherever no intermediate
// value leaves the normal range - for div_fast_ok's operands, |x| = 0 or in [2^-40, 2^40] and d in
// [2^-40, 2^40] (the quotient, the reciprocal and the residual terms then stay within [2^-103,
// 2^80]). The callers compute a block's quotients with it and redo the block with __fdiv_rn
// where an operand falls outside. (Tested bitwise against the host's IEEE division: tests/gpu,
// QuantizeDevice.)
__device__ __forceinline__ bool div_fast_ok(float x, float d) {
  const float a = fabsf(x);  // (& and |, not && and ||: no branches)
  return (d >= 0x1p-40f) & (d <= 0x1p40f) & (a <= 0x1p40f) & ((a >= 0x1p-40f) | (a == 0.0f));
}
// (In two steps, so that a block's values share the divisor's reciprocal: rcp_rn_fast(d) once,
// then div_rn_fast(x, d, r) a value.)
__device__ __forceinline__ float rcp_rn_fast(float d) {
  float r0;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r0) : "f"(d));
  return __fmaf_rn(r0, __fmaf_rn(-d, r0, 1.0f), r0);
}
__device__ __forceinline__ float div_rn_fast(float x, float d, float r) {
  const float q0 = __fmul_rn(x, r);
  return __fmaf_rn(r, __fmaf_rn(-d, q0, x), q0);
}
__device__ __forceinline__ float div_rn_fast(float x, float d) { return div_rn_fast(x, d, rcp_rn_fast(d)); }

// ---- e2m1 ----
// q rounded to e2m1's grid - to nearest, ties to the even code, saturating at +-6 - as a float.
// The grid's step is 1/2 below 2, 1 below 4 and 2 from 4 on (in magnitude), and a code is even
// exactly where its value is an even multiple of its step: so rint(q f) / f with f = 2, 1 or 1/2
// by |q| (powers of two: exact; rint is symmetric), then clamped to [-6, 6], min first so that
// NaN gives +6 (fminf returns the other operand). About a dozen instructions a value, against 46
// for a count of seven boundary compares and the code's decoding. A zero's sign is q's (the host's
// codes give -0 for a negative value that rounds to zero and +0 for -0: the same value, and the
// same sums in any MMA).
__device__ __forceinline__ float e2m1_round(float q) {
  const float y = fabsf(q);
  const float f = y < 2.0f ? 2.0f : y < 4.0f ? 1.0f : 0.5f;
  const float g = __int_as_float(0x7F000000 - __float_as_int(f));  // 1 / f (a power of two)
  return fmaxf(fminf(__fmul_rn(rintf(__fmul_rn(q, f)), g), 6.0f), -6.0f);
}

// ---- activation quantization (per 16-block, input scale in the dequant direction) ----
// s = e4m3_rn_sat(amax / (6 * input_scale)), as a float, for N blocks at once (one branch to
// __fdiv_rn for all of them, where an operand is outside div_rn_fast's range).
template <int N>
__device__ __forceinline__ void act_block_scales(const float (&amax)[N], float input_scale, float (&s)[N]) {
  const float six = __fmul_rn(6.0f, input_scale);
  float q[N];
  bool ok = true;
#pragma unroll
  for (int i = 0; i < N; ++i) ok = ok & div_fast_ok(amax[i], six), q[i] = div_rn_fast(amax[i], six);
  if (!ok) {
#pragma unroll
    for (int i = 0; i < N; ++i) q[i] = __fdiv_rn(amax[i], six);
  }
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const __nv_fp8_storage_t sb = __nv_cvt_float_to_fp8(q[i], __NV_SATFINITE, __NV_E4M3);
    s[i] = __half2float(__half(__nv_cvt_fp8_to_halfraw(sb, __NV_E4M3)));
  }
}
// One block's constants for its values' quantization: the divisor d = s * input_scale, its
// reciprocal r as div_rn_fast computes it, and whether div_rn_fast's steps give every value's
// quantized value: d in [2^-36, 2^40] and amax <= 2^40 - values of at least 2^-40 are then inside
// div_fast_ok's range (the quotient bitwise IEEE's), and a smaller one's quotient is below 2^-3
// on either path (code 0) - or s = 0 (every value a zero on either path: e2m1 of any quotient,
// even NaN, times 0).
struct ActBlock {
  float s, d, r;
  bool fast;
};
__device__ __forceinline__ ActBlock act_block(float s, float amax, float input_scale) {
  ActBlock b;
  b.s = s, b.d = __fmul_rn(s, input_scale);
  b.r = rcp_rn_fast(b.d);
  b.fast = (s == 0.0f) | ((b.d >= 0x1p-36f) & (b.d <= 0x1p40f) & (amax <= 0x1p40f));
  return b;
}
// The quantized value of x in its block: e2m1(x / d) * s, the 16-bit MMA operand (exact in bf16);
// the quotient by div_rn_fast's steps with the block's reciprocal, or (slow) __fdiv_rn.
template <bool kSlow = false>
__device__ __forceinline__ float act_value(float x, const ActBlock& b) {
  return __fmul_rn(e2m1_round(kSlow ? __fdiv_rn(x, b.d) : div_rn_fast(x, b.d, b.r)), b.s);
}
// v[i] quantized in place, values kPer at a time in one 16-block (block i / kPer) whose amax is
// amax[i / kPer]: all values through div_rn_fast's steps, or - where a block is outside their
// range - all through __fdiv_rn (one branch for the N values, not one each).
template <int N, int kPer>
__device__ __forceinline__ void act_quant_values(float (&v)[N], const float (&amax)[N / kPer], float input_scale) {
  constexpr int B = N / kPer;
  float s[B];
  act_block_scales(amax, input_scale, s);
  ActBlock b[B];
  bool fast = true;
#pragma unroll
  for (int i = 0; i < B; ++i) b[i] = act_block(s[i], amax[i], input_scale), fast = fast & b[i].fast;
  if (fast) {
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = act_value(v[i], b[i / kPer]);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = act_value<true>(v[i], b[i / kPer]);
  }
}
// One 16-block of bf16 values packed in two 16-byte words, quantized in place. The values are
// unpacked from the words where they are used and the results packed as they come, so the block
// costs few registers beyond its words (the prefill kernels quantize in their epilogues, the decode
// FC1 in its chunk loop); the block goes through __fdiv_rn where it is outside the fast path's range.
__device__ __forceinline__ void quantize_bf16_block16(uint4 (&u)[2], float input_scale) {
  uint32_t w[8] = {u[0].x, u[0].y, u[0].z, u[0].w, u[1].x, u[1].y, u[1].z, u[1].w};
  auto lo = [&](int k) { return __uint_as_float(w[k] << 16); };
  auto hi = [&](int k) { return __uint_as_float(w[k] & 0xFFFF0000u); };
  float amax[1] = {0.0f};
#pragma unroll
  for (int k = 0; k < 8; ++k) amax[0] = fmaxf(amax[0], fmaxf(fabsf(lo(k)), fabsf(hi(k))));
  float s[1];
  act_block_scales(amax, input_scale, s);
  const ActBlock b = act_block(s[0], amax[0], input_scale);
  auto pack = [&](float a, float c) {  // (exact: the values have at most 4 significant bits)
    return bf2_bits(__floats2bfloat162_rn(a, c));
  };
  if (b.fast) {  // (each word's results replace it: no copy of the block stays live)
#pragma unroll
    for (int k = 0; k < 8; ++k) w[k] = pack(act_value(lo(k), b), act_value(hi(k), b));
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) w[k] = pack(act_value<true>(lo(k), b), act_value<true>(hi(k), b));
  }
  u[0] = make_uint4(w[0], w[1], w[2], w[3]);
  u[1] = make_uint4(w[4], w[5], w[6], w[7]);
}

}  // namespace fp4moe::cuda
