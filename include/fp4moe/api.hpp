// fp4moe: the public C++ API - one prepared NVFP4 MoE layer.
//
//   fp4moe::MoeSpec spec{.hidden = 2048, .inter = 768, .experts = 128, .topk = 8};
//   fp4moe::Moe moe(spec, weights, {.backend = "auto", .max_tokens = 64, .data_on = fp4moe::Memory::Device});
//   moe.forward(x, topk_ids, topk_weights, out, stream);
//
// Construction validates the spec and the weights, selects the backend (fp4moe::select, see
// select.hpp; the report is kept in report()), prepares the weights once for it and sizes the
// workspace from max_tokens. Nothing is allocated afterwards.
//
// Where data lives: options.weights_on says where the MoeWeights pointers point (the CUDA
// backends copy them to the GPU either way; the CPU reference keeps its own host copy, so the
// caller may free the weights after construction). options.data_on says where forward()'s x,
// topk_ids, topk_weights and out live: Host for the CPU reference, Device for the CUDA
// backends (device pointers on options.device).
//
// Thread and stream safety: construction and destruction are thread-safe. One Moe object
// must not run forward() / forward_from_logits() on two threads or two streams at the same
// time - it owns one workspace; serialize the calls, or make one Moe per stream. Distinct
// Moe objects are independent. On the CUDA backends forward() is asynchronous on `stream`
// (a cudaStream_t passed as void*, nullptr = the legacy default stream), never synchronizes
// the host and may be captured in a CUDA graph; the caller keeps the tensors alive until the
// stream has finished with them. On the CPU reference forward() is synchronous and ignores
// the stream.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fp4moe/moe.hpp"
#include "fp4moe/routing.hpp"
#include "fp4moe/select.hpp"
#include "fp4moe/tensor.hpp"

namespace fp4moe {

// A writable view (the output).
struct MutableTensorView {
  void* data = nullptr;
  DType dtype = DType::BF16;
  std::vector<int64_t> shape;
  MutableTensorView() = default;
  MutableTensorView(void* d, DType t, std::vector<int64_t> s) : data(d), dtype(t), shape(std::move(s)) {}
  TensorView view() const { return TensorView(data, dtype, shape); }
};

struct MoeOptions {
  std::string backend = "auto";   // "auto" or a name from backend_names()
  int64_t max_tokens = 8192;      // tokens per call, at most; sizes the workspace
  int device = 0;                 // CUDA device index
  Memory weights_on = Memory::Host;
  Memory data_on = Memory::Host;  // where forward()'s tensors live
  DType ids_dtype = DType::I32;   // topk_ids dtype forward() will get (CUDA: int32 only)
  DType topk_weights_dtype = DType::F32;  // (CUDA: float32 only)
  int64_t crossover = 0;          // hybrid; 0 = FP4MOE_CROSSOVER, the tune file, the default
};

class Moe {
 public:
  // Throws fp4moe::Error (bad spec/weights/options, naming the argument) or
  // fp4moe::SelectionError (no backend, or the requested one cannot run).
  Moe(const MoeSpec& spec, const MoeWeights& weights, const MoeOptions& options = {});
  ~Moe();
  Moe(Moe&&) noexcept;
  Moe& operator=(Moe&&) noexcept;
  Moe(const Moe&) = delete;
  Moe& operator=(const Moe&) = delete;

  // x [T, H] bf16, topk_ids [T, k] int32 (int64 too on the CPU reference), topk_weights
  // [T, k] float32 (bf16 too on the CPU reference), out [T, H] bf16; 0 <= T <= max_tokens.
  // out[t] = sum_j topk_weights[t, j] * expert_{topk_ids[t, j]}(x[t]) - see reference.hpp.
  // CPU reference: an expert id outside [0, E) is an fp4moe::Error naming it. CUDA: such
  // pairs contribute nothing and are counted (take_invalid_id_count()).
  void forward(const TensorView& x, const TensorView& topk_ids, const TensorView& topk_weights,
               const MutableTensorView& out, void* stream = nullptr);
  // Routes router_logits [T, E] (float32 or bf16) with `routing` on the host, then forward().
  // On the CUDA backends the logits are copied to the host and the routing back, so this call
  // synchronizes `stream` and cannot be captured in a graph; route on the GPU and call
  // forward() for that.
  void forward_from_logits(const TensorView& x, const TensorView& router_logits, const RoutingSpec& routing,
                           const MutableTensorView& out, void* stream = nullptr);

  // For tools and tests: x, topk_ids, topk_weights and out on the HOST whatever the backend
  // (int32/int64 ids, float32/bf16 weights). A CUDA backend gets them through temporary device
  // buffers: this allocates and synchronizes - not for serving.
  void forward_host(const TensorView& x, const TensorView& topk_ids, const TensorView& topk_weights,
                    const MutableTensorView& out);

  const std::string& backend() const;        // the chosen backend's name
  const SelectionReport& report() const;     // why it was chosen, and every rejection
  const MoeSpec& spec() const;
  int64_t max_tokens() const;
  size_t weight_bytes() const;     // prepared weights (all copies; host bytes for the CPU reference)
  size_t workspace_bytes() const;  // per-call scratch held by the object
  // CUDA: the number of routed pairs with an out-of-range expert id since the last call
  // (synchronizes the device). CPU reference: always 0 (such ids throw).
  int64_t take_invalid_id_count();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fp4moe
