#include "fp4moe/tensor.hpp"

#include <sstream>

#include "fp4moe/error.hpp"

namespace fp4moe {

const char* dtype_name(DType d) {
  switch (d) {
    case DType::U8: return "uint8";
    case DType::E4M3: return "float8_e4m3fn";
    case DType::F32: return "float32";
    case DType::BF16: return "bfloat16";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
  }
  return "?";
}

size_t dtype_size(DType d) {
  switch (d) {
    case DType::U8: case DType::E4M3: return 1;
    case DType::BF16: return 2;
    case DType::F32: case DType::I32: return 4;
    case DType::I64: return 8;
  }
  return 0;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}
std::string TensorView::shape_str() const { return fp4moe::shape_str(shape); }

static std::string pattern_str(std::initializer_list<int64_t> shape) {
  std::ostringstream os;
  os << '[';
  size_t i = 0;
  for (auto s : shape) {
    os << (i++ ? ", " : "");
    if (s < 0) os << '*'; else os << s;
  }
  os << ']';
  return os.str();
}

void check_tensor(const TensorView& t, const char* arg, std::initializer_list<DType> dtypes,
                  std::initializer_list<int64_t> shape) {
  bool ok = false;
  std::string names;
  for (auto d : dtypes) {
    ok |= (t.dtype == d);
    names += (names.empty() ? "" : " or ") + std::string(dtype_name(d));
  }
  if (!ok) throw_arg_error(arg, "dtype " + names, std::string("dtype ") + dtype_name(t.dtype));
  bool shape_ok = t.shape.size() == shape.size();
  if (shape_ok) {
    size_t i = 0;
    for (auto s : shape) {
      if (s >= 0 && t.shape[i] != s) shape_ok = false;
      if (t.shape[i] < 0) shape_ok = false;
      ++i;
    }
  }
  if (!shape_ok) throw_arg_error(arg, "shape " + pattern_str(shape), "shape " + t.shape_str());
  if (t.data == nullptr && t.numel() > 0) throw_arg_error(arg, "a data pointer", "null");
}

void check_tensor(const TensorView& t, const char* arg, DType dtype, std::initializer_list<int64_t> shape) {
  check_tensor(t, arg, {dtype}, shape);
}

}  // namespace fp4moe
