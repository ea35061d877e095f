// fp4moe - the command-line program.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli.hpp"

namespace {
void usage() {
  std::printf(
      "fp4moe %s - NVFP4 Mixture-of-Experts layers\n\n"
      "usage: fp4moe <command> [options]\n"
      "  run    run one MoE layer (default: qwen3-30b-a3b, 16 tokens) and report accuracy and time\n"
      "         --preset NAME --tokens N --mode w4a16|w4a4|both --seed S --json FILE\n"
      "  run --checkpoint PATH --layer N   one MoE layer of a safetensors checkpoint (router included)\n"
      "         [--tokens N | --hidden-states FILE] --mode M --seed S --json FILE\n"
      "  inspect PATH [--tensors]   architecture, MoE layers, experts, shapes, quantization\n"
      "  quantize --input PATH --output DIR (--calib FILE | --no-input-scale) [--exclude PATTERNS]\n"
      "         bf16/f16/f32 safetensors -> ModelOpt-format NVFP4 checkpoint\n"
      "         --backend auto|cpu-reference|cuda-decode|cuda-prefill|hybrid\n"
      "  info   version, build options, GPUs and backends; with --preset NAME --tokens N the\n"
      "         selection report [--mode M --backend B --data host|device --crossover C]\n"
      "  tune   measure the hybrid crossover on this GPU and store it in the tune file\n"
      "         --preset NAME --mode w4a16|w4a4 --iters N --out FILE --device D\n",
      FP4MOE_VERSION);
}
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    usage();
    return args.empty() ? 2 : 0;
  }
  const std::string cmd = args[0];
  args.erase(args.begin());
  try {
    if (cmd == "run" && std::find(args.begin(), args.end(), "--checkpoint") != args.end())
      return fp4moe::cli::cmd_run_checkpoint(args);
    if (cmd == "inspect") return fp4moe::cli::cmd_inspect(args);
    if (cmd == "quantize") return fp4moe::cli::cmd_quantize(args);
    if (cmd == "run") return fp4moe::cli::cmd_run(args);
    if (cmd == "info") return fp4moe::cli::cmd_info(args);
    if (cmd == "tune") return fp4moe::cli::cmd_tune(args);
    std::fprintf(stderr, "fp4moe: command: expected run, info or tune, got \"%s\"\n", cmd.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fp4moe %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
