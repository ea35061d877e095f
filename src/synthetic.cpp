#include "fp4moe/synthetic.hpp"

#include <atomic>
#include <cmath>

#include "fp4moe/bf16.hpp"
#include "fp4moe/error.hpp"
#include "fp4moe/format.hpp"
#include "parallel.hpp"

namespace fp4moe {

namespace {
// Counter-based generator: value i of stream s under seed is a pure function of (seed, s, i).
inline uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
struct Stream {
  uint64_t state;
  Stream(uint64_t seed, uint64_t stream) : state(mix(seed * 0x9e3779b97f4a7c15ull + mix(stream + 1))) {}
  uint64_t next() { return mix(state += 0x9e3779b97f4a7c15ull); }
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }  // [0, 1)
  // approximately N(0, 1): Irwin-Hall sum of 4 uniforms (cheap; the tails do not matter here)
  float normal() {
    const uint64_t a = next(), b = next();
    const float s = static_cast<float>(a & 0xffffff) + static_cast<float>((a >> 32) & 0xffffff) +
                    static_cast<float>(b & 0xffffff) + static_cast<float>((b >> 32) & 0xffffff);
    return (s * (1.0f / 16777216.0f) - 2.0f) * 1.7320508f;
  }
};
}  // namespace

MoeWeights NvFp4Layer::view() const {
  const int64_t E = spec.experts, H = spec.hidden, I = spec.inter, N1 = spec.n1();
  MoeWeights w;
  w.w13 = {w13.data(), DType::U8, {E, N1, H / 2}};
  w.w13_scale = {w13_scale.data(), DType::E4M3, {E, N1, H / 16}};
  w.w13_scale_2 = {w13_scale_2.data(), DType::F32, {E}};
  w.w2 = {w2.data(), DType::U8, {E, H, I / 2}};
  w.w2_scale = {w2_scale.data(), DType::E4M3, {E, H, I / 16}};
  w.w2_scale_2 = {w2_scale_2.data(), DType::F32, {E}};
  if (!a13_scale.empty()) w.a13_scale = {a13_scale.data(), DType::F32, {E}};
  if (!a2_scale.empty()) w.a2_scale = {a2_scale.data(), DType::F32, {E}};
  return w;
}

size_t NvFp4Layer::expert_bytes() const {
  const int64_t H = spec.hidden, I = spec.inter, N1 = spec.n1();
  return static_cast<size_t>(N1 * H / 2 + N1 * H / 16 + H * I / 2 + H * I / 16);
}

const uint16_t* Bf16Layer::w13_of(int64_t e) const {
  return w13.data() + static_cast<size_t>(slot[static_cast<size_t>(e)]) * static_cast<size_t>(spec.n1() * spec.hidden);
}
const uint16_t* Bf16Layer::w2_of(int64_t e) const {
  return w2.data() + static_cast<size_t>(slot[static_cast<size_t>(e)]) * static_cast<size_t>(spec.hidden * spec.inter);
}

SyntheticLayer synthetic_layer(const MoeSpec& spec, uint64_t seed, const std::vector<bool>& keep,
                               const std::function<void(int64_t, int64_t)>& progress) {
  spec.validate();
  const int64_t E = spec.experts, H = spec.hidden, I = spec.inter, N1 = spec.n1();
  FP4MOE_CHECK_ARG(keep.empty() || static_cast<int64_t>(keep.size()) == E, "keep_bf16",
                   detail::concat(E, " flags or none"), keep.size());
  SyntheticLayer out;
  NvFp4Layer& L = out.nvfp4;
  L.spec = spec;
  L.w13.resize(static_cast<size_t>(E * N1 * H / 2));
  L.w13_scale.resize(static_cast<size_t>(E * N1 * H / 16));
  L.w2.resize(static_cast<size_t>(E * H * I / 2));
  L.w2_scale.resize(static_cast<size_t>(E * H * I / 16));
  L.w13_scale_2.resize(static_cast<size_t>(E));
  L.w2_scale_2.resize(static_cast<size_t>(E));
  Bf16Layer& B = out.bf16;
  B.spec = spec;
  B.slot.assign(static_cast<size_t>(E), -1);
  int32_t kept = 0;
  for (int64_t e = 0; e < E; ++e)
    if (keep.empty() || keep[static_cast<size_t>(e)]) B.slot[static_cast<size_t>(e)] = kept++;
  B.w13.resize(static_cast<size_t>(kept) * static_cast<size_t>(N1 * H));
  B.w2.resize(static_cast<size_t>(kept) * static_cast<size_t>(H * I));
  const float s1 = 1.0f / std::sqrt(static_cast<float>(H)), s2 = 1.0f / std::sqrt(static_cast<float>(I));
  std::atomic<int64_t> done{0};
  detail::parallel_for(E, [&](int64_t e) {
    Stream r(seed, static_cast<uint64_t>(e));
    auto make = [&](int64_t rows, int64_t cols, float sd, uint16_t* keep_dst, uint8_t* packed, uint8_t* scales,
                    float* gs) {
      std::vector<float> f(static_cast<size_t>(rows * cols));
      for (int64_t i = 0; i < rows; ++i) {
        const float row_gain = 0.5f + r.uniform();  // rows differ in magnitude, as real ones do
        for (int64_t c = 0; c < cols; ++c) {
          float v = r.normal() * sd * row_gain;
          if ((r.next() & 1023) == 0) v *= 6.0f;  // rare outliers stretch the per-tensor amax
          const uint16_t b = float_to_bf16(v);
          f[static_cast<size_t>(i * cols + c)] = bf16_to_float(b);
          if (keep_dst) keep_dst[i * cols + c] = b;
        }
      }
      // Gate and up of one expert share one weight_scale_2, as ModelOpt exports fused
      // siblings: quantizing the fused [N1, H] matrix as one tensor gives exactly that.
      QuantizedMatrix q = quantize_weight(f, rows, cols);
      std::copy(q.packed.begin(), q.packed.end(), packed);
      std::copy(q.scales.begin(), q.scales.end(), scales);
      *gs = q.global_scale;
    };
    const bool k = B.has(e);
    make(N1, H, s1, k ? const_cast<uint16_t*>(B.w13_of(e)) : nullptr, &L.w13[static_cast<size_t>(e * N1 * H / 2)],
         &L.w13_scale[static_cast<size_t>(e * N1 * H / 16)], &L.w13_scale_2[static_cast<size_t>(e)]);
    make(H, I, s2, k ? const_cast<uint16_t*>(B.w2_of(e)) : nullptr, &L.w2[static_cast<size_t>(e * H * I / 2)],
         &L.w2_scale[static_cast<size_t>(e * H * I / 16)], &L.w2_scale_2[static_cast<size_t>(e)]);
    const int64_t d = ++done;
    if (progress) progress(d, E);
  });
  return out;
}

NvFp4Layer random_nvfp4_layer(const MoeSpec& spec, uint64_t seed) {
  spec.validate();
  const int64_t E = spec.experts, H = spec.hidden, I = spec.inter, N1 = spec.n1();
  NvFp4Layer L;
  L.spec = spec;
  L.w13.resize(static_cast<size_t>(E * N1 * H / 2));
  L.w13_scale.resize(static_cast<size_t>(E * N1 * H / 16));
  L.w2.resize(static_cast<size_t>(E * H * I / 2));
  L.w2_scale.resize(static_cast<size_t>(E * H * I / 16));
  L.w13_scale_2.resize(static_cast<size_t>(E));
  L.w2_scale_2.resize(static_cast<size_t>(E));
  detail::parallel_for(E, [&](int64_t e) {
    Stream r(seed ^ 0x5eedull, static_cast<uint64_t>(e));
    auto bytes = [&](uint8_t* dst, size_t n) {
      size_t i = 0;
      for (; i + 8 <= n; i += 8) {
        const uint64_t v = r.next();
        for (int b = 0; b < 8; ++b) dst[i + b] = static_cast<uint8_t>(v >> (8 * b));
      }
      for (; i < n; ++i) dst[i] = static_cast<uint8_t>(r.next());
    };
    // e4m3 scales with exponents 2^-6..2^3 (normal range, some near the subnormal edge)
    auto scales = [&](uint8_t* dst, size_t n) {
      for (size_t i = 0; i < n; ++i) {
        const uint64_t v = r.next();
        const int ex = static_cast<int>(v % 10) - 6;  // -6..3
        dst[i] = static_cast<uint8_t>(((ex + 7) << 3) | ((v >> 8) & 7));
      }
    };
    bytes(&L.w13[static_cast<size_t>(e * N1 * H / 2)], static_cast<size_t>(N1 * H / 2));
    scales(&L.w13_scale[static_cast<size_t>(e * N1 * H / 16)], static_cast<size_t>(N1 * H / 16));
    bytes(&L.w2[static_cast<size_t>(e * H * I / 2)], static_cast<size_t>(H * I / 2));
    scales(&L.w2_scale[static_cast<size_t>(e * H * I / 16)], static_cast<size_t>(H * I / 16));
    L.w13_scale_2[static_cast<size_t>(e)] = (0.5f + r.uniform()) / (4.0f * std::sqrt(static_cast<float>(H)));
    L.w2_scale_2[static_cast<size_t>(e)] = (0.5f + r.uniform()) / (4.0f * std::sqrt(static_cast<float>(I)));
  });
  return L;
}

void set_input_scales(NvFp4Layer& L, float fc1_amax, float fc2_amax) {
  FP4MOE_CHECK_ARG(fc1_amax > 0 && std::isfinite(fc1_amax), "fc1_amax", "a positive finite value", fc1_amax);
  FP4MOE_CHECK_ARG(fc2_amax > 0 && std::isfinite(fc2_amax), "fc2_amax", "a positive finite value", fc2_amax);
  L.a13_scale.assign(static_cast<size_t>(L.spec.experts), fc1_amax / (6.0f * 448.0f));
  L.a2_scale.assign(static_cast<size_t>(L.spec.experts), fc2_amax / (6.0f * 448.0f));
}

std::vector<uint16_t> random_hidden_states(int64_t tokens, int64_t hidden, uint64_t seed) {
  std::vector<uint16_t> x(static_cast<size_t>(tokens * hidden));
  Stream r(seed, 0xA11CEull);
  for (auto& v : x) v = float_to_bf16(r.normal());
  return x;
}

std::vector<float> random_logits(int64_t tokens, int64_t experts, uint64_t seed) {
  std::vector<float> l(static_cast<size_t>(tokens * experts));
  Stream r(seed, 0x1061ull);
  for (auto& v : l) v = 2.0f * r.normal();
  return l;
}

Routing random_routing(int64_t tokens, int64_t experts, int64_t topk, uint64_t seed) {
  FP4MOE_CHECK_ARG(topk >= 1 && topk <= experts, "topk", detail::concat("1..", experts), topk);
  Routing R;
  R.tokens = tokens;
  R.topk = topk;
  R.ids.resize(static_cast<size_t>(tokens * topk));
  R.weights.resize(static_cast<size_t>(tokens * topk));
  Stream r(seed, 0x2077ull);
  std::vector<int32_t> perm(static_cast<size_t>(experts));
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t e = 0; e < experts; ++e) perm[static_cast<size_t>(e)] = static_cast<int32_t>(e);
    float sum = 0;
    for (int64_t j = 0; j < topk; ++j) {  // partial Fisher-Yates: k distinct ids
      const int64_t pick = j + static_cast<int64_t>(r.next() % static_cast<uint64_t>(experts - j));
      std::swap(perm[static_cast<size_t>(j)], perm[static_cast<size_t>(pick)]);
      R.ids[static_cast<size_t>(t * topk + j)] = perm[static_cast<size_t>(j)];
      sum += (R.weights[static_cast<size_t>(t * topk + j)] = 0.05f + r.uniform());
    }
    for (int64_t j = 0; j < topk; ++j) R.weights[static_cast<size_t>(t * topk + j)] /= sum;
  }
  return R;
}

}  // namespace fp4moe
