// fp4moe quantize: a bf16 (f16/f32) safetensors checkpoint -> ModelOpt-format NVFP4.
#include <cstdio>
#include <sstream>

#include "cli.hpp"
#include "fp4moe/checkpoint.hpp"

namespace fp4moe::cli {

int cmd_quantize(const std::vector<std::string>& argv) {
  Args a(argv, {{"--input", true}, {"--output", true}, {"--calib", true}, {"--no-input-scale", false}, {"--exclude", true}});
  if (!a.has("--input")) throw Error("--input: expected a checkpoint directory or .safetensors file, got none");
  if (!a.has("--output")) throw Error("--output: expected a directory to write, got none");
  ckpt::QuantizeOptions o;
  o.calib_path = a.str("--calib", "");
  o.no_input_scale = a.has("--no-input-scale");
  if (a.has("--exclude")) {
    o.exclude.clear();
    std::stringstream ss(a.str("--exclude", ""));
    for (std::string p; std::getline(ss, p, ',');)
      if (!p.empty()) o.exclude.push_back(p);
  }
  Progress prog("quantizing linears");
  o.progress = [&](int64_t d, int64_t t) { prog(d, t); };
  const auto rep = ckpt::quantize_checkpoint(a.str("--input", ""), a.str("--output", ""), o);
  std::printf("quantized   %lld linear(s) to NVFP4 (ModelOpt algorithm), %lld with input_scale; %lld tensor(s) copied\n",
              static_cast<long long>(rep.quantized), static_cast<long long>(rep.calibrated), static_cast<long long>(rep.copied));
  for (const auto& n : rep.notes) std::printf("note        %s\n", n.c_str());
  for (const auto& f : rep.files) std::printf("wrote       %s\n", f.c_str());
  return 0;
}

}  // namespace fp4moe::cli
