#include "fp4moe/moe.hpp"

#include <cmath>
#include <vector>

#include "fp4moe/bf16.hpp"
#include "fp4moe/error.hpp"

namespace fp4moe {

const char* to_string(Activation a) { return a == Activation::SwiGLU ? "silu" : "relu2"; }
const char* to_string(Mode m) { return m == Mode::W4A16 ? "w4a16" : "w4a4"; }
const char* to_string(GateUpOrder o) { return o == GateUpOrder::GateUp ? "gate_up" : "up_gate"; }

Activation parse_activation(const std::string& s) {
  if (s == "silu" || s == "swiglu") return Activation::SwiGLU;
  if (s == "relu2" || s == "relu^2") return Activation::ReLU2;
  throw_arg_error("activation", "\"silu\" or \"relu2\"", "\"" + s + "\"");
}
Mode parse_mode(const std::string& s) {
  if (s == "w4a16" || s == "none") return Mode::W4A16;
  if (s == "w4a4" || s == "nvfp4") return Mode::W4A4;
  throw_arg_error("mode", "\"w4a16\" or \"w4a4\"", "\"" + s + "\"");
}
GateUpOrder parse_gate_up_order(const std::string& s) {
  if (s == "gate_up") return GateUpOrder::GateUp;
  if (s == "up_gate") return GateUpOrder::UpGate;
  throw_arg_error("gate_up_order", "\"gate_up\" or \"up_gate\"", "\"" + s + "\"");
}

void MoeSpec::validate() const {
  FP4MOE_CHECK_ARG(hidden > 0 && hidden % 16 == 0, "hidden (H)", "a positive multiple of 16", hidden);
  FP4MOE_CHECK_ARG(inter > 0 && inter % 16 == 0, "inter (I)", "a positive multiple of 16", inter);
  FP4MOE_CHECK_ARG(experts > 0, "experts (E)", "> 0", experts);
  FP4MOE_CHECK_ARG(topk > 0 && topk <= experts, "topk (k)", detail::concat("1 <= k <= E = ", experts), topk);
}

static void check_input_scale(const TensorView& t, const char* arg, int64_t E) {
  if (t.data == nullptr && t.shape.empty()) return;  // absent
  check_tensor(t, arg, DType::F32, {-1});
  FP4MOE_CHECK_ARG(t.shape.size() == 0 || t.shape[0] == E, arg, detail::concat("shape [", E, "] or []"),
                   "shape " + t.shape_str());
}

void validate_weights(const MoeSpec& s, const MoeWeights& w) {
  s.validate();
  const int64_t E = s.experts, H = s.hidden, I = s.inter, N1 = s.n1();
  check_tensor(w.w13, "w13", DType::U8, {E, N1, H / 2});
  check_tensor(w.w13_scale, "w13_scale", {DType::E4M3, DType::U8}, {E, N1, H / 16});
  check_tensor(w.w13_scale_2, "w13_scale_2", DType::F32, {E});
  check_tensor(w.w2, "w2", DType::U8, {E, H, I / 2});
  check_tensor(w.w2_scale, "w2_scale", {DType::E4M3, DType::U8}, {E, H, I / 16});
  check_tensor(w.w2_scale_2, "w2_scale_2", DType::F32, {E});
  // A scalar input scale is a 0-d tensor: check_tensor's {-1} pattern needs 1-d, so handle both.
  for (auto [t, name] : {std::pair{&w.a13_scale, "a13_scale"}, std::pair{&w.a2_scale, "a2_scale"}}) {
    if (t->data == nullptr) continue;
    if (t->shape.empty()) {
      FP4MOE_CHECK_ARG(t->dtype == DType::F32, name, "dtype float32", dtype_name(t->dtype));
      continue;
    }
    check_input_scale(*t, name, E);
  }
}

int64_t validate_inputs(const MoeSpec& s, const TensorView& x, const TensorView& ids, const TensorView& wts) {
  check_tensor(x, "x", DType::BF16, {-1, s.hidden});
  const int64_t T = x.shape[0];
  check_tensor(ids, "topk_ids", {DType::I32, DType::I64}, {T, s.topk});
  check_tensor(wts, "topk_weights", {DType::F32, DType::BF16}, {T, s.topk});
  return T;
}

void validate_routing_values(const MoeSpec& s, const TensorView& ids, const TensorView& wts) {
  const int64_t T = ids.shape[0], k = s.topk;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = ids.dtype == DType::I32 ? ids.as<int32_t>()[t * k + j] : ids.as<int64_t>()[t * k + j];
      if (e < 0 || e >= s.experts)
        throw Error(detail::concat("topk_ids[", t, ", ", j, "]: expected an expert id in [0, ", s.experts,
                                   "), got ", e));
      const float r = wts.dtype == DType::F32 ? wts.as<float>()[t * k + j]
                                              : bf16_to_float(wts.as<uint16_t>()[t * k + j]);
      if (!std::isfinite(r))
        throw Error(detail::concat("topk_weights[", t, ", ", j, "]: expected a finite weight, got ", r));
    }
  }
}

}  // namespace fp4moe
