// fp4moe: what this build and this machine offer (probed once).
#pragma once
#include <string>
#include <vector>

namespace fp4moe {

struct GpuInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sms = 0;
  size_t memory_bytes = 0, l2_bytes = 0, smem_per_block_optin = 0;
};

struct DeviceInfo {
  bool built_with_cuda = false;
  std::string cuda_status;  // why there is no usable GPU, when there is none
  std::vector<GpuInfo> gpus;
  bool has_gpu() const { return !gpus.empty(); }
};

// Probes the CUDA runtime once (thread-safe); never throws.
const DeviceInfo& probe_devices();

}  // namespace fp4moe
