// fp4moe internal: the library's leveled logger (public controls are in fp4moe/select.hpp).
#pragma once
#include <string>

#include "fp4moe/select.hpp"

namespace fp4moe::detail {

bool log_enabled(LogLevel level);
// Writes one message (one or more lines) at `level` to the sink (stderr by default).
void log(LogLevel level, const std::string& message);

}  // namespace fp4moe::detail
