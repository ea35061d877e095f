// fp4moe internal: a small JSON reader/writer for checkpoint headers and configs.
// Input is untrusted: the parser bounds nesting depth, rejects control characters in strings,
// malformed escapes and numbers, and trailing garbage, and reports the byte offset of the fault.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fp4moe::json {

enum class Kind : uint8_t { Null, Bool, Number, String, Array, Object };
const char* kind_name(Kind k);

struct Value {
  Kind kind = Kind::Null;
  bool b = false;
  double num = 0;
  // Integer literals (no '.', 'e') that fit in int64 / uint64 are kept exactly.
  bool is_int = false, is_uint = false;
  int64_t i64 = 0;
  uint64_t u64 = 0;
  std::string str;
  std::vector<Value> arr;
  std::vector<std::pair<std::string, Value>> obj;  // insertion order kept

  static Value null() { return {}; }
  static Value boolean(bool v);
  static Value number(double v);
  static Value integer(int64_t v);
  static Value string(std::string v);
  static Value array(std::vector<Value> v = {});
  static Value object();

  bool is(Kind k) const { return kind == k; }
  // Object access: the first member with this key, or nullptr (also when not an object).
  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  // Sets (replaces or appends) an object member.
  void set(const std::string& key, Value v);
};

// Throws fp4moe::Error("<what>: invalid JSON at byte N: <reason>").
Value parse(std::string_view text, const std::string& what, int max_depth = 64);
// Compact (indent < 0) or pretty-printed JSON.
std::string dump(const Value& v, int indent = -1);

}  // namespace fp4moe::json
