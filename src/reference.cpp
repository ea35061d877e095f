#include "fp4moe/reference.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "fp4moe/bf16.hpp"
#include "fp4moe/error.hpp"
#include "fp4moe/format.hpp"
#include "parallel.hpp"

namespace fp4moe {

float dot_fixed_order(const float* a, const float* b, int64_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) {
      const float p = a[i + l] * b[i + l];
      s[l] = s[l] + p;
    }
  for (; i < n; ++i) {
    const float p = a[i] * b[i];
    s[i % 8] = s[i % 8] + p;
  }
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

namespace {

constexpr int64_t kRowChunk = 128;

struct Pairs {
  // per expert: the pair indices p = t * k + j routed to it, in increasing p
  std::vector<std::vector<int64_t>> of_expert;
  std::vector<float> weight;  // [T*k]
};

Pairs collect_pairs(const MoeSpec& s, const TensorView& ids, const TensorView& wts, int64_t T) {
  Pairs P;
  P.of_expert.resize(static_cast<size_t>(s.experts));
  P.weight.resize(static_cast<size_t>(T * s.topk));
  for (int64_t p = 0; p < T * s.topk; ++p) {
    const int64_t e = ids.dtype == DType::I32 ? ids.as<int32_t>()[p] : ids.as<int64_t>()[p];
    P.of_expert[static_cast<size_t>(e)].push_back(p);
    P.weight[static_cast<size_t>(p)] =
        wts.dtype == DType::F32 ? wts.as<float>()[p] : bf16_to_float(wts.as<uint16_t>()[p]);
  }
  return P;
}

float scale_at(const TensorView& t, int64_t e) {
  if (t.data == nullptr) return 1.0f;
  return t.shape.empty() ? t.as<float>()[0] : t.as<float>()[e];
}

// One row of an NVFP4 matrix dequantized WITHOUT the global scale: e2m1(q) * e4m3(s), which
// is exact in bf16/fp16 - the same values a GPU kernel feeds its MMA.
struct DequantTables {
  float e4m3[256];
  float pair[256][2];  // byte -> (low nibble value, high nibble value)
  DequantTables() {
    for (int b = 0; b < 256; ++b) {
      e4m3[b] = e4m3_decode(static_cast<uint8_t>(b));
      pair[b][0] = e2m1_decode(unpack_lo(static_cast<uint8_t>(b)));
      pair[b][1] = e2m1_decode(unpack_hi(static_cast<uint8_t>(b)));
    }
  }
};
const DequantTables& tables() {
  static const DequantTables t;
  return t;
}

void dequant_row(const uint8_t* packed, const uint8_t* scales, int64_t cols, float* out) {
  const DequantTables& T = tables();
  for (int64_t b = 0; b < cols / kBlock; ++b) {
    const float s = T.e4m3[scales[b]];
    for (int i = 0; i < kBlock; i += 2) {
      const uint8_t byte = packed[(b * kBlock + i) / 2];
      out[b * kBlock + i] = T.pair[byte][0] * s;
      out[b * kBlock + i + 1] = T.pair[byte][1] * s;
    }
  }
}

float silu(float g) { return g / (1.0f + std::exp(-g)); }

}  // namespace

std::vector<uint16_t> reference_moe(const MoeSpec& s, const MoeWeights& w, const TensorView& x,
                                    const TensorView& ids, const TensorView& wts, std::vector<float>* h_out) {
  validate_weights(s, w);
  const int64_t T = validate_inputs(s, x, ids, wts);
  validate_routing_values(s, ids, wts);
  const int64_t H = s.hidden, I = s.inter, N1 = s.n1(), k = s.topk, E = s.experts;
  std::vector<uint16_t> out(static_cast<size_t>(T * H));
  if (T == 0) return out;
  const bool a4 = s.mode == Mode::W4A4;
  Pairs P = collect_pairs(s, ids, wts, T);

  // Per pair: the FC1 operand (xq), the FC2 operand (hq), and z.
  const int64_t NP = T * k;
  std::vector<float> xq(static_cast<size_t>(NP * H)), y(static_cast<size_t>(NP * N1));
  std::vector<float> hq(static_cast<size_t>(NP * I)), z(static_cast<size_t>(NP * H));
  const uint16_t* xb = x.as<uint16_t>();
  detail::parallel_for(NP, [&](int64_t p) {
    const int64_t t = p / k;
    const int64_t e = ids.dtype == DType::I32 ? ids.as<int32_t>()[p] : ids.as<int64_t>()[p];
    float* dst = &xq[static_cast<size_t>(p * H)];
    for (int64_t i = 0; i < H; ++i) dst[i] = bf16_to_float(xb[t * H + i]);
    if (a4) quantize_activation_row(dst, H, scale_at(w.a13_scale, e), nullptr, nullptr, dst);
  });

  // Work units: (expert, chunk of rows), for FC1 then FC2.
  struct Unit { int64_t e, r0, r1; };
  auto make_units = [&](int64_t rows) {
    std::vector<Unit> u;
    for (int64_t e = 0; e < E; ++e)
      if (!P.of_expert[static_cast<size_t>(e)].empty())
        for (int64_t r = 0; r < rows; r += kRowChunk) u.push_back({e, r, std::min(rows, r + kRowChunk)});
    return u;
  };

  const uint8_t* w13 = w.w13.as<uint8_t>();
  const uint8_t* w13s = w.w13_scale.as<uint8_t>();
  const uint8_t* w2 = w.w2.as<uint8_t>();
  const uint8_t* w2s = w.w2_scale.as<uint8_t>();
  const float* g13 = w.w13_scale_2.as<float>();
  const float* g2s = w.w2_scale_2.as<float>();

  auto fc1 = make_units(N1);
  detail::parallel_for(static_cast<int64_t>(fc1.size()), [&](int64_t ui) {
    const Unit u = fc1[static_cast<size_t>(ui)];
    const float g1 = a4 ? g13[u.e] * scale_at(w.a13_scale, u.e) : g13[u.e];
    std::vector<float> row(static_cast<size_t>(H));
    for (int64_t n = u.r0; n < u.r1; ++n) {
      dequant_row(w13 + (u.e * N1 + n) * (H / 2), w13s + (u.e * N1 + n) * (H / 16), H, row.data());
      for (int64_t p : P.of_expert[static_cast<size_t>(u.e)])
        y[static_cast<size_t>(p * N1 + n)] = dot_fixed_order(&xq[static_cast<size_t>(p * H)], row.data(), H) * g1;
    }
  });

  if (h_out) h_out->assign(static_cast<size_t>(NP * I), 0.0f);
  detail::parallel_for(NP, [&](int64_t p) {
    const int64_t e = ids.dtype == DType::I32 ? ids.as<int32_t>()[p] : ids.as<int64_t>()[p];
    const float* yp = &y[static_cast<size_t>(p * N1)];
    float* h = &hq[static_cast<size_t>(p * I)];
    for (int64_t i = 0; i < I; ++i) {
      float v;
      if (s.activation == Activation::SwiGLU) {
        const float gate = s.gate_up_order == GateUpOrder::GateUp ? yp[i] : yp[I + i];
        const float up = s.gate_up_order == GateUpOrder::GateUp ? yp[I + i] : yp[i];
        v = silu(gate) * up;
      } else {
        const float r = yp[i] > 0.0f ? yp[i] : 0.0f;
        v = r * r;
      }
      h[i] = round_bf16(v);
    }
    if (h_out) std::copy(h, h + I, h_out->begin() + p * I);
    if (a4) quantize_activation_row(h, I, scale_at(w.a2_scale, e), nullptr, nullptr, h);
  });

  auto fc2 = make_units(H);
  detail::parallel_for(static_cast<int64_t>(fc2.size()), [&](int64_t ui) {
    const Unit u = fc2[static_cast<size_t>(ui)];
    const float g2 = a4 ? g2s[u.e] * scale_at(w.a2_scale, u.e) : g2s[u.e];
    std::vector<float> row(static_cast<size_t>(I));
    for (int64_t o = u.r0; o < u.r1; ++o) {
      dequant_row(w2 + (u.e * H + o) * (I / 2), w2s + (u.e * H + o) * (I / 16), I, row.data());
      for (int64_t p : P.of_expert[static_cast<size_t>(u.e)])
        z[static_cast<size_t>(p * H + o)] = dot_fixed_order(&hq[static_cast<size_t>(p * I)], row.data(), I) * g2;
    }
  });

  detail::parallel_for(T, [&](int64_t t) {
    for (int64_t o = 0; o < H; ++o) {
      float acc = 0.0f;
      for (int64_t j = 0; j < k; ++j) {
        const float term = P.weight[static_cast<size_t>(t * k + j)] * z[static_cast<size_t>((t * k + j) * H + o)];
        acc = acc + term;
      }
      out[static_cast<size_t>(t * H + o)] = float_to_bf16(acc);
    }
  });
  return out;
}

std::vector<double> reference_moe_fp64(const MoeSpec& s, const Bf16Layer& bf16, const TensorView& x,
                                       const TensorView& ids, const TensorView& wts) {
  s.validate();
  const int64_t H = s.hidden, I = s.inter, N1 = s.n1(), k = s.topk;
  FP4MOE_CHECK_ARG(bf16.spec.hidden == H && bf16.spec.inter == I && bf16.spec.experts == s.experts &&
                       bf16.spec.activation == s.activation,
                   "bf16", "a layer of the same shape as the spec", "another shape");
  const int64_t T = validate_inputs(s, x, ids, wts);
  validate_routing_values(s, ids, wts);
  std::vector<double> out(static_cast<size_t>(T * H), 0.0);
  if (T == 0) return out;
  Pairs P = collect_pairs(s, ids, wts, T);
  const int64_t NP = T * k;
  std::vector<double> h(static_cast<size_t>(NP * I)), z(static_cast<size_t>(NP * H));
  const uint16_t* xb = x.as<uint16_t>();
  detail::parallel_for(s.experts, [&](int64_t e) {
    const auto& pairs = P.of_expert[static_cast<size_t>(e)];
    if (pairs.empty()) return;
    if (!bf16.has(e)) throw Error(detail::concat("bf16: expert ", e, " is routed to but its weights are absent"));
    const uint16_t* W1 = bf16.w13_of(e);
    const uint16_t* W2 = bf16.w2_of(e);
    std::vector<double> yv(static_cast<size_t>(N1));
    for (int64_t p : pairs) {
      const int64_t t = p / k;
      for (int64_t n = 0; n < N1; ++n) {
        double acc = 0;
        const uint16_t* wr = W1 + n * H;
        for (int64_t i = 0; i < H; ++i) acc += double(bf16_to_float(xb[t * H + i])) * double(bf16_to_float(wr[i]));
        yv[static_cast<size_t>(n)] = acc;
      }
      double* hp = &h[static_cast<size_t>(p * I)];
      for (int64_t i = 0; i < I; ++i) {
        if (s.activation == Activation::SwiGLU) {
          const double g = s.gate_up_order == GateUpOrder::GateUp ? yv[i] : yv[I + i];
          const double u = s.gate_up_order == GateUpOrder::GateUp ? yv[I + i] : yv[i];
          hp[i] = g / (1.0 + std::exp(-g)) * u;
        } else {
          const double r = yv[i] > 0 ? yv[i] : 0;
          hp[i] = r * r;
        }
      }
      for (int64_t o = 0; o < H; ++o) {
        double acc = 0;
        const uint16_t* wr = W2 + o * I;
        for (int64_t i = 0; i < I; ++i) acc += hp[i] * double(bf16_to_float(wr[i]));
        z[static_cast<size_t>(p * H + o)] = acc;
      }
    }
  });
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j)
      for (int64_t o = 0; o < H; ++o)
        out[static_cast<size_t>(t * H + o)] += double(P.weight[static_cast<size_t>(t * k + j)]) * z[static_cast<size_t>((t * k + j) * H + o)];
  return out;
}

}  // namespace fp4moe
