#include <mutex>

#include "fp4moe/device.hpp"

#ifdef FP4MOE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace fp4moe {

const DeviceInfo& probe_devices() {
  static DeviceInfo info;
  static std::once_flag once;
  std::call_once(once, [] {
#ifdef FP4MOE_WITH_CUDA
    info.built_with_cuda = true;
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      info.cuda_status = std::string("no usable GPU: ") + cudaGetErrorString(err);
      cudaGetLastError();
      return;
    }
    if (n == 0) info.cuda_status = "no usable GPU: the CUDA runtime found 0 devices";
    for (int i = 0; i < n; ++i) {
      cudaDeviceProp p{};
      if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
      GpuInfo g;
      g.index = i;
      g.name = p.name;
      g.cc_major = p.major;
      g.cc_minor = p.minor;
      g.sms = p.multiProcessorCount;
      g.memory_bytes = p.totalGlobalMem;
      g.l2_bytes = static_cast<size_t>(p.l2CacheSize);
      g.smem_per_block_optin = p.sharedMemPerBlockOptin;
      info.gpus.push_back(g);
    }
    if (!info.gpus.empty()) info.cuda_status = "ok";
#else
    info.built_with_cuda = false;
    info.cuda_status = "built without CUDA (no nvcc at configure time)";
#endif
  });
  return info;
}

}  // namespace fp4moe
