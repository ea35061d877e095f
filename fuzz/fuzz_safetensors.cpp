// Fuzz target for the safetensors header parser (and the JSON parser under it). Built with
// clang -fsanitize=fuzzer,address,undefined when that works; otherwise (FP4MOE_FUZZ_DRIVER)
// as a plain driver that replays built-in seeds and deterministic mutations of them.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fp4moe/error.hpp"
#include "fp4moe/safetensors.hpp"
#include "io/json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto h = fp4moe::st::parse_header(data, size, "fuzz");
    // Every accepted range must lie inside the buffer: touch its first and last byte.
    volatile uint8_t sink = 0;
    for (const auto& t : h.tensors)
      if (t.nbytes()) sink = static_cast<uint8_t>(sink ^ data[h.data_start + t.begin] ^ data[h.data_start + t.end - 1]);
    (void)sink;
  } catch (const fp4moe::Error&) {
  }
  try {
    fp4moe::json::parse(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const fp4moe::Error&) {
  }
  return 0;
}

#ifdef FP4MOE_FUZZ_DRIVER
namespace {
std::vector<uint8_t> file_of(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> f(8 + header.size() + data_bytes, 0);
  const uint64_t n = header.size();
  std::memcpy(f.data(), &n, 8);
  std::memcpy(f.data() + 8, header.data(), header.size());
  return f;
}
}  // namespace

int main(int argc, char** argv) {
  const char* why = argc > 1 ? argv[1] : "clang with -fsanitize=fuzzer was not found at configure time";
  std::vector<std::vector<uint8_t>> seeds = {
      file_of(R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", 16),
      file_of(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]}})", 8),
      file_of(R"({"a":{"dtype":"F8_E4M3","shape":[],"data_offsets":[0,1]}})", 1),
      file_of(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[8,24]},"b":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 24),
      file_of("{}", 0),
      {1, 2, 3},
  };
  uint64_t s = 0x9e3779b97f4a7c15ull;
  auto rnd = [&] { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; };
  size_t runs = 0;
  for (const auto& seed : seeds) {
    LLVMFuzzerTestOneInput(seed.data(), seed.size());
    ++runs;
    for (int i = 0; i < 4000; ++i) {
      std::vector<uint8_t> m = seed;
      const int edits = 1 + static_cast<int>(rnd() % 4);
      for (int e = 0; e < edits && !m.empty(); ++e) {
        const size_t pos = rnd() % m.size();
        switch (rnd() % 4) {
          case 0: m[pos] = static_cast<uint8_t>(rnd()); break;
          case 1: m.erase(m.begin() + static_cast<std::ptrdiff_t>(pos)); break;
          case 2: m.insert(m.begin() + static_cast<std::ptrdiff_t>(pos), static_cast<uint8_t>("{}[]\",:0123456789-e"[rnd() % 19])); break;
          case 3: m.resize(pos); break;
        }
      }
      LLVMFuzzerTestOneInput(m.data(), m.size());
      ++runs;
    }
  }
  std::printf("fuzzing skipped (%s): replayed %zu seeded inputs and mutations with the plain driver, no crash\n", why, runs);
  return 0;
}
#endif
