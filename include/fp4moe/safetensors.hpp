// fp4moe: safetensors files - memory-mapped zero-copy reading and writing.
//
// The format: an 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {str: str}, "<tensor>": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, ...}
// and the data, with [b, e) relative to the first byte after the header.
// The header is untrusted: parse_header validates the JSON, every dtype name, shape and byte
// size (overflow-checked), that every range lies inside the file and that no two ranges
// overlap. Any fault is an fp4moe::Error naming the file and, where there is one, the tensor.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fp4moe/tensor.hpp"

namespace fp4moe::st {

enum class Dtype : uint8_t { BOOL, U8, I8, U16, I16, F16, BF16, I32, U32, F32, F64, I64, U64, F8_E4M3, F8_E5M2 };
const char* dtype_name(Dtype d);  // the on-disk name, e.g. "BF16"
size_t dtype_size(Dtype d);
std::optional<Dtype> parse_dtype(std::string_view name);
// fp4moe's DType for a view, when there is one (U8, F8_E4M3, F32, BF16, I32, I64).
std::optional<DType> to_core(Dtype d);

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::U8;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // relative to the data section
  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const;
};

struct Header {
  uint64_t header_len = 0;   // N
  uint64_t data_start = 0;   // 8 + N
  std::vector<TensorInfo> tensors;  // in the header's order
  std::map<std::string, std::string> metadata;
  const TensorInfo* find(std::string_view name) const;
};

// Largest header accepted (as the reference implementation): 100 MB.
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Parses and validates the header of a whole file held in [data, data + size). `file` names
// it in errors. Never reads outside the buffer.
Header parse_header(const uint8_t* data, size_t size, const std::string& file);

// A memory-mapped safetensors file. Move-only.
class File {
 public:
  explicit File(const std::string& path);
  ~File();
  File(File&& o) noexcept;
  File& operator=(File&& o) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  const Header& header() const { return header_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const TensorInfo* find(std::string_view name) const { return header_.find(name); }
  // Throws naming the file when there is no such tensor.
  const TensorInfo& info(std::string_view name) const;
  std::span<const uint8_t> bytes(const TensorInfo& t) const;
  // A view (no copy). Throws when the dtype has no fp4moe DType.
  TensorView view(std::string_view name) const;
  // Copies a floating-point tensor (F64/F32/F16/BF16/F8_E4M3) to float, elementwise.
  std::vector<float> to_float(std::string_view name) const;

 private:
  std::string path_;
  const uint8_t* map_ = nullptr;
  size_t size_ = 0;
  Header header_;
};

// Builds a safetensors file in memory and writes it (tensors laid out in name order,
// header padded with spaces to a multiple of 8 so that data is 8-byte aligned).
class Writer {
 public:
  void add(const std::string& name, Dtype dtype, std::vector<int64_t> shape, const void* data, size_t nbytes);
  template <typename T>
  void add(const std::string& name, Dtype dtype, std::vector<int64_t> shape, const std::vector<T>& v) {
    add(name, dtype, std::move(shape), v.data(), v.size() * sizeof(T));
  }
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  bool empty() const { return tensors_.empty(); }
  size_t data_bytes() const;
  // Serializes the whole file (header + data).
  std::vector<uint8_t> serialize() const;
  // Writes to path through a temporary file and a rename; throws naming path on failure.
  void write(const std::string& path) const;

 private:
  struct Pending {
    Dtype dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, Pending> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace fp4moe::st
