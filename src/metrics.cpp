#include "fp4moe/metrics.hpp"

#include <cmath>
#include <vector>

#include "fp4moe/bf16.hpp"
#include "fp4moe/error.hpp"

namespace fp4moe {

ErrorStats compare(std::span<const double> a, std::span<const double> ref) {
  FP4MOE_CHECK_ARG(a.size() == ref.size(), "compare", detail::concat(ref.size(), " values"), a.size());
  ErrorStats s;
  double d2 = 0, r2 = 0, a2 = 0, ar = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) {
      ++s.nonfinite;
      continue;
    }
    const double d = a[i] - ref[i];
    d2 += d * d;
    r2 += ref[i] * ref[i];
    a2 += a[i] * a[i];
    ar += a[i] * ref[i];
    s.max_abs = std::fmax(s.max_abs, std::fabs(d));
  }
  s.rel_l2 = r2 > 0 ? std::sqrt(d2 / r2) : std::sqrt(d2);
  s.cosine = (a2 > 0 && r2 > 0) ? ar / std::sqrt(a2 * r2) : (a2 == r2 ? 1.0 : 0.0);
  if (s.nonfinite) s.rel_l2 = s.max_abs = INFINITY;
  return s;
}

ErrorStats compare_bf16(std::span<const uint16_t> a, std::span<const double> ref) {
  std::vector<double> v(a.size());
  for (size_t i = 0; i < a.size(); ++i) v[i] = bf16_to_float(a[i]);
  return compare(v, ref);
}

}  // namespace fp4moe
