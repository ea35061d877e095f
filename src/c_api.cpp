// The C API over fp4moe::Moe: exceptions become status codes plus a thread-local message.
#include "fp4moe/fp4moe.h"

#include <exception>
#include <new>
#include <string>

#include "fp4moe/api.hpp"

struct fp4moe_moe {
  fp4moe::Moe moe;
  std::string report;
};

namespace {

thread_local std::string g_last_error;

fp4moe_status fail(fp4moe_status s, const std::string& msg) {
  g_last_error = msg;
  return s;
}

// Runs f, mapping the library's exceptions to status codes.
template <typename F>
fp4moe_status guarded(F&& f) {
  try {
    g_last_error.clear();
    f();
    return FP4MOE_OK;
  } catch (const fp4moe::SelectionError& e) {
    return fail(FP4MOE_ERROR_UNSUPPORTED, e.what());
  } catch (const fp4moe::Error& e) {
    const std::string w = e.what();
    return fail(w.rfind("CUDA error", 0) == 0 ? FP4MOE_ERROR_CUDA : FP4MOE_ERROR_INVALID_ARGUMENT, w);
  } catch (const std::bad_alloc&) {
    return fail(FP4MOE_ERROR_INTERNAL, "out of host memory");
  } catch (const std::exception& e) {
    return fail(FP4MOE_ERROR_INTERNAL, e.what());
  } catch (...) {
    return fail(FP4MOE_ERROR_INTERNAL, "unknown error");
  }
}

fp4moe::DType to_dtype(int32_t d, const char* arg) {
  if (d < FP4MOE_U8 || d > FP4MOE_I64)
    fp4moe::throw_arg_error(std::string(arg) + ".dtype", "an fp4moe_dtype (0..5)", d);
  return static_cast<fp4moe::DType>(d);  // same order as fp4moe::DType
}
static_assert(static_cast<int>(fp4moe::DType::U8) == FP4MOE_U8 && static_cast<int>(fp4moe::DType::E4M3) == FP4MOE_E4M3 &&
              static_cast<int>(fp4moe::DType::F32) == FP4MOE_F32 && static_cast<int>(fp4moe::DType::BF16) == FP4MOE_BF16 &&
              static_cast<int>(fp4moe::DType::I32) == FP4MOE_I32 && static_cast<int>(fp4moe::DType::I64) == FP4MOE_I64);

std::vector<int64_t> to_shape(const fp4moe_tensor& t, const char* arg) {
  if (t.ndim < 0 || t.ndim > FP4MOE_MAX_DIMS)
    fp4moe::throw_arg_error(std::string(arg) + ".ndim", "0..4", t.ndim);
  return std::vector<int64_t>(t.shape, t.shape + t.ndim);
}

fp4moe::TensorView view(const fp4moe_tensor* t, const char* arg, bool optional = false) {
  if (!t) {
    if (optional) return {};
    fp4moe::throw_arg_error(arg, "a tensor", "NULL");
  }
  if (optional && t->data == nullptr && t->ndim == 0) return {};
  return fp4moe::TensorView(t->data, to_dtype(t->dtype, arg), to_shape(*t, arg));
}

fp4moe::Memory to_memory(int32_t m, const char* arg) {
  if (m == 0 || m == FP4MOE_HOST) return fp4moe::Memory::Host;
  if (m == FP4MOE_DEVICE) return fp4moe::Memory::Device;
  fp4moe::throw_arg_error(arg, "FP4MOE_HOST (1) or FP4MOE_DEVICE (2)", m);
}

}  // namespace

extern "C" {

fp4moe_status fp4moe_create(const fp4moe_spec* spec, const fp4moe_weights* w, const fp4moe_options* options,
                            fp4moe_moe** out) {
  return guarded([&] {
    if (!out) fp4moe::throw_arg_error("out", "a pointer to receive the handle", "NULL");
    *out = nullptr;
    if (!spec) fp4moe::throw_arg_error("spec", "a spec", "NULL");
    if (!w) fp4moe::throw_arg_error("weights", "weights", "NULL");
    fp4moe::MoeSpec s;
    s.hidden = spec->hidden;
    s.inter = spec->inter;
    s.experts = spec->experts;
    s.topk = spec->topk;
    s.activation = fp4moe::parse_activation(spec->activation ? spec->activation : "silu");
    s.mode = fp4moe::parse_mode(spec->act_quant ? spec->act_quant : "none");
    s.gate_up_order = fp4moe::parse_gate_up_order(spec->gate_up_order ? spec->gate_up_order : "gate_up");
    fp4moe::MoeWeights mw;
    mw.w13 = view(&w->w13, "w13");
    mw.w13_scale = view(&w->w13_scale, "w13_scale");
    mw.w13_scale_2 = view(&w->w13_scale_2, "w13_scale_2");
    mw.w2 = view(&w->w2, "w2");
    mw.w2_scale = view(&w->w2_scale, "w2_scale");
    mw.w2_scale_2 = view(&w->w2_scale_2, "w2_scale_2");
    mw.a13_scale = view(&w->a13_scale, "a13_scale", true);
    mw.a2_scale = view(&w->a2_scale, "a2_scale", true);
    fp4moe::MoeOptions o;
    if (options) {
      if (options->backend) o.backend = options->backend;
      if (options->max_tokens != 0) o.max_tokens = options->max_tokens;
      o.device = options->device;
      o.weights_on = to_memory(options->weights_on, "options.weights_on");
      o.data_on = to_memory(options->data_on, "options.data_on");
      if (options->ids_dtype != 0) o.ids_dtype = to_dtype(options->ids_dtype, "options.ids_dtype");
      if (options->topk_weights_dtype != 0)
        o.topk_weights_dtype = to_dtype(options->topk_weights_dtype, "options.topk_weights_dtype");
      o.crossover = options->crossover;
    }
    auto* h = new fp4moe_moe{fp4moe::Moe(s, mw, o), {}};
    h->report = h->moe.report().str();
    *out = h;
  });
}

fp4moe_status fp4moe_forward(fp4moe_moe* moe, const fp4moe_tensor* x, const fp4moe_tensor* topk_ids,
                             const fp4moe_tensor* topk_weights, fp4moe_tensor* out, void* stream) {
  return guarded([&] {
    if (!moe) fp4moe::throw_arg_error("moe", "a handle from fp4moe_create", "NULL");
    if (!out) fp4moe::throw_arg_error("out", "a tensor", "NULL");
    fp4moe::MutableTensorView o(out->data, to_dtype(out->dtype, "out"), to_shape(*out, "out"));
    moe->moe.forward(view(x, "x"), view(topk_ids, "topk_ids"), view(topk_weights, "topk_weights"), o, stream);
  });
}

void fp4moe_destroy(fp4moe_moe* moe) { delete moe; }

const char* fp4moe_backend(const fp4moe_moe* moe) { return moe ? moe->moe.backend().c_str() : ""; }
const char* fp4moe_selection_report(const fp4moe_moe* moe) { return moe ? moe->report.c_str() : ""; }
const char* fp4moe_last_error(void) { return g_last_error.c_str(); }
const char* fp4moe_version(void) { return FP4MOE_VERSION; }

const char* fp4moe_status_string(fp4moe_status s) {
  switch (s) {
    case FP4MOE_OK: return "ok";
    case FP4MOE_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case FP4MOE_ERROR_UNSUPPORTED: return "unsupported (backend selection failed)";
    case FP4MOE_ERROR_CUDA: return "CUDA error";
    case FP4MOE_ERROR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

}  // extern "C"
