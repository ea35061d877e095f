// Backend selection on synthetic machine descriptions: no GPU needed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "fp4moe/presets.hpp"
#include "fp4moe/select.hpp"

using namespace fp4moe;

namespace {

GpuInfo h100() {
  GpuInfo g;
  g.index = 0;
  g.name = "NVIDIA H100 80GB HBM3";
  g.cc_major = 9;
  g.cc_minor = 0;
  g.sms = 132;
  g.memory_bytes = size_t(80) << 30;
  g.smem_per_block_optin = 227 * 1024;
  return g;
}

DeviceDesc gpu_machine(bool decode = true, bool prefill = true) {
  DeviceDesc d;
  d.cuda_built = true;
  d.decode_built = decode;
  d.prefill_built = prefill;
  d.status = "ok";
  d.gpus = {h100()};
  return d;
}

DeviceDesc cpu_machine() {
  DeviceDesc d;
  d.status = "built without CUDA (no nvcc at configure time)";
  return d;
}

Problem qwen_problem(int64_t max_tokens, Memory data = Memory::Device) {
  Problem p;
  p.spec = find_preset("qwen3-30b-a3b").spec();
  p.max_tokens = max_tokens;
  p.data = data;
  p.weights = Memory::Host;
  return p;
}

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

// Keeps the environment from steering the crossover during a test.
struct CleanEnv : ::testing::Test {
  void SetUp() override {
    unsetenv("FP4MOE_CROSSOVER");
    setenv("FP4MOE_TUNE_FILE", "/nonexistent/fp4moe-test/crossover.txt", 1);
    set_log_sink([this](LogLevel l, const std::string& m) { logged.emplace_back(l, m); });
    set_log_level(LogLevel::Info);
  }
  void TearDown() override {
    set_log_sink({});
    unsetenv("FP4MOE_TUNE_FILE");
  }
  std::vector<std::pair<LogLevel, std::string>> logged;
};

using Select = CleanEnv;

}  // namespace

// ---------------------------------------------------------------- can_implement

TEST_F(Select, CpuReferenceRunsOnHostData) {
  auto v = can_implement(kCpuReference, qwen_problem(8, Memory::Host), cpu_machine());
  EXPECT_EQ(v.verdict, Verdict::Yes) << v.reason;
}

TEST_F(Select, CpuReferenceRejectsDeviceData) {
  auto v = can_implement(kCpuReference, qwen_problem(8, Memory::Device), gpu_machine());
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "host memory")) << v.reason;
}

TEST_F(Select, CpuReferenceRejectsDeviceWeights) {
  Problem p = qwen_problem(8, Memory::Host);
  p.weights = Memory::Device;
  auto v = can_implement(kCpuReference, p, gpu_machine());
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "weights are on the GPU")) << v.reason;
}

TEST_F(Select, UnknownDataLocationAbstains) {
  auto v = can_implement(kCpuReference, qwen_problem(8, Memory::Unknown), cpu_machine());
  EXPECT_EQ(v.verdict, Verdict::Unknown) << v.reason;
  EXPECT_TRUE(contains(v.reason, "where x")) << v.reason;
}

TEST_F(Select, DecodeYesOnH100ForEightTokens) {
  auto v = can_implement(kCudaDecode, qwen_problem(8), gpu_machine());
  EXPECT_EQ(v.verdict, Verdict::Yes) << v.reason;
}

TEST_F(Select, DecodeRejectsBuildWithoutCuda) {
  auto v = can_implement(kCudaDecode, qwen_problem(8), cpu_machine());
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "no CUDA support")) << v.reason;
}

TEST_F(Select, DecodeRejectsKernelNotCompiled) {
  auto v = can_implement(kCudaDecode, qwen_problem(8), gpu_machine(false, true));
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "fused decode kernel is not compiled")) << v.reason;
}

TEST_F(Select, DecodeRejectsNoGpu) {
  DeviceDesc d = gpu_machine();
  d.gpus.clear();
  d.status = "no usable GPU: CUDA driver version is insufficient";
  auto v = can_implement(kCudaDecode, qwen_problem(8), d);
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "driver version is insufficient")) << v.reason;
}

TEST_F(Select, DecodeRejectsMissingDeviceIndex) {
  Problem p = qwen_problem(8);
  p.device = 3;
  auto v = can_implement(kCudaDecode, p, gpu_machine());
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "device 3 does not exist")) << v.reason;
}

TEST_F(Select, DecodeRejectsOldGpu) {
  DeviceDesc d = gpu_machine();
  d.gpus[0].name = "Tesla T4";
  d.gpus[0].cc_major = 7;
  d.gpus[0].cc_minor = 5;
  auto v = can_implement(kCudaDecode, qwen_problem(8), d);
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "compute capability >= 8.0")) << v.reason;
  EXPECT_TRUE(contains(v.reason, "7.5")) << v.reason;
}

TEST_F(Select, DecodeRejectsArchNotInBuild) {
  DeviceDesc d = gpu_machine();
  d.gpus[0].name = "NVIDIA B200";
  d.gpus[0].cc_major = 10;
  d.gpus[0].cc_minor = 0;
  auto v = can_implement(kCudaDecode, qwen_problem(8), d);
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "sm_100")) << v.reason;
}

TEST_F(Select, Ampere86RunsTheSm80Code) {
  DeviceDesc d = gpu_machine();
  d.gpus[0].cc_major = 8;
  d.gpus[0].cc_minor = 6;
  EXPECT_EQ(can_implement(kCudaDecode, qwen_problem(8), d).verdict, Verdict::Yes);
}

TEST_F(Select, UnknownComputeCapabilityAbstains) {
  DeviceDesc d = gpu_machine();
  d.gpus[0].cc_major = 0;
  auto v = can_implement(kCudaDecode, qwen_problem(8), d);
  EXPECT_EQ(v.verdict, Verdict::Unknown) << v.reason;
}

TEST_F(Select, UnprobedGpusAbstainButOtherNosStillCount) {
  DeviceDesc d = gpu_machine();
  d.gpus_known = false;
  d.gpus.clear();
  EXPECT_EQ(can_implement(kCudaDecode, qwen_problem(8), d).verdict, Verdict::Unknown);
  // Unknown is not "no", and it does not hide a real "no" either.
  auto v = can_implement(kCudaDecode, qwen_problem(100), d);
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "limit of 64")) << v.reason;
}

TEST_F(Select, DecodeRejectsHostData) {
  auto v = can_implement(kCudaDecode, qwen_problem(8, Memory::Host), gpu_machine());
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "on the host")) << v.reason;
}

TEST_F(Select, DecodeRejectsTooManyTokens) {
  auto v = can_implement(kCudaDecode, qwen_problem(65), gpu_machine());
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "max_tokens = 65 exceeds")) << v.reason;
  EXPECT_EQ(can_implement(kCudaDecode, qwen_problem(64), gpu_machine()).verdict, Verdict::Yes);
}

TEST_F(Select, DecodeAbstainsWithoutTokenBound) {
  auto v = can_implement(kCudaDecode, qwen_problem(0), gpu_machine());
  EXPECT_EQ(v.verdict, Verdict::Unknown);
  EXPECT_TRUE(contains(v.reason, "max_tokens")) << v.reason;
}

TEST_F(Select, CudaRejectsInt64IdsAndBf16Weights) {
  Problem p = qwen_problem(8);
  p.ids_dtype = DType::I64;
  p.weights_dtype = DType::BF16;
  auto v = can_implement(kCudaPrefill, p, gpu_machine());
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "int32 topk_ids")) << v.reason;
  EXPECT_TRUE(contains(v.reason, "float32 topk_weights")) << v.reason;
  // The CPU reference takes both.
  p.data = Memory::Host;
  EXPECT_EQ(can_implement(kCpuReference, p, gpu_machine()).verdict, Verdict::Yes);
}

TEST_F(Select, EveryBackendRejectsWrongActivationDtype) {
  Problem p = qwen_problem(8, Memory::Host);
  p.x_dtype = DType::F32;
  for (const auto& b : backend_names()) {
    auto v = can_implement(b, p, gpu_machine());
    EXPECT_EQ(v.verdict, Verdict::No) << b;
    EXPECT_TRUE(contains(v.reason, "bfloat16")) << b << ": " << v.reason;
  }
}

TEST_F(Select, EveryBackendRejectsParallelLayouts) {
  Problem p = qwen_problem(8, Memory::Host);
  p.ep_size = 8;
  p.tp_size = 2;
  for (const auto& b : backend_names()) {
    auto v = can_implement(b, p, gpu_machine());
    EXPECT_EQ(v.verdict, Verdict::No) << b;
    EXPECT_TRUE(contains(v.reason, "ep_size = 8")) << v.reason;
    EXPECT_TRUE(contains(v.reason, "tp_size = 2")) << v.reason;
  }
}

TEST_F(Select, EveryBackendRejectsInvalidSpec) {
  Problem p = qwen_problem(8, Memory::Host);
  p.spec.hidden = 100;  // not a multiple of 16
  for (const auto& b : backend_names()) {
    auto v = can_implement(b, p, gpu_machine());
    EXPECT_EQ(v.verdict, Verdict::No) << b;
    EXPECT_TRUE(contains(v.reason, "hidden (H)")) << v.reason;
  }
}

TEST_F(Select, PrefillRejectsKernelNotCompiled) {
  auto v = can_implement(kCudaPrefill, qwen_problem(1024), gpu_machine(true, false));
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "prefill kernel is not compiled")) << v.reason;
  EXPECT_EQ(can_implement(kCudaPrefill, qwen_problem(1024), gpu_machine()).verdict, Verdict::Yes);
}

TEST_F(Select, KernelLimitsOnTheShape) {
  Problem p = qwen_problem(64);
  p.spec.topk = 40;
  p.spec.experts = 4096;
  auto v = can_implement(kCudaDecode, p, gpu_machine());
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "top-k <= 32")) << v.reason;
  v = can_implement(kCudaPrefill, p, gpu_machine());
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "E <= 512")) << v.reason;
  // 64 tokens x 8 pairs and 16000 experts: the routing table outgrows shared memory.
  p.spec.topk = 8;
  p.spec.experts = 16000;
  p.spec.hidden = 256;
  p.spec.inter = 128;
  v = can_implement(kCudaDecode, p, gpu_machine());
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "bytes of shared memory")) << v.reason;
  p.spec.experts = 2048;
  EXPECT_EQ(can_implement(kCudaDecode, p, gpu_machine()).verdict, Verdict::Yes);
  DeviceDesc d = gpu_machine();
  d.gpus[0].smem_per_block_optin = 0;  // not known: abstain
  EXPECT_EQ(can_implement(kCudaDecode, p, d).verdict, Verdict::Unknown);
}

TEST_F(Select, MemoryLimitCountsHybridTwice) {
  // kimi-k2: 384 experts x ~24.8 MB = ~8.9 GiB per copy. On a 12 GiB GPU one copy fits, two do not.
  Problem p;
  p.spec = find_preset("kimi-k2").spec();
  p.max_tokens = 4096;
  p.data = Memory::Device;
  DeviceDesc d = gpu_machine();
  d.gpus[0].memory_bytes = size_t(12) << 30;
  ASSERT_GT(layer_weight_bytes(p.spec), size_t(8) << 30);
  ASSERT_LT(layer_weight_bytes(p.spec), size_t(10) << 30);
  EXPECT_EQ(can_implement(kCudaPrefill, p, d).verdict, Verdict::Yes);
  auto v = can_implement(kHybrid, p, d);
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "two prepared copies")) << v.reason;
  d.gpus[0].memory_bytes = size_t(8) << 30;
  auto v1 = can_implement(kCudaPrefill, p, d);
  EXPECT_EQ(v1.verdict, Verdict::No);
  EXPECT_TRUE(contains(v1.reason, "exceed 90%")) << v1.reason;
}

TEST_F(Select, HybridNeedsBothKernels) {
  auto v = can_implement(kHybrid, qwen_problem(1024), gpu_machine(true, false));
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "needs cuda-prefill")) << v.reason;
  v = can_implement(kHybrid, qwen_problem(1024), gpu_machine(false, true));
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "needs cuda-decode")) << v.reason;
  v = can_implement(kHybrid, qwen_problem(1024), gpu_machine());
  EXPECT_EQ(v.verdict, Verdict::Yes) << v.reason;
  EXPECT_TRUE(contains(v.reason, "below 64 tokens")) << v.reason;
}

TEST_F(Select, HybridRejectsCrossoverBeyondDecodeRange) {
  auto v = can_implement(kHybrid, qwen_problem(1024), gpu_machine(), 66);
  EXPECT_EQ(v.verdict, Verdict::No);
  EXPECT_TRUE(contains(v.reason, "crossover = 66")) << v.reason;
  EXPECT_EQ(can_implement(kHybrid, qwen_problem(1024), gpu_machine(), 65).verdict, Verdict::Yes);
}

TEST_F(Select, CanImplementIsPure) {
  const Problem p = qwen_problem(32);
  const DeviceDesc d = gpu_machine();
  for (const auto& b : backend_names()) {
    auto a = can_implement(b, p, d);
    auto c = can_implement(b, p, d);
    EXPECT_EQ(a.verdict, c.verdict);
    EXPECT_EQ(a.reason, c.reason);
  }
}

// ---------------------------------------------------------------- select

TEST_F(Select, AutoOnCpuMachinePicksReferenceAndReportsEveryRejection) {
  auto r = select(qwen_problem(8, Memory::Host), cpu_machine());
  EXPECT_EQ(r.chosen, kCpuReference);
  ASSERT_EQ(r.candidates.size(), 4u);
  for (const auto& c : r.candidates) {
    if (c.backend == kCpuReference) continue;
    EXPECT_EQ(c.verdict.verdict, Verdict::No) << c.backend;
    EXPECT_TRUE(contains(c.verdict.reason, "no CUDA support")) << c.verdict.reason;
  }
  const std::string s = r.str();
  EXPECT_TRUE(contains(s, "* cpu-reference")) << s;
  EXPECT_TRUE(contains(s, "cuda-decode")) << s;
  // auto logs the choice and the reasons at info level.
  ASSERT_FALSE(logged.empty());
  EXPECT_EQ(logged.back().first, LogLevel::Info);
  EXPECT_TRUE(contains(logged.back().second, "no CUDA support")) << logged.back().second;
}

TEST_F(Select, AutoLogIsSilencedByLevel) {
  set_log_level(LogLevel::Warn);
  (void)select(qwen_problem(8, Memory::Host), cpu_machine());
  EXPECT_TRUE(logged.empty());
}

TEST_F(Select, AutoPrefersDecodeBelowCrossover) {
  auto r = select(qwen_problem(8), gpu_machine());
  EXPECT_EQ(r.chosen, kCudaDecode);
  EXPECT_EQ(r.candidates.front().backend, kCudaDecode);
  EXPECT_EQ(r.prepared_copies, 1);
}

TEST_F(Select, AutoPrefersHybridForLargeBatches) {
  auto r = select(qwen_problem(8192), gpu_machine());
  EXPECT_EQ(r.chosen, kHybrid);
  EXPECT_EQ(r.prepared_copies, 2);
  EXPECT_EQ(r.prepared_weight_bytes, 2 * layer_weight_bytes(qwen_problem(1).spec));
  EXPECT_TRUE(contains(r.str(), "2 prepared copies")) << r.str();
}

TEST_F(Select, AutoWithDecodeOnlyBuildAndLargeBatchHasNoGpuBackend) {
  // The situation before the prefill kernel lands: 8192 tokens on device data.
  try {
    (void)select(qwen_problem(8192), gpu_machine(true, false));
    FAIL() << "expected SelectionError";
  } catch (const SelectionError& e) {
    const std::string w = e.what();
    EXPECT_TRUE(contains(w, "no backend can run")) << w;
    EXPECT_TRUE(contains(w, "max_tokens = 8192 exceeds")) << w;
    EXPECT_TRUE(contains(w, "prefill kernel is not compiled")) << w;
    EXPECT_TRUE(e.report().chosen.empty());
    EXPECT_EQ(e.report().candidates.size(), 4u);
  }
}

TEST_F(Select, AutoFallsBackToUnknownWithWarning) {
  DeviceDesc d = gpu_machine();
  d.gpus[0].cc_major = 0;  // not known
  auto r = select(qwen_problem(8), d);
  EXPECT_EQ(r.chosen, kCudaDecode);
  EXPECT_EQ(r.chosen_candidate().verdict.verdict, Verdict::Unknown);
  bool warned = false;
  for (auto& [l, m] : logged) warned |= (l == LogLevel::Warn && contains(m, "abstained"));
  EXPECT_TRUE(warned);
}

TEST_F(Select, ExplicitRequestThatCannotRunIsAnErrorWithReasons) {
  try {
    (void)select(qwen_problem(8, Memory::Host), cpu_machine(), {kCudaDecode, 0});
    FAIL() << "expected SelectionError";
  } catch (const SelectionError& e) {
    const std::string w = e.what();
    EXPECT_TRUE(contains(w, "backend \"cuda-decode\" was requested but cannot run")) << w;
    EXPECT_TRUE(contains(w, "no CUDA support")) << w;
    EXPECT_TRUE(contains(w, "backends that could: cpu-reference")) << w;
    EXPECT_EQ(e.report().requested, kCudaDecode);
  }
}

TEST_F(Select, ExplicitRequestNeverFallsBack) {
  // cpu-reference could run, but cuda-prefill was asked for: an error, not the reference.
  EXPECT_THROW((void)select(qwen_problem(8, Memory::Host), gpu_machine(), {kCudaPrefill, 0}), SelectionError);
  auto r = select(qwen_problem(8, Memory::Host), gpu_machine(), {kCpuReference, 0});
  EXPECT_EQ(r.chosen, kCpuReference);
}

TEST_F(Select, UnknownBackendNameListsTheValidOnes) {
  try {
    (void)select(qwen_problem(8), gpu_machine(), {"marlin", 0});
    FAIL() << "expected Error";
  } catch (const SelectionError&) {
    FAIL() << "an unknown name is a usage error, not a selection failure";
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_TRUE(contains(w, "backend: expected one of auto, cpu-reference, cuda-decode, cuda-prefill, hybrid")) << w;
    EXPECT_TRUE(contains(w, "\"marlin\"")) << w;
  }
  EXPECT_THROW((void)can_implement("marlin", qwen_problem(8), gpu_machine()), Error);
}

// ---------------------------------------------------------------- the hybrid crossover

TEST_F(Select, CrossoverSteersAutoOrder) {
  // max_tokens 48 is below the default (64): decode first; with crossover 32 it is not.
  EXPECT_EQ(select(qwen_problem(48), gpu_machine()).chosen, kCudaDecode);
  auto r = select(qwen_problem(48), gpu_machine(), {"auto", 32});
  EXPECT_EQ(r.chosen, kHybrid);
  EXPECT_EQ(r.crossover.tokens, 32);
  EXPECT_EQ(r.crossover.source, "requested");
}

TEST_F(Select, CrossoverDefaultEnvAndRange) {
  EXPECT_EQ(resolve_crossover(qwen_problem(1).spec, nullptr).tokens, kDefaultCrossover);
  EXPECT_EQ(resolve_crossover(qwen_problem(1).spec, nullptr).source, "built-in default");
  setenv("FP4MOE_CROSSOVER", "17", 1);
  auto c = resolve_crossover(qwen_problem(1).spec, nullptr);
  EXPECT_EQ(c.tokens, 17);
  EXPECT_EQ(c.source, "FP4MOE_CROSSOVER");
  EXPECT_EQ(resolve_crossover(qwen_problem(1).spec, nullptr, 5).tokens, 5);  // the request wins
  setenv("FP4MOE_CROSSOVER", "500", 1);
  EXPECT_THROW((void)resolve_crossover(qwen_problem(1).spec, nullptr), Error);
  setenv("FP4MOE_CROSSOVER", "abc", 1);
  EXPECT_THROW((void)resolve_crossover(qwen_problem(1).spec, nullptr), Error);
  unsetenv("FP4MOE_CROSSOVER");
  EXPECT_THROW((void)resolve_crossover(qwen_problem(1).spec, nullptr, 66), Error);
}

TEST_F(Select, TuneFileRoundTripAndLookup) {
  const auto dir = std::filesystem::temp_directory_path() / ("fp4moe-tune-" + std::to_string(::getpid()));
  const std::string path = (dir / "sub" / "crossover.txt").string();
  setenv("FP4MOE_TUNE_FILE", path.c_str(), 1);
  const MoeSpec qwen = qwen_problem(1).spec;
  TuneEntry e;
  e.gpu = gpu_key(h100().name);
  e.hidden = qwen.hidden;
  e.inter = qwen.inter;
  e.experts = qwen.experts;
  e.topk = qwen.topk;
  e.crossover = 24;
  write_tune_entry(path, e);
  e.crossover = 40;  // replaces, does not duplicate
  write_tune_entry(path, e);
  auto all = read_tune_file(path);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].crossover, 40);
  EXPECT_EQ(all[0].gpu, "NVIDIA_H100_80GB_HBM3");

  const GpuInfo g = h100();
  auto c = resolve_crossover(qwen, &g);
  EXPECT_EQ(c.tokens, 40);
  EXPECT_TRUE(contains(c.source, "tune file")) << c.source;
  // Another mode or another GPU: no entry, the default.
  MoeSpec a4 = qwen;
  a4.mode = Mode::W4A4;
  EXPECT_EQ(resolve_crossover(a4, &g).tokens, kDefaultCrossover);
  GpuInfo other = g;
  other.name = "NVIDIA H200";
  EXPECT_EQ(resolve_crossover(qwen, &other).tokens, kDefaultCrossover);
  // select() reads it too.
  auto r = select(qwen_problem(48), gpu_machine());
  EXPECT_EQ(r.crossover.tokens, 40);
  EXPECT_EQ(r.chosen, (48 < 40) ? kCudaDecode : kHybrid);

  // A malformed line names the file, the line and the field.
  {
    std::ofstream f(path, std::ios::app);
    f << "NVIDIA_H200 2048 768 128 8 silu w4a16 many\n";
  }
  try {
    (void)read_tune_file(path);
    FAIL() << "expected Error";
  } catch (const Error& err) {
    const std::string w = err.what();
    EXPECT_TRUE(contains(w, path + ":4")) << w;
    EXPECT_TRUE(contains(w, "crossover: expected an integer")) << w;
  }
  std::filesystem::remove_all(dir);
}

TEST(Log, ParseLevels) {
  EXPECT_EQ(parse_log_level("debug"), LogLevel::Debug);
  EXPECT_EQ(parse_log_level("off"), LogLevel::Off);
  EXPECT_THROW((void)parse_log_level("loud"), Error);
}

TEST(DeviceDescProbe, MatchesThisBuild) {
  const DeviceDesc d = DeviceDesc::probe();
  EXPECT_EQ(d.cuda_built, probe_devices().built_with_cuda);
  EXPECT_TRUE(d.gpus_known);
  if (!d.cuda_built) {
    EXPECT_FALSE(d.decode_built || d.prefill_built);
  }
}
