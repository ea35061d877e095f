// fp4moe info: version, build options, GPUs and which backends can run here.
#include <cstdio>

#include "cli.hpp"
#include "fp4moe/device.hpp"

namespace fp4moe::cli {

int cmd_info(const std::vector<std::string>& argv) {
  Args a(argv, {});
  (void)a;
  const DeviceInfo& d = probe_devices();
  std::printf("fp4moe %s\n", FP4MOE_VERSION);
  std::printf("build       CUDA backends: %s\n", d.built_with_cuda ? "compiled (sm_80, sm_90a)" : "not compiled");
  std::printf("gpus        %s\n", d.has_gpu() ? "" : d.cuda_status.c_str());
  for (const auto& g : d.gpus)
    std::printf("  [%d] %s, sm_%d%d, %d SMs, %.1f GiB, L2 %.0f MiB\n", g.index, g.name.c_str(), g.cc_major, g.cc_minor,
                g.sms, g.memory_bytes / 1073741824.0, g.l2_bytes / 1048576.0);
  std::printf("backends\n  cpu-reference  yes: runs everywhere (the definition of the semantics)\n");
  return 0;
}

}  // namespace fp4moe::cli
