// The public C++ API on the CPU reference path (no GPU needed).
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <optional>

#include "fp4moe/api.hpp"
#include "fp4moe/bf16.hpp"
#include "fp4moe/reference.hpp"
#include "fp4moe/synthetic.hpp"

using namespace fp4moe;

namespace {

MoeSpec small_spec(Mode mode = Mode::W4A16, Activation act = Activation::SwiGLU) {
  MoeSpec s;
  s.hidden = 64;
  s.inter = 48;
  s.experts = 6;
  s.topk = 2;
  s.activation = act;
  s.mode = mode;
  return s;
}

struct Batch {
  int64_t T;
  std::vector<uint16_t> x;
  Routing r;
  std::vector<uint16_t> out;
  Batch(const MoeSpec& s, int64_t tokens, uint64_t seed)
      : T(tokens), x(random_hidden_states(tokens, s.hidden, seed)), r(random_routing(tokens, s.experts, s.topk, seed)),
        out(static_cast<size_t>(tokens * s.hidden), 0xFFFF) {}
  TensorView xv(const MoeSpec& s) const { return {x.data(), DType::BF16, {T, s.hidden}}; }
  TensorView ids(const MoeSpec& s) const { return {r.ids.data(), DType::I32, {T, s.topk}}; }
  TensorView wts(const MoeSpec& s) const { return {r.weights.data(), DType::F32, {T, s.topk}}; }
  MutableTensorView outv(const MoeSpec& s) { return {out.data(), DType::BF16, {T, s.hidden}}; }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

struct Api : ::testing::Test {
  void SetUp() override {
    set_log_level(LogLevel::Warn);
    unsetenv("FP4MOE_CROSSOVER");
  }
};

}  // namespace

TEST_F(Api, HostForwardMatchesTheReferenceBitForBit) {
  const MoeSpec s = small_spec();
  NvFp4Layer L = random_nvfp4_layer(s, 7);
  Moe moe(s, L.view(), {.backend = "auto", .max_tokens = 32});
  EXPECT_EQ(moe.backend(), kCpuReference);  // host data: the CUDA backends say no
  EXPECT_EQ(moe.report().chosen, kCpuReference);
  Batch b(s, 9, 3);
  moe.forward(b.xv(s), b.ids(s), b.wts(s), b.outv(s));
  const auto ref = reference_moe(s, L.view(), b.xv(s), b.ids(s), b.wts(s));
  ASSERT_EQ(ref.size(), b.out.size());
  EXPECT_EQ(ref, b.out);
  EXPECT_EQ(moe.weight_bytes(), layer_weight_bytes(s));
  EXPECT_EQ(moe.take_invalid_id_count(), 0);
}

TEST_F(Api, KeepsItsOwnCopyOfTheWeights) {
  const MoeSpec s = small_spec(Mode::W4A16, Activation::ReLU2);
  Batch b(s, 5, 11);
  std::vector<uint16_t> ref;
  std::optional<Moe> moe;
  {
    NvFp4Layer L = random_nvfp4_layer(s, 9);
    ref = reference_moe(s, L.view(), b.xv(s), b.ids(s), b.wts(s));
    moe.emplace(s, L.view(), MoeOptions{.max_tokens = 8});
    std::fill(L.w13.begin(), L.w13.end(), 0);  // the caller's buffers change, then die
  }
  moe->forward(b.xv(s), b.ids(s), b.wts(s), b.outv(s));
  EXPECT_EQ(ref, b.out);
}

TEST_F(Api, W4A4ScalarInputScalesAreBroadcast) {
  const MoeSpec s = small_spec(Mode::W4A4);
  NvFp4Layer L = random_nvfp4_layer(s, 5);
  set_input_scales(L, 4.0f, 2.0f);  // per-expert vectors, all equal
  const float a13 = L.a13_scale[0], a2 = L.a2_scale[0];
  Batch b(s, 6, 2);
  const auto ref = reference_moe(s, L.view(), b.xv(s), b.ids(s), b.wts(s));
  MoeWeights w = L.view();
  w.a13_scale = TensorView(&a13, DType::F32, {});
  w.a2_scale = TensorView(&a2, DType::F32, {});
  Moe moe(s, w, {.max_tokens = 6});
  moe.forward(b.xv(s), b.ids(s), b.wts(s), b.outv(s));
  EXPECT_EQ(ref, b.out);
}

TEST_F(Api, Int64IdsAndBf16WeightsOnTheCpuPath) {
  const MoeSpec s = small_spec();
  NvFp4Layer L = random_nvfp4_layer(s, 1);
  Batch b(s, 4, 8);
  std::vector<int64_t> ids64(b.r.ids.begin(), b.r.ids.end());
  std::vector<uint16_t> w16;
  std::vector<float> w16f;
  for (float v : b.r.weights) w16.push_back(float_to_bf16(v)), w16f.push_back(round_bf16(v));
  const auto ref = reference_moe(s, L.view(), b.xv(s), b.ids(s), TensorView(w16f.data(), DType::F32, {4, 2}));
  Moe moe(s, L.view(), {.max_tokens = 4, .ids_dtype = DType::I64, .topk_weights_dtype = DType::BF16});
  moe.forward(b.xv(s), TensorView(ids64.data(), DType::I64, {4, 2}), TensorView(w16.data(), DType::BF16, {4, 2}),
              b.outv(s));
  EXPECT_EQ(ref, b.out);
}

TEST_F(Api, ForwardFromLogitsRoutesThenRuns) {
  const MoeSpec s = small_spec();
  NvFp4Layer L = random_nvfp4_layer(s, 4);
  const int64_t T = 7;
  auto logits = random_logits(T, s.experts, 12);
  RoutingSpec rs;  // softmax -> top-k -> renormalize
  const TensorView lv(logits.data(), DType::F32, {T, s.experts});
  const Routing r = route(lv, s.topk, rs);
  Batch b(s, T, 5);
  const auto ref = reference_moe(s, L.view(), b.xv(s), TensorView(r.ids.data(), DType::I32, {T, 2}),
                                 TensorView(r.weights.data(), DType::F32, {T, 2}));
  Moe moe(s, L.view(), {.max_tokens = 16});
  moe.forward_from_logits(b.xv(s), lv, rs, b.outv(s));
  EXPECT_EQ(ref, b.out);
  // The logits' shape is checked against the layer.
  const std::string msg = error_of(
      [&] { moe.forward_from_logits(b.xv(s), TensorView(logits.data(), DType::F32, {T, 5}), rs, b.outv(s)); });
  EXPECT_TRUE(contains(msg, "router_logits")) << msg;
}

TEST_F(Api, EmptyBatchIsANoOp) {
  const MoeSpec s = small_spec();
  NvFp4Layer L = random_nvfp4_layer(s, 4);
  Moe moe(s, L.view(), {.max_tokens = 4});
  uint16_t dummy = 0;
  EXPECT_NO_THROW(moe.forward(TensorView(&dummy, DType::BF16, {0, s.hidden}), TensorView(&dummy, DType::I32, {0, 2}),
                              TensorView(&dummy, DType::F32, {0, 2}),
                              MutableTensorView(&dummy, DType::BF16, {0, s.hidden})));
}

TEST_F(Api, BadCallsNameTheArgument) {
  const MoeSpec s = small_spec();
  NvFp4Layer L = random_nvfp4_layer(s, 4);
  Moe moe(s, L.view(), {.max_tokens = 4});
  Batch b(s, 4, 1);
  std::string m = error_of([&] {
    moe.forward(TensorView(b.x.data(), DType::F32, {4, s.hidden}), b.ids(s), b.wts(s), b.outv(s));
  });
  EXPECT_TRUE(contains(m, "x: expected dtype bfloat16, got dtype float32")) << m;
  m = error_of([&] { moe.forward(b.xv(s), b.ids(s), b.wts(s), MutableTensorView(b.out.data(), DType::BF16, {4, 32})); });
  EXPECT_TRUE(contains(m, "out: expected shape [4, 64], got shape [4, 32]")) << m;
  m = error_of([&] { moe.forward(b.xv(s), TensorView(b.r.ids.data(), DType::I32, {4, 3}), b.wts(s), b.outv(s)); });
  EXPECT_TRUE(contains(m, "topk_ids: expected shape [4, 2]")) << m;
  Batch big(s, 5, 1);
  m = error_of([&] { moe.forward(big.xv(s), big.ids(s), big.wts(s), big.outv(s)); });
  EXPECT_TRUE(contains(m, "at most max_tokens = 4 rows, got 5 rows")) << m;
  b.r.ids[3] = 6;  // E = 6: out of range
  m = error_of([&] { moe.forward(b.xv(s), b.ids(s), b.wts(s), b.outv(s)); });
  EXPECT_TRUE(contains(m, "topk_ids[1, 1]: expected an expert id in [0, 6), got 6")) << m;
}

TEST_F(Api, BadConstructionNamesTheArgument) {
  const MoeSpec s = small_spec();
  NvFp4Layer L = random_nvfp4_layer(s, 4);
  std::string m = error_of([&] { Moe moe(s, L.view(), {.max_tokens = 0}); });
  EXPECT_TRUE(contains(m, "max_tokens: expected >= 1, got 0")) << m;
  MoeWeights w = L.view();
  w.w2.shape = {6, 64, 12};
  m = error_of([&] { Moe moe(s, w, {}); });
  EXPECT_TRUE(contains(m, "w2: expected shape [6, 64, 24], got shape [6, 64, 12]")) << m;
  m = error_of([&] { Moe moe(s, L.view(), {.backend = "triton"}); });
  EXPECT_TRUE(contains(m, "backend: expected one of auto, cpu-reference")) << m;
}

TEST_F(Api, ExplicitBackendThatCannotRunIsAnError) {
  const MoeSpec s = small_spec();
  NvFp4Layer L = random_nvfp4_layer(s, 4);
  // Host data: no CUDA backend can run it, whatever this machine has; no silent fallback.
  for (const char* b : {kCudaDecode, kCudaPrefill, kHybrid}) {
    try {
      Moe moe(s, L.view(), {.backend = b, .max_tokens = 8});
      FAIL() << b << " should have been refused";
    } catch (const SelectionError& e) {
      EXPECT_TRUE(contains(e.what(), "was requested but cannot run")) << e.what();
      EXPECT_TRUE(contains(e.what(), "on the host")) << e.what();
    }
  }
}

TEST_F(Api, DeviceDataWithoutCudaHasNoBackend) {
  const DeviceDesc d = DeviceDesc::probe();
  if ((d.decode_built || d.prefill_built) && !d.gpus.empty()) GTEST_SKIP() << "this machine has a GPU backend";
  const MoeSpec s = small_spec();
  NvFp4Layer L = random_nvfp4_layer(s, 4);
  const std::string m = error_of([&] { Moe moe(s, L.view(), {.max_tokens = 8, .data_on = Memory::Device}); });
  EXPECT_TRUE(contains(m, "no backend can run this problem")) << m;
  EXPECT_TRUE(contains(m, "cpu-reference: the CPU reference reads host memory")) << m;
}

TEST_F(Api, MovedObjectKeepsWorking) {
  const MoeSpec s = small_spec();
  NvFp4Layer L = random_nvfp4_layer(s, 4);
  Moe a(s, L.view(), {.max_tokens = 4});
  Moe b = std::move(a);
  Batch x(s, 3, 2);
  b.forward(x.xv(s), x.ids(s), x.wts(s), x.outv(s));
  EXPECT_EQ(reference_moe(s, L.view(), x.xv(s), x.ids(s), x.wts(s)), x.out);
}
