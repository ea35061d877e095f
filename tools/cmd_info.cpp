// fp4moe info: version, build options, GPUs, the backends, and - for a preset and a token
// count - the selection report (which backend would run it here, and why the others would not).
#include <cstdio>

#include "cli.hpp"
#include "fp4moe/device.hpp"
#include "fp4moe/presets.hpp"
#include "fp4moe/select.hpp"

namespace fp4moe::cli {

int cmd_info(const std::vector<std::string>& argv) {
  Args a(argv, {{"--preset", true},
                {"--tokens", true},
                {"--mode", true},
                {"--backend", true},
                {"--data", true},
                {"--crossover", true},
                {"--device", true}});
  const DeviceDesc d = DeviceDesc::probe();
  std::printf("fp4moe %s\n", FP4MOE_VERSION);
  std::printf("build       CUDA: %s; kernels: decode %s, prefill %s\n",
              d.cuda_built ? "compiled (sm_80, sm_90a)" : "not compiled", d.decode_built ? "yes" : "no",
              d.prefill_built ? "yes" : "no");
  std::printf("gpus        %s\n", d.gpus.empty() ? d.status.c_str() : "");
  for (const auto& g : d.gpus)
    std::printf("  [%d] %s, sm_%d%d, %d SMs, %.1f GiB, L2 %.0f MiB\n", g.index, g.name.c_str(), g.cc_major, g.cc_minor,
                g.sms, g.memory_bytes / 1073741824.0, g.l2_bytes / 1048576.0);
  std::printf("log level   %s (FP4MOE_LOG_LEVEL)\n", to_string(log_level()));
  std::printf("tune file   %s\n", tune_file_path().c_str());

  if (!a.has("--preset")) {
    std::printf("backends\n");
    for (const auto& b : backend_names()) std::printf("  %-14s %s\n", b.c_str(), backend_summary(b).c_str());
    std::printf("(fp4moe info --preset NAME --tokens N [--mode w4a16|w4a4] [--backend B] [--data host|device]\n"
                " [--crossover C] prints the selection report for that layer)\n");
    return 0;
  }

  const std::string preset = a.str("--preset", "");
  const Preset& p = find_preset(preset);
  Problem prob;
  prob.spec = p.spec(parse_mode(a.str("--mode", "w4a16")));
  prob.max_tokens = a.integer("--tokens", 1, 1, int64_t{1} << 30);
  prob.device = static_cast<int>(a.integer("--device", 0, 0, 1024));
  prob.weights = Memory::Host;
  // Default: the data lives where the fastest backend here would want it.
  const std::string data = a.str("--data", d.gpus.empty() ? "host" : "device");
  if (data == "host") prob.data = Memory::Host;
  else if (data == "device") prob.data = Memory::Device;
  else throw Error("--data: expected host or device, got \"" + data + "\"");
  Request req;
  req.backend = a.str("--backend", "auto");
  req.crossover = a.integer("--crossover", 0, 1, kMaxCrossover);

  std::printf("\nlayer       %s: H=%lld I=%lld E=%lld top-k=%lld, %s, %s; %lld token(s), data on the %s\n",
              p.name.c_str(), static_cast<long long>(prob.spec.hidden), static_cast<long long>(prob.spec.inter),
              static_cast<long long>(prob.spec.experts), static_cast<long long>(prob.spec.topk),
              to_string(prob.spec.activation), to_string(prob.spec.mode), static_cast<long long>(prob.max_tokens),
              to_string(prob.data));
  // The report is printed here; keep the library's info log from printing it twice.
  const LogLevel saved = log_level();
  if (saved == LogLevel::Info) set_log_level(LogLevel::Warn);
  try {
    const SelectionReport r = select(prob, d, req);
    set_log_level(saved);
    std::printf("selection\n%s", r.str().c_str());
    return 0;
  } catch (const SelectionError& e) {
    set_log_level(saved);
    std::printf("selection\n%s", e.report().str().c_str());
    std::fprintf(stderr, "fp4moe info: %s\n", e.what());
    return 1;
  }
}

}  // namespace fp4moe::cli
