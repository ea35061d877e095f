// fp4moe: errors. Every rejection names the argument, what was expected and what was given.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace fp4moe {

// The one exception type the library throws for bad input or an impossible request.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// Throws fp4moe::Error("<arg>: expected <expected>, got <got>").
template <typename E, typename G>
[[noreturn]] void throw_arg_error(const std::string& arg, const E& expected, const G& got) {
  throw Error(detail::concat(arg, ": expected ", expected, ", got ", got));
}

}  // namespace fp4moe

#define FP4MOE_CHECK_ARG(cond, arg, expected, got)            \
  do {                                                        \
    if (!(cond)) ::fp4moe::throw_arg_error((arg), (expected), (got)); \
  } while (0)
