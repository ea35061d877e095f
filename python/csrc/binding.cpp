// fp4moe PyTorch binding: thin - checks the tensors (naming the argument), converts the routing
// dtypes, and calls fp4moe::Moe on the current CUDA stream. Ops live in the `fp4moe` namespace:
//   fp4moe::fused_moe(...) -> Tensor            functional, caches the prepared weights
//   fp4moe::fused_moe_out(..., Tensor(a!) out)  same, writing into out
//   fp4moe::moe_forward(int handle, x, ids, w) -> Tensor        for NvFp4MoE
//   fp4moe::moe_forward_out(int handle, x, ids, w, Tensor(a!) out)
// Fake (meta) kernels are registered in Python (fp4moe/__init__.py).
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#include <execinfo.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "fp4moe/api.hpp"

namespace {

using fp4moe::DType;

// fp4moe::Error -> ValueError (bad input); SelectionError -> RuntimeError (cannot run).
template <typename F>
auto translate(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const fp4moe::SelectionError& e) {
    TORCH_CHECK(false, "fp4moe: ", e.what());
  } catch (const fp4moe::Error& e) {
    TORCH_CHECK_VALUE(false, "fp4moe: ", e.what());
  }
}

DType to_dtype(const at::Tensor& t, const char* arg) {
  switch (t.scalar_type()) {
    case at::kByte: return DType::U8;
    case at::kFloat8_e4m3fn: return DType::E4M3;
    case at::kFloat: return DType::F32;
    case at::kBFloat16: return DType::BF16;
    case at::kInt: return DType::I32;
    case at::kLong: return DType::I64;
    default: TORCH_CHECK_VALUE(false, "fp4moe: ", arg, ": unsupported dtype ", t.scalar_type());
  }
}

fp4moe::TensorView view(const at::Tensor& t, const char* arg) {
  TORCH_CHECK_VALUE(t.is_contiguous(), "fp4moe: ", arg, ": expected a contiguous tensor, got strides ", t.strides());
  return fp4moe::TensorView(t.data_ptr(), to_dtype(t, arg), t.sizes().vec());
}

void check_device(const at::Tensor& t, const char* arg, const at::Device& dev) {
  TORCH_CHECK_VALUE(t.device() == dev, "fp4moe: ", arg, ": expected a tensor on ", dev, " (where the weights are), got ",
                    t.device());
}

struct Layer {
  std::unique_ptr<fp4moe::Moe> moe;
  at::Device device{at::kCPU};
};

// NvFp4MoE objects by handle.
std::mutex g_mu;
std::map<int64_t, std::shared_ptr<Layer>> g_layers;
int64_t g_next = 1;

void run(Layer& L, const at::Tensor& x, const at::Tensor& ids, const at::Tensor& wts, at::Tensor& out) {
  translate([&] {
    const fp4moe::MoeSpec& s = L.moe->spec();
    check_device(x, "x", L.device);
    check_device(ids, "topk_ids", L.device);
    check_device(wts, "topk_weights", L.device);
    check_device(out, "out", L.device);
    TORCH_CHECK_VALUE(x.scalar_type() == at::kBFloat16, "fp4moe: x: expected dtype bfloat16, got ", x.scalar_type());
    TORCH_CHECK_VALUE(x.dim() == 2 && x.size(1) == s.hidden, "fp4moe: x: expected shape [T, ", s.hidden, "], got ",
                      x.sizes());
    const int64_t T = x.size(0);
    TORCH_CHECK_VALUE(ids.scalar_type() == at::kInt || ids.scalar_type() == at::kLong,
                      "fp4moe: topk_ids: expected dtype int32 or int64, got ", ids.scalar_type());
    TORCH_CHECK_VALUE(ids.dim() == 2 && ids.size(0) == T && ids.size(1) == s.topk, "fp4moe: topk_ids: expected shape [",
                      T, ", ", s.topk, "], got ", ids.sizes());
    TORCH_CHECK_VALUE(wts.scalar_type() == at::kFloat || wts.scalar_type() == at::kBFloat16,
                      "fp4moe: topk_weights: expected dtype float32 or bfloat16, got ", wts.scalar_type());
    TORCH_CHECK_VALUE(wts.sizes() == ids.sizes(), "fp4moe: topk_weights: expected shape ", ids.sizes(), ", got ",
                      wts.sizes());
    TORCH_CHECK_VALUE(out.scalar_type() == at::kBFloat16 && out.sizes() == x.sizes(),
                      "fp4moe: out: expected a bfloat16 tensor of shape ", x.sizes(), ", got ", out.scalar_type(), " ",
                      out.sizes());
    if (T == 0) return 0;
    // The CUDA kernels take int32 ids and float32 weights (converted on the stream: no sync).
    const at::Tensor ids32 = ids.scalar_type() == at::kInt ? ids.contiguous() : ids.to(at::kInt);
    const at::Tensor w32 = wts.scalar_type() == at::kFloat ? wts.contiguous() : wts.to(at::kFloat);
    void* stream = nullptr;
    std::optional<c10::cuda::CUDAGuard> guard;
    if (L.device.is_cuda()) {
      guard.emplace(L.device);
      stream = at::cuda::getCurrentCUDAStream(L.device.index()).stream();
    }
    L.moe->forward(view(x, "x"), view(ids32, "topk_ids"), view(w32, "topk_weights"),
                   fp4moe::MutableTensorView(out.data_ptr(), DType::BF16, out.sizes().vec()), stream);
    return 0;
  });
}

// ---------------------------------------------------------------- NvFp4MoE handles

// Prepares a layer (defined below).
std::shared_ptr<Layer> build_k(const at::Tensor& w13, const at::Tensor& w13_scale, const at::Tensor& w13_scale_2,
                               const at::Tensor& w2, const at::Tensor& w2_scale, const at::Tensor& w2_scale_2,
                               const std::optional<at::Tensor>& a13, const std::optional<at::Tensor>& a2,
                               const std::string& activation, const std::string& act_quant,
                               const std::string& gate_up_order, int64_t topk, int64_t max_tokens,
                               const std::string& backend);

int64_t create(const at::Tensor& w13, const at::Tensor& w13_scale, const at::Tensor& w13_scale_2, const at::Tensor& w2,
               const at::Tensor& w2_scale, const at::Tensor& w2_scale_2, const std::optional<at::Tensor>& a13,
               const std::optional<at::Tensor>& a2, const std::string& activation, const std::string& act_quant,
               const std::string& gate_up_order, int64_t topk, int64_t max_tokens, const std::string& backend) {
  auto L = build_k(w13, w13_scale, w13_scale_2, w2, w2_scale, w2_scale_2, a13, a2, activation, act_quant,
                   gate_up_order, topk, max_tokens, backend);
  std::lock_guard<std::mutex> lk(g_mu);
  g_layers[g_next] = L;
  return g_next++;
}

std::shared_ptr<Layer> layer_of(int64_t handle) {
  std::lock_guard<std::mutex> lk(g_mu);
  auto it = g_layers.find(handle);
  TORCH_CHECK_VALUE(it != g_layers.end(), "fp4moe: handle: expected a live NvFp4MoE handle, got ", handle);
  return it->second;
}

void destroy(int64_t handle) {
  std::lock_guard<std::mutex> lk(g_mu);
  g_layers.erase(handle);
}

std::string report(int64_t handle) { return layer_of(handle)->moe->report().str(); }
std::string backend_of(int64_t handle) { return layer_of(handle)->moe->backend(); }

at::Tensor moe_forward(int64_t handle, const at::Tensor& x, const at::Tensor& ids, const at::Tensor& wts) {
  auto L = layer_of(handle);
  at::Tensor out = at::empty(x.sizes(), x.options());
  run(*L, x, ids, wts, out);
  return out;
}

void moe_forward_out(int64_t handle, const at::Tensor& x, const at::Tensor& ids, const at::Tensor& wts, at::Tensor out) {
  TORCH_CHECK_VALUE(out.is_contiguous(), "fp4moe: out: expected a contiguous tensor");
  run(*layer_of(handle), x, ids, wts, out);
}

// ---------------------------------------------------------------- the functional op's cache
// Keyed on the weight tensors' identity (TensorImpl, data pointer) and version counters, the
// options and top-k. An entry whose tensors died, or were modified in place, is rebuilt.
using WeakImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;
struct Entry {
  std::vector<WeakImpl> impls;
  std::vector<const void*> ptrs;
  std::vector<int64_t> versions;
  std::string opts;
  int64_t max_tokens = 0;
  std::shared_ptr<Layer> layer;
};
std::mutex g_cache_mu;
std::vector<Entry> g_cache;

int64_t max_tokens_for(int64_t T) {
  if (T <= 64) return 64;
  int64_t m = 128;
  while (m < T) m *= 2;
  return m;
}

std::shared_ptr<Layer> cached(const std::vector<const at::Tensor*>& ts, const std::string& opts, int64_t T,
                              const std::function<std::shared_ptr<Layer>(int64_t)>& make) {
  std::lock_guard<std::mutex> lk(g_cache_mu);
  // Drop entries whose tensors are gone.
  std::erase_if(g_cache, [](const Entry& e) {
    for (const auto& w : e.impls)
      if (w.expired()) return true;
    return false;
  });
  for (auto it = g_cache.begin(); it != g_cache.end(); ++it) {
    Entry& e = *it;
    bool same = e.opts == opts && e.impls.size() == ts.size();
    for (size_t i = 0; same && i < ts.size(); ++i) {
      const at::Tensor& t = *ts[i];
      same = e.impls[i].lock().get() == t.unsafeGetTensorImpl() && e.ptrs[i] == t.data_ptr() &&
             e.versions[i] == t._version();
    }
    if (!same) continue;
    if (T <= e.max_tokens) return e.layer;
    g_cache.erase(it);  // too small for this batch: rebuilt below
    break;
  }
  for (const at::Tensor* t : ts) {
    if (!t->is_cuda()) continue;
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    cudaStreamIsCapturing(at::cuda::getCurrentCUDAStream(t->device().index()).stream(), &st);
    TORCH_CHECK(st == cudaStreamCaptureStatusNone,
                "fp4moe.fused_moe: these weights (or this batch size) were not prepared before CUDA-graph capture; "
                "call fused_moe once outside the capture with the same weights and at least as many tokens, or "
                "use fp4moe.NvFp4MoE");
    break;
  }
  Entry e;
  e.max_tokens = max_tokens_for(T);
  e.layer = make(e.max_tokens);
  e.opts = opts;
  for (const at::Tensor* t : ts) {
    e.impls.emplace_back(t->getIntrusivePtr());
    e.ptrs.push_back(t->data_ptr());
    e.versions.push_back(t->_version());
  }
  g_cache.push_back(std::move(e));
  return g_cache.back().layer;
}

std::shared_ptr<Layer> functional_layer(const at::Tensor& x, const at::Tensor& ids, const at::Tensor& w13,
                                        const at::Tensor& w13_scale, const at::Tensor& w13_scale_2,
                                        const at::Tensor& w2, const at::Tensor& w2_scale, const at::Tensor& w2_scale_2,
                                        const std::optional<at::Tensor>& a13, const std::optional<at::Tensor>& a2,
                                        const std::string& activation, const std::string& act_quant,
                                        const std::string& gate_up_order, const std::string& backend) {
  TORCH_CHECK_VALUE(x.dim() == 2, "fp4moe: x: expected shape [T, H], got ", x.sizes());
  TORCH_CHECK_VALUE(ids.dim() == 2, "fp4moe: topk_ids: expected shape [T, k], got ", ids.sizes());
  const int64_t topk = ids.size(1);
  std::vector<const at::Tensor*> ts = {&w13, &w13_scale, &w13_scale_2, &w2, &w2_scale, &w2_scale_2};
  if (a13) ts.push_back(&*a13);
  if (a2) ts.push_back(&*a2);
  const std::string opts = activation + "|" + act_quant + "|" + gate_up_order + "|" + backend + "|" +
                           std::to_string(topk) + "|" + (a13 ? "a13" : "") + (a2 ? "a2" : "");
  return cached(ts, opts, x.size(0), [&](int64_t max_tokens) {
    return build_k(w13, w13_scale, w13_scale_2, w2, w2_scale, w2_scale_2, a13, a2, activation, act_quant,
                   gate_up_order, topk, max_tokens, backend);
  });
}

at::Tensor fused_moe(const at::Tensor& x, const at::Tensor& ids, const at::Tensor& wts, const at::Tensor& w13,
                     const at::Tensor& w13_scale, const at::Tensor& w13_scale_2, const at::Tensor& w2,
                     const at::Tensor& w2_scale, const at::Tensor& w2_scale_2, const std::optional<at::Tensor>& a13,
                     const std::optional<at::Tensor>& a2, std::string activation, std::string act_quant,
                     std::string gate_up_order, std::string backend) {
  auto L = functional_layer(x, ids, w13, w13_scale, w13_scale_2, w2, w2_scale, w2_scale_2, a13, a2, activation,
                            act_quant, gate_up_order, backend);
  at::Tensor out = at::empty(x.sizes(), x.options());
  run(*L, x, ids, wts, out);
  return out;
}

void fused_moe_out(const at::Tensor& x, const at::Tensor& ids, const at::Tensor& wts, const at::Tensor& w13,
                   const at::Tensor& w13_scale, const at::Tensor& w13_scale_2, const at::Tensor& w2,
                   const at::Tensor& w2_scale, const at::Tensor& w2_scale_2, const std::optional<at::Tensor>& a13,
                   const std::optional<at::Tensor>& a2, std::string activation, std::string act_quant,
                   std::string gate_up_order, std::string backend, at::Tensor out) {
  TORCH_CHECK_VALUE(out.is_contiguous(), "fp4moe: out: expected a contiguous tensor");
  auto L = functional_layer(x, ids, w13, w13_scale, w13_scale_2, w2, w2_scale, w2_scale_2, a13, a2, activation,
                            act_quant, gate_up_order, backend);
  run(*L, x, ids, wts, out);
}

std::shared_ptr<Layer> build_k(const at::Tensor& w13, const at::Tensor& w13_scale, const at::Tensor& w13_scale_2,
                               const at::Tensor& w2, const at::Tensor& w2_scale, const at::Tensor& w2_scale_2,
                               const std::optional<at::Tensor>& a13, const std::optional<at::Tensor>& a2,
                               const std::string& activation, const std::string& act_quant,
                               const std::string& gate_up_order, int64_t topk, int64_t max_tokens,
                               const std::string& backend) {
  return translate([&] {
    TORCH_CHECK_VALUE(topk >= 1, "fp4moe: topk: expected >= 1, got ", topk);
    const at::Device dev = w13.device();
    const std::pair<const at::Tensor*, const char*> all[] = {{&w13, "w13"},           {&w13_scale, "w13_scale"},
                                                             {&w13_scale_2, "w13_scale_2"}, {&w2, "w2"},
                                                             {&w2_scale, "w2_scale"}, {&w2_scale_2, "w2_scale_2"}};
    for (auto& [t, name] : all) check_device(*t, name, dev);
    TORCH_CHECK_VALUE(w13.dim() == 3, "fp4moe: w13: expected shape [E, N1, H/2], got ", w13.sizes());
    TORCH_CHECK_VALUE(w2.dim() == 3, "fp4moe: w2: expected shape [E, H, I/2], got ", w2.sizes());
    fp4moe::MoeSpec spec;
    spec.activation = fp4moe::parse_activation(activation);
    spec.mode = fp4moe::parse_mode(act_quant);
    spec.gate_up_order = fp4moe::parse_gate_up_order(gate_up_order);
    spec.experts = w13.size(0);
    spec.hidden = w2.size(1);
    spec.inter = w2.size(2) * 2;
    spec.topk = topk;
    fp4moe::MoeWeights w;
    w.w13 = view(w13, "w13");
    w.w13_scale = view(w13_scale, "w13_scale");
    w.w13_scale_2 = view(w13_scale_2, "w13_scale_2");
    w.w2 = view(w2, "w2");
    w.w2_scale = view(w2_scale, "w2_scale");
    w.w2_scale_2 = view(w2_scale_2, "w2_scale_2");
    if (a13) check_device(*a13, "a13_scale", dev), w.a13_scale = view(*a13, "a13_scale");
    if (a2) check_device(*a2, "a2_scale", dev), w.a2_scale = view(*a2, "a2_scale");
    fp4moe::MoeOptions o;
    o.backend = backend;
    o.max_tokens = max_tokens;
    o.weights_on = dev.is_cuda() ? fp4moe::Memory::Device : fp4moe::Memory::Host;
    o.data_on = o.weights_on;
    o.device = dev.is_cuda() ? dev.index() : 0;
    auto L = std::make_shared<Layer>();
    L->device = dev;
    std::optional<c10::cuda::CUDAGuard> guard;
    if (dev.is_cuda()) guard.emplace(dev);
    L->moe = std::make_unique<fp4moe::Moe>(spec, w, o);
    return L;
  });
}

}  // namespace

TORCH_LIBRARY(fp4moe, m) {
  m.def(
      "fused_moe(Tensor x, Tensor topk_ids, Tensor topk_weights, Tensor w13, Tensor w13_scale, Tensor w13_scale_2, "
      "Tensor w2, Tensor w2_scale, Tensor w2_scale_2, Tensor? a13_scale, Tensor? a2_scale, str activation, "
      "str act_quant, str gate_up_order, str backend) -> Tensor");
  m.def(
      "fused_moe_out(Tensor x, Tensor topk_ids, Tensor topk_weights, Tensor w13, Tensor w13_scale, "
      "Tensor w13_scale_2, Tensor w2, Tensor w2_scale, Tensor w2_scale_2, Tensor? a13_scale, Tensor? a2_scale, "
      "str activation, str act_quant, str gate_up_order, str backend, Tensor(a!) out) -> ()");
  m.def("moe_forward(int handle, Tensor x, Tensor topk_ids, Tensor topk_weights) -> Tensor");
  m.def("moe_forward_out(int handle, Tensor x, Tensor topk_ids, Tensor topk_weights, Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(fp4moe, CUDA, m) {
  m.impl("fused_moe", &fused_moe);
  m.impl("fused_moe_out", &fused_moe_out);
  m.impl("moe_forward", &moe_forward);
  m.impl("moe_forward_out", &moe_forward_out);
}

TORCH_LIBRARY_IMPL(fp4moe, CPU, m) {
  m.impl("fused_moe", &fused_moe);
  m.impl("fused_moe_out", &fused_moe_out);
  m.impl("moe_forward", &moe_forward);
  m.impl("moe_forward_out", &moe_forward_out);
}

namespace {
// FP4MOE_SEGV_BACKTRACE=1: print the native stack on a crash (diagnostics on machines without gdb).
void segv_backtrace(int sig) {
  void* frames[64];
  const int n = backtrace(frames, 64);
  static const char msg[] = "fp4moe: fatal signal, native backtrace:\n";
  ssize_t ignored = write(2, msg, sizeof msg - 1);
  (void)ignored;
  backtrace_symbols_fd(frames, n, 2);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  if (const char* e = std::getenv("FP4MOE_SEGV_BACKTRACE"); e && e[0] == '1') {
    std::signal(SIGSEGV, segv_backtrace);
    std::signal(SIGABRT, segv_backtrace);
  }
  m.doc() = "fp4moe: NVFP4 Mixture-of-Experts layers (ops registered under torch.ops.fp4moe)";
  m.def("create", &create, "Prepare a layer; returns a handle", py::arg("w13"), py::arg("w13_scale"),
        py::arg("w13_scale_2"), py::arg("w2"), py::arg("w2_scale"), py::arg("w2_scale_2"), py::arg("a13_scale"),
        py::arg("a2_scale"), py::arg("activation"), py::arg("act_quant"), py::arg("gate_up_order"), py::arg("topk"),
        py::arg("max_tokens"), py::arg("backend"));
  m.def("destroy", &destroy);
  m.def("report", &report);
  m.def("backend", &backend_of);
  m.def("set_log_level", [](const std::string& l) { translate([&] { fp4moe::set_log_level(fp4moe::parse_log_level(l)); return 0; }); });
}
