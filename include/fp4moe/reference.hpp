// fp4moe: the CPU reference MoE - the definition of fp4moe's semantics.
//
// For each routed pair (t, j) with expert e = topk_ids[t, j] and weight r = topk_weights[t, j]:
//   W4A16: xq = x[t] (bf16 values);            g1 = w13_scale_2[e]
//   W4A4 : xq = e2m1(q) * s per 16-block of x[t] quantized with a13_scale[e];
//                                              g1 = w13_scale_2[e] * a13_scale[e]
//   y[n]  = dot(xq, e2m1(W1[e, n]) * s_w1) * g1        (fp32, order below)
//   SwiGLU: h[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g));  ReLU2: h = max(y, 0)^2
//   h is rounded to bf16.  W4A4: hq = quantized per 16-block with a2_scale[e] (1.0 if absent),
//   g2 = w2_scale_2[e] * a2_scale[e];  W4A16: hq = h, g2 = w2_scale_2[e]
//   z[o]  = dot(hq, e2m1(W2[e, o]) * s_w2) * g2
//   out[t] = bf16( sum over j = 0..k-1, in that order, of r_j * z_j )   (fp32)
// Dot products accumulate in fp32 with 8 partial sums (element i goes to sum i % 8), combined
// as ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)), with no fused multiply-add.
// Expert ids outside [0, E) and non-finite routing weights are rejected with an error.
#pragma once
#include <cstdint>
#include <vector>

#include "fp4moe/moe.hpp"
#include "fp4moe/synthetic.hpp"

namespace fp4moe {

// Returns out [T, H] as bf16 bit patterns. Uses all hardware threads; the result does not
// depend on the thread count.
// h_out, when given, receives the bf16-rounded activation output h per pair [T*k, I] (before
// the W4A4 re-quantization), pair p = t * k + j - used to calibrate the FC2 input scale.
std::vector<uint16_t> reference_moe(const MoeSpec& spec, const MoeWeights& w, const TensorView& x,
                                    const TensorView& topk_ids, const TensorView& topk_weights,
                                    std::vector<float>* h_out = nullptr);

// The unquantized layer in fp64 from the bf16 originals (same gate/up order as spec), no
// rounding anywhere. Every routed expert must be present in `bf16`. Returns out [T, H].
std::vector<double> reference_moe_fp64(const MoeSpec& spec, const Bf16Layer& bf16, const TensorView& x,
                                       const TensorView& topk_ids, const TensorView& topk_weights);

// The fixed-order fp32 dot product the reference uses (exposed for tests).
float dot_fixed_order(const float* a, const float* b, int64_t n);

}  // namespace fp4moe
