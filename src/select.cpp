// Backend selection: the capability checks of every backend, select(), and the report.
#include "fp4moe/select.hpp"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "cuda/backend_api.hpp"  // kDecodeMaxTokens, decode_smem_bytes(): no CUDA headers
#include "log.hpp"

namespace fp4moe {

const char* to_string(Memory m) {
  switch (m) {
    case Memory::Unknown: return "unknown";
    case Memory::Host: return "host";
    case Memory::Device: return "device";
  }
  return "?";
}

const char* to_string(Verdict v) {
  switch (v) {
    case Verdict::Yes: return "yes";
    case Verdict::No: return "no";
    case Verdict::Unknown: return "unknown";
  }
  return "?";
}

DeviceDesc DeviceDesc::probe() {
  const DeviceInfo& info = probe_devices();
  DeviceDesc d;
  d.cuda_built = info.built_with_cuda;
#ifdef FP4MOE_HAVE_DECODE
  d.decode_built = true;
#endif
#ifdef FP4MOE_HAVE_PREFILL
  d.prefill_built = true;
#endif
  d.gpus_known = true;
  d.status = info.cuda_status;
  d.gpus = info.gpus;
  return d;
}

size_t layer_weight_bytes(const MoeSpec& s) {
  const int64_t E = s.experts, H = s.hidden, I = s.inter, N1 = s.n1();
  const int64_t per_expert = N1 * H / 2 + N1 * H / 16 + H * I / 2 + H * I / 16 + 2 * 4;
  return static_cast<size_t>(E * per_expert);
}

static_assert(kMaxCrossover == cuda::kDecodeMaxTokens + 1, "the crossover bound follows the decode kernel's limit");

namespace {

constexpr int64_t cuda_decode_max_tokens() { return cuda::kDecodeMaxTokens; }

std::string gib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(bytes) / 1073741824.0);
  return buf;
}

// Accumulates the checks of one backend: any No makes the verdict No (all No reasons are
// kept); Unknown abstains.
class Checks {
 public:
  void no(const std::string& why) { no_.push_back(why); }
  void unknown(const std::string& why) { unknown_.push_back(why); }
  bool rejected() const { return !no_.empty(); }
  CanImplement done(const std::string& yes_reason) const {
    if (!no_.empty()) return {Verdict::No, join(no_)};
    if (!unknown_.empty()) return {Verdict::Unknown, "not known: " + join(unknown_) + " (otherwise: " + yes_reason + ")"};
    return {Verdict::Yes, yes_reason};
  }

 private:
  static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : "; ") + x;
    return s;
  }
  std::vector<std::string> no_, unknown_;
};

// Checks every backend shares: a valid spec, the dtypes, the parallel layout.
void common_checks(const Problem& p, Checks& c) {
  try {
    p.spec.validate();
  } catch (const Error& e) {
    c.no(std::string("invalid spec: ") + e.what());
  }
  if (p.x_dtype != DType::BF16)
    c.no(std::string("x/out must be bfloat16, got ") + dtype_name(p.x_dtype));
  if (p.ids_dtype != DType::I32 && p.ids_dtype != DType::I64)
    c.no(std::string("topk_ids must be int32 or int64, got ") + dtype_name(p.ids_dtype));
  if (p.weights_dtype != DType::F32 && p.weights_dtype != DType::BF16)
    c.no(std::string("topk_weights must be float32 or bfloat16, got ") + dtype_name(p.weights_dtype));
  if (p.max_tokens < 0) c.no(detail::concat("max_tokens must be >= 0, got ", p.max_tokens));
  if (p.ep_size != 1)
    c.no(detail::concat("expert parallelism (ep_size = ", p.ep_size,
                        ") is not implemented: give each rank a layer of its local experts"));
  if (p.tp_size != 1)
    c.no(detail::concat("tensor parallelism (tp_size = ", p.tp_size,
                        ") is not implemented: give each rank a layer of its I-slice"));
}

// This build compiles sm_80 and sm_90a code only, with no PTX to JIT: a cubin runs on GPUs of
// its own major version with a minor >= its own, and sm_90a runs on 9.0 alone.
bool arch_in_build(int major, int minor) { return major == 8 || (major == 9 && minor == 0); }

// The GPU checks of one CUDA kernel family. `copies` prepared copies of the weights must fit.
void cuda_checks(const Problem& p, const DeviceDesc& d, bool kernel_built, const char* kernel, int copies,
                 Checks& c) {
  if (p.data == Memory::Host) c.no("the CUDA kernels read device memory; x/topk_ids/topk_weights/out are on the host");
  if (p.data == Memory::Unknown) c.unknown("where x/topk_ids/topk_weights/out live");
  if (p.ids_dtype == DType::I64) c.no("the CUDA kernels take int32 topk_ids (convert int64 ids before the call)");
  if (p.weights_dtype == DType::BF16) c.no("the CUDA kernels take float32 topk_weights (convert bf16 weights before the call)");
  if (!d.cuda_built) {
    c.no("this build has no CUDA support (" + (d.status.empty() ? std::string("no nvcc at configure time") : d.status) +
         ")");
    return;  // the GPU facts below would only repeat it
  }
  if (!kernel_built) c.no(std::string("the ") + kernel + " kernel is not compiled into this build");
  if (!d.gpus_known) {
    c.unknown("the GPUs (not probed)");
    return;
  }
  if (d.gpus.empty()) {
    c.no("no GPU: " + (d.status.empty() ? std::string("none found") : d.status));
    return;
  }
  if (p.device < 0 || p.device >= static_cast<int>(d.gpus.size())) {
    c.no(detail::concat("device ", p.device, " does not exist (", d.gpus.size(), " GPU(s))"));
    return;
  }
  const GpuInfo& g = d.gpus[static_cast<size_t>(p.device)];
  if (g.cc_major == 0) {
    c.unknown("the compute capability of GPU " + std::to_string(p.device));
  } else if (g.cc_major < 8) {
    c.no(detail::concat("needs compute capability >= 8.0 (bf16 mma.sync), GPU ", p.device, " (", g.name, ") is ",
                        g.cc_major, ".", g.cc_minor));
  } else if (!arch_in_build(g.cc_major, g.cc_minor)) {
    c.no(detail::concat("this build holds sm_80 and sm_90a code only, GPU ", p.device, " (", g.name, ") is sm_",
                        g.cc_major, g.cc_minor));
  }
  if (p.spec.hidden > 0 && p.spec.inter > 0 && p.spec.experts > 0) {
    const size_t need = layer_weight_bytes(p.spec) * static_cast<size_t>(copies);
    if (g.memory_bytes == 0) {
      c.unknown("the memory of GPU " + std::to_string(p.device));
    } else if (need > g.memory_bytes / 10 * 9) {
      c.no(detail::concat(copies == 1 ? "the prepared weights (" : "two prepared copies of the weights (", gib(need),
                          ") exceed 90% of GPU ", p.device, "'s ", gib(g.memory_bytes)));
    }
  }
}

// The limits the kernels' constructors enforce (src/cuda/decode.cu, prefill.cu), stated here
// so that selection never picks a kernel that then refuses the layer.
void decode_limits(const Problem& p, const DeviceDesc& d, int64_t tokens, Checks& c) {
  if (p.spec.topk > 32) c.no(detail::concat("the decode kernel takes top-k <= 32, got ", p.spec.topk));
  if (p.spec.experts > 32767) c.no(detail::concat("the decode kernel takes E <= 32767, got ", p.spec.experts));
  // Its routing table lives in shared memory (the backend's decode_smem_bytes()), beside the
  // kernel's static shared memory (at most kDecodeStaticSmemBound), which the constructor also
  // counts.
  const int64_t P = std::max<int64_t>(tokens, 1) * p.spec.topk, E = p.spec.experts;
  const int64_t smem =
      static_cast<int64_t>(cuda::decode_smem_bytes(static_cast<int>(std::min<int64_t>(P, INT32_MAX)),
                                                   static_cast<int>(std::min<int64_t>(E, INT32_MAX))) +
                           cuda::kDecodeStaticSmemBound);
  if (d.gpus_known && p.device >= 0 && p.device < static_cast<int>(d.gpus.size())) {
    const size_t limit = d.gpus[static_cast<size_t>(p.device)].smem_per_block_optin;
    if (limit == 0)
      c.unknown("the shared memory per block of GPU " + std::to_string(p.device));
    else if (static_cast<size_t>(smem) > limit)
      c.no(detail::concat("the decode kernel's routing table for ", P, " pairs and ", E, " experts needs ", smem,
                          " bytes of shared memory, GPU ", p.device, " has ", limit));
  }
}

void prefill_limits(const Problem& p, Checks& c) {
  if (p.spec.experts > 512) c.no(detail::concat("the prefill kernel takes E <= 512, got ", p.spec.experts));
  if (p.max_tokens * p.spec.topk >= (int64_t{1} << 30))
    c.no(detail::concat("the prefill kernel takes max_tokens * top-k < 2^30, got ", p.max_tokens * p.spec.topk));
}

CanImplement check_cpu(const Problem& p, const DeviceDesc&) {
  Checks c;
  common_checks(p, c);
  if (p.data == Memory::Device) c.no("the CPU reference reads host memory; x/topk_ids/topk_weights/out are on the GPU");
  if (p.data == Memory::Unknown) c.unknown("where x/topk_ids/topk_weights/out live");
  if (p.weights == Memory::Device) c.no("the CPU reference reads host memory; the weights are on the GPU");
  return c.done("runs on host memory anywhere; the definition of the semantics, slow");
}

CanImplement check_decode(const Problem& p, const DeviceDesc& d) {
  Checks c;
  common_checks(p, c);
  cuda_checks(p, d, d.decode_built, "fused decode", 1, c);
  if (p.max_tokens > cuda_decode_max_tokens())
    c.no(detail::concat("max_tokens = ", p.max_tokens, " exceeds the fused decode kernel's limit of ",
                        cuda_decode_max_tokens(), " tokens"));
  if (p.max_tokens == 0) c.unknown("the token count bound (max_tokens)");
  decode_limits(p, d, std::min<int64_t>(p.max_tokens, cuda_decode_max_tokens()), c);
  return c.done(detail::concat("fused single-launch kernel for 1..", cuda_decode_max_tokens(), " tokens"));
}

CanImplement check_prefill(const Problem& p, const DeviceDesc& d) {
  Checks c;
  common_checks(p, c);
  cuda_checks(p, d, d.prefill_built, "grouped-GEMM prefill", 1, c);
  prefill_limits(p, c);
  return c.done("grouped GEMMs, any token count");
}

CanImplement check_hybrid(const Problem& p, const DeviceDesc& d, int64_t crossover) {
  Checks c;
  common_checks(p, c);
  if (crossover < 1 || crossover > kMaxCrossover)
    c.no(detail::concat("crossover = ", crossover, " is outside 1..", kMaxCrossover,
                        " (the decode kernel takes at most ", kMaxCrossover - 1, " tokens)"));
  if (!d.decode_built && d.cuda_built) c.no("needs cuda-decode: the fused decode kernel is not compiled into this build");
  if (!d.prefill_built && d.cuda_built)
    c.no("needs cuda-prefill: the grouped-GEMM prefill kernel is not compiled into this build");
  cuda_checks(p, d, true, "", 2, c);
  decode_limits(p, d, std::min<int64_t>(p.max_tokens > 0 ? p.max_tokens : kMaxCrossover, crossover) - 1, c);
  prefill_limits(p, c);
  if (p.max_tokens == 0) c.unknown("the token count bound (max_tokens)");
  std::string yes = detail::concat("cuda-decode below ", crossover, " tokens, cuda-prefill at or above; two prepared "
                                   "copies of the weights (2 x ", gib(layer_weight_bytes(p.spec)), ")");
  if (p.max_tokens > 0 && p.max_tokens < crossover) yes += "; every call fits below the crossover (decode only)";
  return c.done(yes);
}

struct Entry {
  std::string name, summary;
};
const std::vector<Entry>& registry() {
  static const std::vector<Entry> r = {
      {kCpuReference, "the CPU reference: host memory, any shape, slow; defines the semantics"},
      {kCudaDecode, "CUDA fused decode: one launch, 1..64 tokens"},
      {kCudaPrefill, "CUDA grouped-GEMM prefill: large batches"},
      {kHybrid, "cuda-decode below the crossover token count, cuda-prefill at or above"},
  };
  return r;
}

std::string valid_names() {
  std::string s = "auto";
  for (const auto& e : registry()) s += ", " + e.name;
  return s;
}

[[noreturn]] void unknown_backend(const std::string& name) {
  throw_arg_error("backend", "one of " + valid_names(), "\"" + name + "\"");
}

}  // namespace

const std::vector<std::string>& backend_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& e : registry()) v.push_back(e.name);
    return v;
  }();
  return names;
}

const std::string& backend_summary(const std::string& backend) {
  for (const auto& e : registry())
    if (e.name == backend) return e.summary;
  unknown_backend(backend);
}

CanImplement can_implement(const std::string& backend, const Problem& p, const DeviceDesc& d, int64_t crossover) {
  if (backend == kCpuReference) return check_cpu(p, d);
  if (backend == kCudaDecode) return check_decode(p, d);
  if (backend == kCudaPrefill) return check_prefill(p, d);
  if (backend == kHybrid) return check_hybrid(p, d, crossover);
  unknown_backend(backend);
}

const Candidate& SelectionReport::chosen_candidate() const {
  for (const auto& c : candidates)
    if (c.backend == chosen) return c;
  throw Error("selection report: the chosen backend \"" + chosen + "\" is not among the candidates");
}

std::string SelectionReport::str() const {
  std::ostringstream os;
  os << "requested " << requested << "\n";
  os << "chosen    " << (chosen.empty() ? "(none)" : chosen);
  if (!chosen.empty()) {
    os << " - " << chosen_candidate().verdict.reason << "\n";
    os << "weights   " << prepared_copies << " prepared cop" << (prepared_copies == 1 ? "y" : "ies") << ", "
       << gib(prepared_weight_bytes) << "\n";
  } else {
    os << "\n";
  }
  os << "crossover " << crossover.tokens << " tokens (" << crossover.source << ")\n";
  os << "candidates\n";
  for (const auto& c : candidates) {
    char mark = c.backend == chosen ? '*' : ' ';
    os << "  " << mark << " " << c.backend << std::string(c.backend.size() < 14 ? 14 - c.backend.size() : 1, ' ')
       << to_string(c.verdict.verdict) << ": " << c.verdict.reason << "\n";
  }
  return os.str();
}

SelectionReport select(const Problem& p, const DeviceDesc& d, const Request& req) {
  SelectionReport r;
  r.requested = req.backend.empty() ? "auto" : req.backend;
  if (r.requested != "auto") (void)backend_summary(r.requested);  // throws for an unknown name
  const GpuInfo* gpu = (d.gpus_known && p.device >= 0 && p.device < static_cast<int>(d.gpus.size()))
                           ? &d.gpus[static_cast<size_t>(p.device)]
                           : nullptr;
  r.crossover = resolve_crossover(p.spec, gpu, req.crossover);

  std::vector<std::string> order;
  if (p.max_tokens > 0 && p.max_tokens < r.crossover.tokens)
    order = {kCudaDecode, kHybrid, kCudaPrefill, kCpuReference};
  else
    order = {kHybrid, kCudaPrefill, kCudaDecode, kCpuReference};
  for (const auto& name : order) r.candidates.push_back({name, can_implement(name, p, d, r.crossover.tokens)});

  auto finish = [&](const std::string& chosen) {
    r.chosen = chosen;
    r.prepared_copies = chosen == kHybrid ? 2 : 1;
    r.prepared_weight_bytes = layer_weight_bytes(p.spec) * static_cast<size_t>(r.prepared_copies);
  };

  if (r.requested != "auto") {
    const Candidate* c = nullptr;
    for (const auto& x : r.candidates)
      if (x.backend == r.requested) c = &x;
    if (c->verdict.verdict == Verdict::No) {
      std::string others;
      for (const auto& x : r.candidates)
        if (x.verdict.verdict != Verdict::No) others += (others.empty() ? "" : ", ") + x.backend;
      throw SelectionError("backend \"" + r.requested + "\" was requested but cannot run this problem: " +
                               c->verdict.reason + " (backends that could: " + (others.empty() ? "none" : others) + ")",
                           r);
    }
    finish(r.requested);
    if (c->verdict.verdict == Verdict::Unknown)
      detail::log(LogLevel::Warn, "backend " + r.requested + " requested and used without full information: " +
                                      c->verdict.reason);
    else
      detail::log(LogLevel::Info, "backend " + r.requested + " (requested): " + c->verdict.reason);
    return r;
  }

  for (Verdict want : {Verdict::Yes, Verdict::Unknown}) {
    for (const auto& c : r.candidates) {
      if (c.verdict.verdict != want) continue;
      finish(c.backend);
      if (want == Verdict::Unknown) {
        detail::log(LogLevel::Warn, "auto selection: no backend is certain to run this problem; using " + c.backend +
                                        ", whose checks abstained: " + c.verdict.reason);
      }
      detail::log(LogLevel::Info, "backend selection\n" + r.str());
      return r;
    }
  }
  std::string why;
  for (const auto& c : r.candidates) why += "\n  " + c.backend + ": " + c.verdict.reason;
  detail::log(LogLevel::Info, "backend selection failed\n" + r.str());
  throw SelectionError("no backend can run this problem:" + why, r);
}

}  // namespace fp4moe
