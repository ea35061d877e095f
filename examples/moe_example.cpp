// fp4moe example: build a small NVFP4 MoE layer, let fp4moe pick the backend, run a batch, and
// check the result against the CPU reference. Exits non-zero on a mismatch.
#include <cstdio>
#include <vector>

#include <fp4moe/api.hpp>
#include <fp4moe/reference.hpp>
#include <fp4moe/synthetic.hpp>

int main() {
  fp4moe::MoeSpec spec;
  spec.hidden = 256;
  spec.inter = 128;
  spec.experts = 8;
  spec.topk = 2;  // SwiGLU, W4A16, gate/up order "gate_up" by default

  // A random layer in the on-disk (ModelOpt) layout; real code loads these from a checkpoint.
  const fp4moe::NvFp4Layer layer = fp4moe::random_nvfp4_layer(spec, /*seed=*/42);

  const int64_t T = 5;
  const auto x = fp4moe::random_hidden_states(T, spec.hidden, 1);
  const fp4moe::Routing r = fp4moe::random_routing(T, spec.experts, spec.topk, 2);
  const fp4moe::TensorView xv(x.data(), fp4moe::DType::BF16, {T, spec.hidden});
  const fp4moe::TensorView ids(r.ids.data(), fp4moe::DType::I32, {T, spec.topk});
  const fp4moe::TensorView wts(r.weights.data(), fp4moe::DType::F32, {T, spec.topk});

  fp4moe::MoeOptions opt;
  opt.max_tokens = 64;
  opt.data_on = fp4moe::Memory::Host;  // this example keeps x and out on the host
  try {
    fp4moe::Moe moe(spec, layer.view(), opt);
    std::printf("backend: %s\n%s", moe.backend().c_str(), moe.report().str().c_str());

    std::vector<uint16_t> out(static_cast<size_t>(T * spec.hidden));
    moe.forward(xv, ids, wts, fp4moe::MutableTensorView(out.data(), fp4moe::DType::BF16, {T, spec.hidden}));

    const auto ref = fp4moe::reference_moe(spec, layer.view(), xv, ids, wts);
    if (ref != out) {
      std::fprintf(stderr, "moe_example: output differs from the CPU reference\n");
      return 1;
    }
    std::printf("moe_example: %lld tokens, output matches the CPU reference\n", static_cast<long long>(T));
  } catch (const fp4moe::Error& e) {
    std::fprintf(stderr, "moe_example: %s\n", e.what());
    return 1;
  }
  return 0;
}
