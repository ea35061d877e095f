// fp4moe internal: CUDA error checking and small device helpers shared by the kernels.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
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

#if defined(__CUDACC__)
// Programmatic dependent launch (sm_90 and later; no-ops elsewhere). A kernel launched by
// launch_chained may begin while the kernel before it in the stream is still running:
// pdl_wait() blocks until that kernel has completed and its writes are visible, so it comes
// before anything that touches what earlier kernels wrote or read. pdl_launch_dependents()
// lets the next kernel begin launching (it still waits in its own pdl_wait()).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
#endif

// Launches kern<<<grid, block, smem, st>>>(args...), as a programmatic dependent launch when
// `chained` (the caller checked that the device is sm_90 or later): its launch overlaps the
// end of the previous kernel in the stream, which the kernel waits for with pdl_wait().
template <typename... KArgs, typename... Args>
void launch_chained(bool chained, void (*kern)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                    Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = chained ? 1 : 0;
  FP4MOE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kern, std::forward<Args>(args)...));
}

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
