// fp4moe: a non-owning view of a host or device tensor (data pointer, dtype, shape), used at
// the API boundary so that every argument can be checked and named in errors.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace fp4moe {

enum class DType : uint8_t { U8, E4M3, F32, BF16, I32, I64 };
const char* dtype_name(DType d);
size_t dtype_size(DType d);

struct TensorView {
  const void* data = nullptr;
  DType dtype = DType::U8;
  std::vector<int64_t> shape;

  TensorView() = default;
  TensorView(const void* d, DType t, std::vector<int64_t> s) : data(d), dtype(t), shape(std::move(s)) {}
  int64_t numel() const;
  bool empty_view() const { return data == nullptr && shape.empty(); }
  std::string shape_str() const;
  template <typename T>
  const T* as() const { return static_cast<const T*>(data); }
};

std::string shape_str(const std::vector<int64_t>& s);
// Checks dtype and shape, throwing fp4moe::Error naming `arg` (-1 in `shape` = any extent).
void check_tensor(const TensorView& t, const char* arg, DType dtype, std::initializer_list<int64_t> shape);
void check_tensor(const TensorView& t, const char* arg, std::initializer_list<DType> dtypes,
                  std::initializer_list<int64_t> shape);

}  // namespace fp4moe
