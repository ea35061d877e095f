// fp4moe internal: CUDA error checking and small device helpers shared by the kernels.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/backend_api.hpp"
#include "fp4moe/error.hpp"

namespace fp4moe::cuda {

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
  throw Error(std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) +
              "): " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

}  // namespace fp4moe::cuda

#define FP4MOE_CUDA_CHECK(call)                                                        \
  do {                                                                                 \
    cudaError_t e_ = (call);                                                           \
    if (e_ != cudaSuccess) ::fp4moe::cuda::throw_cuda(e_, #call, __FILE__, __LINE__); \
  } while (0)

namespace fp4moe::cuda {

// A per-expert fp32 scale tensor ([E], or [] broadcast to all experts) read to the host from
// wherever the weights live; empty when the tensor is absent (validate_weights checked shapes).
inline std::vector<float> per_expert_scales(const TensorView& t, WeightsOn where, int64_t E) {
  std::vector<float> v;
  if (t.data == nullptr) return v;
  const size_t n = t.shape.empty() ? 1 : static_cast<size_t>(t.shape[0]);
  v.resize(n);
  if (where == WeightsOn::Host) std::memcpy(v.data(), t.data, n * sizeof(float));
  else FP4MOE_CUDA_CHECK(cudaMemcpy(v.data(), t.data, n * sizeof(float), cudaMemcpyDeviceToHost));
  if (n == 1 && E > 1) v.assign(static_cast<size_t>(E), v[0]);
  return v;
}

}  // namespace fp4moe::cuda
