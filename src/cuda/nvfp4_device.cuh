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
__device__ __forceinline__ float div_rn_fast(float x, float d) {
  float r0;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r0) : "f"(d));
  const float r = __fmaf_rn(r0, __fmaf_rn(-d, r0, 1.0f), r0);
  const float q0 = __fmul_rn(x, r);
  return __fmaf_rn(r, __fmaf_rn(-d, q0, x), q0);
}

// ---- e2m1 ----
// Round to nearest, ties to the even code, saturating; sign set when x < 0; NaN -> +6. Without
// branches: the code is the number of rounding boundaries at or past |x| (a tie at 0.25, 1.25,
// 2.5 or 5 goes down to the even code, one at 0.75, 1.75 or 3.5 up).
__device__ __forceinline__ uint32_t e2m1_code(float x) {
  const float a = fabsf(x);
  const uint32_t c = static_cast<uint32_t>(a > 0.25f) + static_cast<uint32_t>(a >= 0.75f) +
                     static_cast<uint32_t>(a > 1.25f) + static_cast<uint32_t>(a >= 1.75f) +
                     static_cast<uint32_t>(a > 2.5f) + static_cast<uint32_t>(a >= 3.5f) +
                     static_cast<uint32_t>(a > 5.0f);
  return isnan(x) ? 7u : c | (x < 0.0f ? 8u : 0u);
}
// The value of a code: e = bits 2..1, m = bit 0 -> 2^(e-1) * (1 + m/2), or m/2 when e = 0.
__device__ __forceinline__ float e2m1_value(uint32_t c) {
  const uint32_t e = (c >> 1) & 3u, m = c & 1u;
  const float mag = e ? __uint_as_float(((126u + e) << 23) | (m << 22)) : 0.5f * static_cast<float>(m);
  return (c & 8u) ? -mag : mag;
}

// ---- activation quantization (per 16-block, input scale in the dequant direction) ----
// s = e4m3_rn_sat(amax / (6 * input_scale)), as a float: in place, N blocks at once (one branch
// to __fdiv_rn for all of them, as act_quant_values).
template <int N>
__device__ __forceinline__ void act_block_scales(float (&amax_s)[N], float input_scale) {
  const float six = __fmul_rn(6.0f, input_scale);
  float q[N];
  bool ok = true;
#pragma unroll
  for (int i = 0; i < N; ++i) ok = ok & div_fast_ok(amax_s[i], six), q[i] = div_rn_fast(amax_s[i], six);
  if (!ok) {
#pragma unroll
    for (int i = 0; i < N; ++i) q[i] = __fdiv_rn(amax_s[i], six);
  }
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const __nv_fp8_storage_t sb = __nv_cvt_float_to_fp8(q[i], __NV_SATFINITE, __NV_E4M3);
    amax_s[i] = __half2float(__half(__nv_cvt_fp8_to_halfraw(sb, __NV_E4M3)));
  }
}
// The quantized value of a quotient q = x / (s * input_scale): e2m1(q) * s, the 16-bit MMA
// operand (exact in bf16); 0 where s is 0.
// (Written as one select of q, so the compiler does not branch around the code's computation:
// a branch per value keeps the values of a block from overlapping.)
__device__ __forceinline__ float act_dequant(float q, float s) {
  return __fmul_rn(e2m1_value(e2m1_code(s == 0.0f ? 0.0f : q)), s);  // (s = 0: code 0, +0 * 0 = +0)
}
// v[i] = act_dequant(v[i] / (s[i] * input_scale), s[i]). All N quotients on the fast path, or -
// where an operand is outside its range - all through __fdiv_rn (one branch for the N values, not
// one each).
template <int N>
__device__ __forceinline__ void act_quant_values(float (&v)[N], const float (&s)[N], float input_scale) {
  float q[N], d[N];
  bool ok = true;  // (false only where some value with a nonzero scale is outside the range)
#pragma unroll
  for (int i = 0; i < N; ++i) {
    d[i] = __fmul_rn(s[i], input_scale);
    ok = ok & ((s[i] == 0.0f) | div_fast_ok(v[i], d[i]));
    q[i] = div_rn_fast(v[i], d[i]);
  }
  if (!ok) {
#pragma unroll
    for (int i = 0; i < N; ++i) q[i] = __fdiv_rn(v[i], d[i]);
  }
#pragma unroll
  for (int i = 0; i < N; ++i) v[i] = act_dequant(q[i], s[i]);
}
// One 16-block of bf16 values packed in two 16-byte words, quantized in place. The values are
// unpacked from the words where they are used and the results packed as they come, so the block
// costs few registers beyond its words (the prefill kernels quantize in their epilogues); the
// slow-path division, where an operand is outside the fast path's range, redoes the whole block.
__device__ __forceinline__ void quantize_bf16_block16(uint4 (&u)[2], float input_scale) {
  uint32_t w[8] = {u[0].x, u[0].y, u[0].z, u[0].w, u[1].x, u[1].y, u[1].z, u[1].w};
  auto lo = [&](int k) { return __uint_as_float(w[k] << 16); };
  auto hi = [&](int k) { return __uint_as_float(w[k] & 0xFFFF0000u); };
  float amax = 0.0f;
#pragma unroll
  for (int k = 0; k < 8; ++k) amax = fmaxf(amax, fmaxf(fabsf(lo(k)), fabsf(hi(k))));
  float sv[1] = {amax};
  act_block_scales(sv, input_scale);
  const float s = sv[0], d = __fmul_rn(s, input_scale);
  auto pack = [&](float a, float b) {  // (exact: the values have at most 4 significant bits)
    return bf2_bits(__floats2bfloat162_rn(a, b));
  };
  uint32_t o[8];
  bool ok = true;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const float a = lo(k), b = hi(k);
    ok = ok & ((s == 0.0f) | (div_fast_ok(a, d) & div_fast_ok(b, d)));
    o[k] = pack(act_dequant(div_rn_fast(a, d), s), act_dequant(div_rn_fast(b, d), s));
  }
  if (!ok) {
#pragma unroll
    for (int k = 0; k < 8; ++k) o[k] = pack(act_dequant(__fdiv_rn(lo(k), d), s), act_dequant(__fdiv_rn(hi(k), d), s));
  }
  u[0] = make_uint4(o[0], o[1], o[2], o[3]);
  u[1] = make_uint4(o[4], o[5], o[6], o[7]);
}

}  // namespace fp4moe::cuda
