// The public C++ API: Moe = selection + prepared weights + dispatch per call.
#include "fp4moe/api.hpp"

#include <algorithm>
#include <cstring>

#include "cuda/backend_api.hpp"
#include "fp4moe/bf16.hpp"
#include "fp4moe/error.hpp"
#include "fp4moe/reference.hpp"
#include "fp4moe/synthetic.hpp"
#include "log.hpp"

#if defined(FP4MOE_HAVE_DECODE)
#include <cuda_runtime_api.h>
#endif

namespace fp4moe {

namespace {

// A host copy of the weights in the on-disk layout (the CPU reference's "prepared" form).
NvFp4Layer copy_host_layer(const MoeSpec& s, const MoeWeights& w) {
  NvFp4Layer L;
  L.spec = s;
  auto take_u8 = [](const TensorView& t, std::vector<uint8_t>& dst) {
    const auto* p = t.as<uint8_t>();
    dst.assign(p, p + t.numel());
  };
  auto take_f32 = [](const TensorView& t, std::vector<float>& dst) {
    const auto* p = t.as<float>();
    dst.assign(p, p + t.numel());
  };
  take_u8(w.w13, L.w13);
  take_u8(w.w13_scale, L.w13_scale);
  take_u8(w.w2, L.w2);
  take_u8(w.w2_scale, L.w2_scale);
  take_f32(w.w13_scale_2, L.w13_scale_2);
  take_f32(w.w2_scale_2, L.w2_scale_2);
  // Input scales: a scalar becomes one value per expert; absent stays absent (= 1.0).
  auto take_scale = [&](const TensorView& t, std::vector<float>& dst) {
    if (t.data == nullptr) return;
    if (t.shape.empty()) dst.assign(static_cast<size_t>(s.experts), *t.as<float>());
    else take_f32(t, dst);
  };
  take_scale(w.a13_scale, L.a13_scale);
  take_scale(w.a2_scale, L.a2_scale);
  return L;
}

#if defined(FP4MOE_HAVE_DECODE)
void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}
#endif

}  // namespace

struct Moe::Impl {
  MoeSpec spec;
  MoeOptions opt;
  SelectionReport report;
  // cpu-reference
  NvFp4Layer host;
  // CUDA: decode handles T < crossover (hybrid) or every call (cuda-decode); prefill the rest.
  std::unique_ptr<cuda::MoeKernel> decode, prefill;
  int64_t crossover = 0;
  // forward_from_logits on the GPU: device buffers for the routing, [max_tokens, k].
  void* d_ids = nullptr;
  void* d_wts = nullptr;

  ~Impl() {
#if defined(FP4MOE_HAVE_DECODE)
    if (d_ids) cudaFree(d_ids);
    if (d_wts) cudaFree(d_wts);
#endif
  }

  bool on_cpu() const { return report.chosen == kCpuReference; }
};

Moe::Moe(const MoeSpec& spec, const MoeWeights& weights, const MoeOptions& opt) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  validate_weights(spec, weights);
  FP4MOE_CHECK_ARG(opt.max_tokens >= 1, "max_tokens", ">= 1", opt.max_tokens);
  FP4MOE_CHECK_ARG(opt.weights_on != Memory::Unknown, "weights_on", "host or device", "unknown");
  FP4MOE_CHECK_ARG(opt.data_on != Memory::Unknown, "data_on", "host or device", "unknown");
  m.spec = spec;
  m.opt = opt;

  Problem p;
  p.spec = spec;
  p.max_tokens = opt.max_tokens;
  p.ids_dtype = opt.ids_dtype;
  p.weights_dtype = opt.topk_weights_dtype;
  p.data = opt.data_on;
  p.weights = opt.weights_on;
  p.device = opt.device;
  m.report = select(p, DeviceDesc::probe(), Request{opt.backend, opt.crossover});
  m.crossover = m.report.crossover.tokens;
  const std::string& b = m.report.chosen;

  if (b == kCpuReference) {
    m.host = copy_host_layer(spec, weights);
    return;
  }
#if defined(FP4MOE_HAVE_DECODE)
  const auto where = opt.weights_on == Memory::Device ? cuda::WeightsOn::Device : cuda::WeightsOn::Host;
  // A kernel that refuses what its can_implement accepted is a bug in the checks: say so.
  auto build = [&](const char* which, auto&& make) {
    try {
      return make();
    } catch (const Error& e) {
      throw Error(std::string(which) + " was selected but refused the layer (its can_implement is out of date): " +
                  e.what());
    }
  };
  if (b == kCudaDecode || b == kHybrid) {
    const int64_t mt = b == kHybrid ? std::min<int64_t>(m.crossover - 1, opt.max_tokens) : opt.max_tokens;
    if (mt >= 1)
      m.decode = build(kCudaDecode, [&] { return cuda::make_decode_kernel(spec, weights, where, mt, opt.device); });
  }
#if defined(FP4MOE_HAVE_PREFILL)
  if (b == kCudaPrefill || (b == kHybrid && opt.max_tokens >= m.crossover))
    m.prefill = build(kCudaPrefill,
                      [&] { return cuda::make_prefill_kernel(spec, weights, where, opt.max_tokens, opt.device); });
#endif
  if (!m.decode && !m.prefill)
    throw Error("backend \"" + b + "\" was selected but this build cannot construct it (internal error)");
  // The routing buffers of forward_from_logits, on the layer's device.
  int prev = 0;
  cuda_check(cudaGetDevice(&prev), "cudaGetDevice");
  cuda_check(cudaSetDevice(opt.device), "cudaSetDevice");
  const size_t n = static_cast<size_t>(opt.max_tokens * spec.topk) * 4;
  cudaError_t e1 = cudaMalloc(&m.d_ids, n);
  cudaError_t e2 = e1 == cudaSuccess ? cudaMalloc(&m.d_wts, n) : e1;
  cudaSetDevice(prev);
  cuda_check(e2, "cudaMalloc (routing buffers)");
  return;
#else
  throw Error("backend \"" + b + "\" was selected but this build has no CUDA kernels (internal error)");
#endif
}

Moe::~Moe() = default;
Moe::Moe(Moe&&) noexcept = default;
Moe& Moe::operator=(Moe&&) noexcept = default;

const std::string& Moe::backend() const { return impl_->report.chosen; }
const SelectionReport& Moe::report() const { return impl_->report; }
const MoeSpec& Moe::spec() const { return impl_->spec; }
int64_t Moe::max_tokens() const { return impl_->opt.max_tokens; }

size_t Moe::weight_bytes() const {
  const Impl& m = *impl_;
  if (m.on_cpu())
    return m.host.w13.size() + m.host.w13_scale.size() + m.host.w2.size() + m.host.w2_scale.size() +
           4 * (m.host.w13_scale_2.size() + m.host.w2_scale_2.size() + m.host.a13_scale.size() +
                m.host.a2_scale.size());
  return (m.decode ? m.decode->weight_bytes() : 0) + (m.prefill ? m.prefill->weight_bytes() : 0);
}

size_t Moe::workspace_bytes() const {
  const Impl& m = *impl_;
  size_t b = (m.decode ? m.decode->workspace_bytes() : 0) + (m.prefill ? m.prefill->workspace_bytes() : 0);
  if (m.d_ids) b += static_cast<size_t>(m.opt.max_tokens * m.spec.topk) * 8;
  return b;
}

void Moe::forward(const TensorView& x, const TensorView& ids, const TensorView& wts, const MutableTensorView& out,
                  void* stream) {
  Impl& m = *impl_;
  const int64_t T = validate_inputs(m.spec, x, ids, wts);
  check_tensor(out.view(), "out", DType::BF16, {T, m.spec.hidden});
  FP4MOE_CHECK_ARG(T <= m.opt.max_tokens, "x", detail::concat("at most max_tokens = ", m.opt.max_tokens, " rows"),
                   detail::concat(T, " rows"));
  if (T == 0) return;
  if (m.on_cpu()) {
    const auto y = reference_moe(m.spec, m.host.view(), x, ids, wts);
    std::memcpy(out.data, y.data(), y.size() * sizeof(uint16_t));
    return;
  }
  FP4MOE_CHECK_ARG(ids.dtype == DType::I32, "topk_ids", "dtype int32 (the CUDA backends take int32 ids)",
                   std::string("dtype ") + dtype_name(ids.dtype));
  FP4MOE_CHECK_ARG(wts.dtype == DType::F32, "topk_weights", "dtype float32 (the CUDA backends take float32 weights)",
                   std::string("dtype ") + dtype_name(wts.dtype));
  cuda::MoeKernel* k = (m.decode && (T < m.crossover || !m.prefill)) ? m.decode.get() : m.prefill.get();
  if (!k || T > k->max_tokens())
    throw Error(detail::concat("x: ", T, " tokens exceed what backend ", m.report.chosen, " was prepared for"));
  k->forward(x.data, ids.as<int32_t>(), wts.as<float>(), T, out.data, stream);
}

void Moe::forward_from_logits(const TensorView& x, const TensorView& logits, const RoutingSpec& routing,
                              const MutableTensorView& out, void* stream) {
  Impl& m = *impl_;
  check_tensor(x, "x", DType::BF16, {-1, m.spec.hidden});
  const int64_t T = x.shape[0], E = m.spec.experts, k = m.spec.topk;
  check_tensor(logits, "router_logits", {DType::F32, DType::BF16}, {T, E});
  FP4MOE_CHECK_ARG(T <= m.opt.max_tokens, "x", detail::concat("at most max_tokens = ", m.opt.max_tokens, " rows"),
                   detail::concat(T, " rows"));
  if (T == 0) return;
  if (m.on_cpu()) {
    const Routing r = route(logits, k, routing);
    forward(x, TensorView(r.ids.data(), DType::I32, {T, k}), TensorView(r.weights.data(), DType::F32, {T, k}), out,
            stream);
    return;
  }
#if defined(FP4MOE_HAVE_DECODE)
  auto s = static_cast<cudaStream_t>(stream);
  std::vector<uint8_t> host(static_cast<size_t>(logits.numel()) * dtype_size(logits.dtype));
  cuda_check(cudaMemcpyAsync(host.data(), logits.data, host.size(), cudaMemcpyDeviceToHost, s), "router_logits copy");
  cuda_check(cudaStreamSynchronize(s), "router_logits copy");
  const Routing r = route(TensorView(host.data(), logits.dtype, {T, E}), k, routing);
  cuda_check(cudaMemcpyAsync(m.d_ids, r.ids.data(), r.ids.size() * 4, cudaMemcpyHostToDevice, s), "topk_ids copy");
  cuda_check(cudaMemcpyAsync(m.d_wts, r.weights.data(), r.weights.size() * 4, cudaMemcpyHostToDevice, s),
             "topk_weights copy");
  forward(x, TensorView(m.d_ids, DType::I32, {T, k}), TensorView(m.d_wts, DType::F32, {T, k}), out, stream);
  // The host vectors die here: wait until the copies have read them.
  cuda_check(cudaStreamSynchronize(s), "routing copy");
#else
  (void)stream;
  throw Error("forward_from_logits: backend " + m.report.chosen + " needs CUDA, which this build lacks");
#endif
}

void Moe::forward_host(const TensorView& x, const TensorView& ids, const TensorView& wts,
                       const MutableTensorView& out) {
  Impl& m = *impl_;
  if (m.on_cpu()) return forward(x, ids, wts, out);
  const int64_t T = validate_inputs(m.spec, x, ids, wts);
  check_tensor(out.view(), "out", DType::BF16, {T, m.spec.hidden});
  if (T == 0) return;
  validate_routing_values(m.spec, ids, wts);
#if defined(FP4MOE_HAVE_DECODE)
  const int64_t P = T * m.spec.topk, H = m.spec.hidden;
  std::vector<int32_t> id32(static_cast<size_t>(P));
  std::vector<float> w32(static_cast<size_t>(P));
  for (int64_t i = 0; i < P; ++i) {
    id32[static_cast<size_t>(i)] =
        ids.dtype == DType::I32 ? ids.as<int32_t>()[i] : static_cast<int32_t>(ids.as<int64_t>()[i]);
    w32[static_cast<size_t>(i)] = wts.dtype == DType::F32 ? wts.as<float>()[i] : bf16_to_float(wts.as<uint16_t>()[i]);
  }
  int prev = 0;
  cuda_check(cudaGetDevice(&prev), "cudaGetDevice");
  cuda_check(cudaSetDevice(m.opt.device), "cudaSetDevice");
  void *dx = nullptr, *di = nullptr, *dw = nullptr, *dout = nullptr;
  auto release = [&] {
    for (void* ptr : {dx, di, dw, dout})
      if (ptr) cudaFree(ptr);
    cudaSetDevice(prev);
  };
  try {
    const size_t xb = static_cast<size_t>(T * H) * 2;
    cuda_check(cudaMalloc(&dx, xb), "cudaMalloc x");
    cuda_check(cudaMalloc(&dout, xb), "cudaMalloc out");
    cuda_check(cudaMalloc(&di, static_cast<size_t>(P) * 4), "cudaMalloc topk_ids");
    cuda_check(cudaMalloc(&dw, static_cast<size_t>(P) * 4), "cudaMalloc topk_weights");
    cuda_check(cudaMemcpy(dx, x.data, xb, cudaMemcpyHostToDevice), "copy x");
    cuda_check(cudaMemcpy(di, id32.data(), id32.size() * 4, cudaMemcpyHostToDevice), "copy topk_ids");
    cuda_check(cudaMemcpy(dw, w32.data(), w32.size() * 4, cudaMemcpyHostToDevice), "copy topk_weights");
    forward(TensorView(dx, DType::BF16, {T, H}), TensorView(di, DType::I32, {T, m.spec.topk}),
            TensorView(dw, DType::F32, {T, m.spec.topk}), MutableTensorView(dout, DType::BF16, {T, H}), nullptr);
    cuda_check(cudaDeviceSynchronize(), "forward");
    cuda_check(cudaMemcpy(out.data, dout, xb, cudaMemcpyDeviceToHost), "copy out");
  } catch (...) {
    release();
    throw;
  }
  release();
#else
  throw Error("forward_host: backend " + m.report.chosen + " needs CUDA, which this build lacks");
#endif
}

int64_t Moe::take_invalid_id_count() {
  Impl& m = *impl_;
  int64_t n = 0;
  if (m.decode) n += m.decode->take_invalid_id_count();
  if (m.prefill) n += m.prefill->take_invalid_id_count();
  return n;
}

}  // namespace fp4moe
