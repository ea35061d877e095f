// fp4moe: backend selection - which backend runs a MoE problem on this machine, and why.
//
// Every backend answers can_implement(problem, device) as a pure function of a problem
// description and a device description probed once. Each check inside says Yes, No, or
// Unknown ("I lack the information to say"); Unknown abstains - it never counts as No. A
// backend's verdict is No when any check says No (every No reason is listed), Unknown when
// none says No but some abstained, Yes otherwise.
//
// select(problem, device, request) is the one entry point. request.backend is "auto" or a
// backend name:
//   auto      - the first candidate (in the order below) whose verdict is Yes; when none is
//               Yes, the first Unknown one (logged at warn). None: SelectionError with every
//               candidate's reason. The choice and every rejection are logged at info.
//   a name    - that backend or a SelectionError carrying its reasons; never a fallback.
//               An Unknown verdict runs (logged at warn). An unknown name is an fp4moe::Error
//               listing the valid names.
// Candidate order: when max_tokens is known and below the hybrid crossover, cuda-decode,
// hybrid, cuda-prefill, cpu-reference; otherwise hybrid, cuda-prefill, cuda-decode,
// cpu-reference.
//
// Logging: messages go to stderr as "[fp4moe <level>] ..." (or to a sink set with
// set_log_sink). The level comes from the environment variable FP4MOE_LOG_LEVEL (trace,
// debug, info, warn, error, off; default info; a bad value is reported once on stderr) and
// can be changed at any time with set_log_level().
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "fp4moe/device.hpp"
#include "fp4moe/error.hpp"
#include "fp4moe/moe.hpp"
#include "fp4moe/tensor.hpp"

namespace fp4moe {

// ---------------------------------------------------------------- logging
enum class LogLevel : uint8_t { Trace, Debug, Info, Warn, Error, Off };
using LogSink = std::function<void(LogLevel, const std::string&)>;
const char* to_string(LogLevel l);
LogLevel parse_log_level(const std::string& s);  // throws fp4moe::Error listing the names
void set_log_level(LogLevel level);               // thread-safe
LogLevel log_level();
void set_log_sink(LogSink sink);                  // empty = stderr (the default)

// ---------------------------------------------------------------- the problem
enum class Memory : uint8_t { Unknown, Host, Device };
const char* to_string(Memory m);

struct Problem {
  MoeSpec spec;
  int64_t max_tokens = 0;              // upper bound on tokens per call; 0 = not known
  DType x_dtype = DType::BF16;         // hidden states and output
  DType ids_dtype = DType::I32;        // topk_ids
  DType weights_dtype = DType::F32;    // topk_weights
  Memory data = Memory::Unknown;       // where x, topk_ids, topk_weights and out live
  Memory weights = Memory::Unknown;    // where the weights handed to the backend live
  int device = 0;                      // GPU index for the CUDA backends
  // Parallel layout: the spec describes the experts of this rank. No backend implements
  // expert or tensor parallelism inside the layer yet; both must be 1.
  int ep_size = 1, tp_size = 1;
};

// What the build and the machine offer. probe() fills it once from probe_devices() and the
// backends compiled in; tests build synthetic ones.
struct DeviceDesc {
  bool cuda_built = false;     // CUDA runtime linked
  bool decode_built = false;   // the fused decode backend is compiled in
  bool prefill_built = false;  // the grouped-GEMM prefill backend is compiled in
  bool gpus_known = true;      // false: the GPU list was not probed (GPU checks abstain)
  std::string status;          // why there is no usable GPU, when there is none
  std::vector<GpuInfo> gpus;   // a field left 0 (cc_major, memory_bytes) is "not known"
  static DeviceDesc probe();   // this process: cheap after the first call
};

// ---------------------------------------------------------------- verdicts
enum class Verdict : uint8_t { Yes, No, Unknown };
const char* to_string(Verdict v);

struct CanImplement {
  Verdict verdict = Verdict::Unknown;
  std::string reason;  // why (for No: every failed check, "; "-separated)
  bool ok() const { return verdict == Verdict::Yes; }
};

// ---------------------------------------------------------------- the hybrid crossover
// hybrid runs a call of T tokens on cuda-decode when T < crossover, on cuda-prefill otherwise.
inline constexpr int64_t kDefaultCrossover = 64;
inline constexpr int64_t kMaxCrossover = 65;  // the decode kernel takes at most 64 tokens
struct Crossover {
  int64_t tokens = kDefaultCrossover;
  std::string source = "built-in default";
};

// ---------------------------------------------------------------- the registry
inline constexpr const char* kCpuReference = "cpu-reference";
inline constexpr const char* kCudaDecode = "cuda-decode";
inline constexpr const char* kCudaPrefill = "cuda-prefill";
inline constexpr const char* kHybrid = "hybrid";

// The backend names, in the registry's order (auto is not among them).
const std::vector<std::string>& backend_names();
// A one-line description of a backend (throws on an unknown name, listing the valid ones).
const std::string& backend_summary(const std::string& backend);
// Pure: depends on its arguments only. crossover matters to hybrid alone.
CanImplement can_implement(const std::string& backend, const Problem& problem, const DeviceDesc& device,
                           int64_t crossover = kDefaultCrossover);
// Prepared weight bytes of one copy of the layer (NVFP4 values + block scales + global scales).
size_t layer_weight_bytes(const MoeSpec& spec);

// ---------------------------------------------------------------- select
struct Request {
  std::string backend = "auto";
  // hybrid crossover in tokens; 0 = resolve_crossover() (FP4MOE_CROSSOVER, the tune file, the
  // built-in default).
  int64_t crossover = 0;
};

struct Candidate {
  std::string backend;
  CanImplement verdict;
};

struct SelectionReport {
  std::string requested;               // "auto" or a backend name
  std::string chosen;                  // the backend that will run
  std::vector<Candidate> candidates;   // every backend, in the order considered
  Crossover crossover;                 // used when chosen == hybrid (reported always)
  size_t prepared_weight_bytes = 0;    // device/host bytes the chosen backend prepares
  int prepared_copies = 1;             // hybrid: 2 (decode and prefill each prepare their own)
  const Candidate& chosen_candidate() const;
  std::string str() const;             // human-readable, several lines
};

// Carries the report of the failed selection.
class SelectionError : public Error {
 public:
  SelectionError(const std::string& what, SelectionReport report) : Error(what), report_(std::move(report)) {}
  const SelectionReport& report() const { return report_; }

 private:
  SelectionReport report_;
};

SelectionReport select(const Problem& problem, const DeviceDesc& device, const Request& request = {});

// ---------------------------------------------------------------- the tune file
// A text file, one entry per line, '#' starts a comment, fields separated by whitespace:
//   <gpu> <H> <I> <E> <k> <activation> <mode> <crossover>
// gpu is the GPU name with spaces replaced by '_' (e.g. NVIDIA_H100_80GB_HBM3), activation
// silu|relu2, mode w4a16|w4a4. `fp4moe tune` writes it; a later entry for the same key
// replaces an earlier one.
// Its path: $FP4MOE_TUNE_FILE, else $XDG_CACHE_HOME/fp4moe/crossover.txt, else
// $HOME/.cache/fp4moe/crossover.txt.
struct TuneEntry {
  std::string gpu;
  int64_t hidden = 0, inter = 0, experts = 0, topk = 0;
  Activation activation = Activation::SwiGLU;
  Mode mode = Mode::W4A16;
  int64_t crossover = kDefaultCrossover;
};
std::string gpu_key(const std::string& gpu_name);  // spaces -> '_'
// The entry of a layer on a GPU (by its name), with the given crossover.
TuneEntry tune_entry(const std::string& gpu_name, const MoeSpec& spec, int64_t crossover = kDefaultCrossover);
std::string tune_file_path();
// Missing file: empty list. A malformed line: fp4moe::Error naming the file, line and field.
std::vector<TuneEntry> read_tune_file(const std::string& path);
// Adds or replaces the entry for e's key (creates the directory and the file).
void write_tune_entry(const std::string& path, const TuneEntry& e);
// The crossover for a layer on a GPU (gpu may be null): override > 0 wins ("requested"),
// then $FP4MOE_CROSSOVER, then the tune file's entry, then kDefaultCrossover. The source
// says which. Values outside [1, kMaxCrossover] are an fp4moe::Error naming their source.
Crossover resolve_crossover(const MoeSpec& spec, const GpuInfo* gpu, int64_t override_tokens = 0);

}  // namespace fp4moe
