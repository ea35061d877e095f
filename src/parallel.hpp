// fp4moe internal: a tiny deterministic parallel-for over [0, n) on the host.
#pragma once
#include <cstdint>
#include <functional>

namespace fp4moe::detail {

int host_threads();
// Runs fn(i) for every i in [0, n) on up to host_threads() threads, dynamic schedule. The
// caller writes results to per-i slots so the outcome does not depend on the schedule.
// The first exception thrown by fn is rethrown in the caller.
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace fp4moe::detail
