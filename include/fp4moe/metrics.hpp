// fp4moe: error figures between an output and a reference.
#pragma once
#include <cstdint>
#include <span>

namespace fp4moe {

struct ErrorStats {
  double rel_l2 = 0;   // ||a - ref|| / ||ref||
  double max_abs = 0;  // max |a - ref|
  double cosine = 0;   // <a, ref> / (||a|| ||ref||)
  int64_t nonfinite = 0;
};
ErrorStats compare(std::span<const double> a, std::span<const double> ref);
ErrorStats compare_bf16(std::span<const uint16_t> a_bf16, std::span<const double> ref);

}  // namespace fp4moe
