#include "io/json.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "fp4moe/error.hpp"

namespace fp4moe::json {

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Null: return "null";
    case Kind::Bool: return "a boolean";
    case Kind::Number: return "a number";
    case Kind::String: return "a string";
    case Kind::Array: return "an array";
    case Kind::Object: return "an object";
  }
  return "?";
}

Value Value::boolean(bool v) { Value x; x.kind = Kind::Bool; x.b = v; return x; }
Value Value::number(double v) { Value x; x.kind = Kind::Number; x.num = v; return x; }
Value Value::integer(int64_t v) {
  Value x;
  x.kind = Kind::Number;
  x.num = static_cast<double>(v);
  x.is_int = true;
  x.i64 = v;
  x.is_uint = v >= 0;
  x.u64 = static_cast<uint64_t>(v);
  return x;
}
Value Value::string(std::string v) { Value x; x.kind = Kind::String; x.str = std::move(v); return x; }
Value Value::array(std::vector<Value> v) { Value x; x.kind = Kind::Array; x.arr = std::move(v); return x; }
Value Value::object() { Value x; x.kind = Kind::Object; return x; }

const Value* Value::find(std::string_view key) const {
  if (kind != Kind::Object) return nullptr;
  for (const auto& [k, v] : obj)
    if (k == key) return &v;
  return nullptr;
}
Value* Value::find(std::string_view key) {
  return const_cast<Value*>(static_cast<const Value*>(this)->find(key));
}
void Value::set(const std::string& key, Value v) {
  if (Value* p = find(key)) *p = std::move(v);
  else obj.emplace_back(key, std::move(v));
}

namespace {

class Parser {
 public:
  Parser(std::string_view t, const std::string& what, int max_depth) : t_(t), what_(what), max_depth_(max_depth) {}

  Value run() {
    skip_ws();
    Value v = value(0);
    skip_ws();
    if (p_ != t_.size()) fail("unexpected characters after the JSON value");
    return v;
  }

 private:
  std::string_view t_;
  const std::string& what_;
  int max_depth_;
  size_t p_ = 0;

  [[noreturn]] void fail(const std::string& why) const {
    throw Error(detail::concat(what_, ": invalid JSON at byte ", p_, ": ", why));
  }
  void skip_ws() {
    while (p_ < t_.size() && (t_[p_] == ' ' || t_[p_] == '\t' || t_[p_] == '\n' || t_[p_] == '\r')) ++p_;
  }
  bool eof() const { return p_ >= t_.size(); }
  char peek() const { return t_[p_]; }
  void expect(char c) {
    if (eof() || t_[p_] != c) fail(detail::concat("expected '", c, "'", eof() ? ", got the end of the text" : ""));
    ++p_;
  }
  void literal(std::string_view word) {
    if (t_.substr(p_, word.size()) != word) fail("expected a JSON value");
    p_ += word.size();
  }

  Value value(int depth) {
    if (depth > max_depth_) fail(detail::concat("nesting deeper than ", max_depth_));
    if (eof()) fail("expected a value, got the end of the text");
    const char c = peek();
    if (c == '{') return object(depth);
    if (c == '[') return array(depth);
    if (c == '"') return Value::string(string());
    if (c == 't') { literal("true"); return Value::boolean(true); }
    if (c == 'f') { literal("false"); return Value::boolean(false); }
    if (c == 'n') { literal("null"); return Value::null(); }
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    fail(detail::concat("unexpected character 0x", std::hex, static_cast<int>(static_cast<unsigned char>(c))));
  }

  Value object(int depth) {
    expect('{');
    Value v = Value::object();
    skip_ws();
    if (!eof() && peek() == '}') { ++p_; return v; }
    for (;;) {
      skip_ws();
      if (eof() || peek() != '"') fail("expected a string key");
      std::string k = string();
      skip_ws();
      expect(':');
      skip_ws();
      v.obj.emplace_back(std::move(k), value(depth + 1));
      skip_ws();
      if (eof()) fail("unterminated object");
      if (peek() == ',') { ++p_; continue; }
      expect('}');
      return v;
    }
  }

  Value array(int depth) {
    expect('[');
    Value v = Value::array();
    skip_ws();
    if (!eof() && peek() == ']') { ++p_; return v; }
    for (;;) {
      skip_ws();
      v.arr.push_back(value(depth + 1));
      skip_ws();
      if (eof()) fail("unterminated array");
      if (peek() == ',') { ++p_; continue; }
      expect(']');
      return v;
    }
  }

  unsigned hex4() {
    if (p_ + 4 > t_.size()) fail("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = t_[p_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
      else fail("bad hex digit in \\u escape");
    }
    return v;
  }
  static void utf8(std::string& o, unsigned cp) {
    if (cp < 0x80) o += static_cast<char>(cp);
    else if (cp < 0x800) { o += static_cast<char>(0xC0 | (cp >> 6)); o += static_cast<char>(0x80 | (cp & 0x3F)); }
    else if (cp < 0x10000) {
      o += static_cast<char>(0xE0 | (cp >> 12));
      o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      o += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      o += static_cast<char>(0xF0 | (cp >> 18));
      o += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      o += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string string() {
    expect('"');
    std::string o;
    for (;;) {
      if (eof()) fail("unterminated string");
      const char c = t_[p_++];
      if (c == '"') return o;
      if (static_cast<unsigned char>(c) < 0x20) { --p_; fail("control character in a string"); }
      if (c != '\\') { o += c; continue; }
      if (eof()) fail("unterminated escape");
      const char e = t_[p_++];
      switch (e) {
        case '"': o += '"'; break;
        case '\\': o += '\\'; break;
        case '/': o += '/'; break;
        case 'b': o += '\b'; break;
        case 'f': o += '\f'; break;
        case 'n': o += '\n'; break;
        case 'r': o += '\r'; break;
        case 't': o += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {
            if (p_ + 2 > t_.size() || t_[p_] != '\\' || t_[p_ + 1] != 'u') fail("unpaired surrogate in \\u escape");
            p_ += 2;
            const unsigned lo = hex4();
            if (lo < 0xDC00 || lo >= 0xE000) fail("bad low surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            fail("unpaired surrogate in \\u escape");
          }
          utf8(o, cp);
          break;
        }
        default: --p_; fail("unknown escape");
      }
    }
  }

  Value number() {
    const size_t start = p_;
    bool integral = true;
    if (peek() == '-') ++p_;
    if (eof() || !(peek() >= '0' && peek() <= '9')) fail("bad number");
    if (peek() == '0') ++p_;
    else while (!eof() && peek() >= '0' && peek() <= '9') ++p_;
    if (!eof() && peek() == '.') {
      integral = false;
      ++p_;
      if (eof() || !(peek() >= '0' && peek() <= '9')) fail("bad number: digits expected after '.'");
      while (!eof() && peek() >= '0' && peek() <= '9') ++p_;
    }
    if (!eof() && (peek() == 'e' || peek() == 'E')) {
      integral = false;
      ++p_;
      if (!eof() && (peek() == '+' || peek() == '-')) ++p_;
      if (eof() || !(peek() >= '0' && peek() <= '9')) fail("bad number: digits expected in the exponent");
      while (!eof() && peek() >= '0' && peek() <= '9') ++p_;
    }
    const std::string text(t_.substr(start, p_ - start));
    Value v;
    v.kind = Kind::Number;
    v.num = std::strtod(text.c_str(), nullptr);
    if (integral) {
      const bool neg = text[0] == '-';
      // exact, overflow-checked decimal conversion
      uint64_t mag = 0;
      bool overflow = false;
      for (size_t i = neg ? 1 : 0; i < text.size(); ++i) {
        const uint64_t d = static_cast<uint64_t>(text[i] - '0');
        if (mag > (UINT64_MAX - d) / 10) { overflow = true; break; }
        mag = mag * 10 + d;
      }
      if (!overflow) {
        if (!neg) {
          v.is_uint = true;
          v.u64 = mag;
          if (mag <= static_cast<uint64_t>(INT64_MAX)) { v.is_int = true; v.i64 = static_cast<int64_t>(mag); }
        } else if (mag <= static_cast<uint64_t>(INT64_MAX) + 1) {
          v.is_int = true;
          v.i64 = mag == static_cast<uint64_t>(INT64_MAX) + 1 ? INT64_MIN : -static_cast<int64_t>(mag);
        }
      }
    }
    return v;
  }
};

void dump_string(std::string& o, const std::string& s) {
  o += '"';
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == '"') o += "\\\"";
    else if (c == '\\') o += "\\\\";
    else if (c == '\n') o += "\\n";
    else if (c == '\t') o += "\\t";
    else if (c == '\r') o += "\\r";
    else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      o += buf;
    } else o += c;
  }
  o += '"';
}

void dump_value(std::string& o, const Value& v, int indent, int level) {
  auto nl = [&](int lv) {
    if (indent < 0) return;
    o += '\n';
    o.append(static_cast<size_t>(indent * lv), ' ');
  };
  switch (v.kind) {
    case Kind::Null: o += "null"; break;
    case Kind::Bool: o += v.b ? "true" : "false"; break;
    case Kind::Number: {
      if (v.is_int) o += std::to_string(v.i64);
      else if (v.is_uint) o += std::to_string(v.u64);
      else if (!std::isfinite(v.num)) o += "null";
      else {
        char buf[40];
        std::snprintf(buf, sizeof buf, "%.17g", v.num);
        // prefer the shortest text that reads back exactly
        for (int prec = 6; prec <= 17; ++prec) {
          char b2[40];
          std::snprintf(b2, sizeof b2, "%.*g", prec, v.num);
          if (std::strtod(b2, nullptr) == v.num) { std::snprintf(buf, sizeof buf, "%s", b2); break; }
        }
        o += buf;
      }
      break;
    }
    case Kind::String: dump_string(o, v.str); break;
    case Kind::Array:
      o += '[';
      for (size_t i = 0; i < v.arr.size(); ++i) {
        if (i) o += indent < 0 ? "," : ",";
        nl(level + 1);
        dump_value(o, v.arr[i], indent, level + 1);
      }
      if (!v.arr.empty()) nl(level);
      o += ']';
      break;
    case Kind::Object:
      o += '{';
      for (size_t i = 0; i < v.obj.size(); ++i) {
        if (i) o += ",";
        nl(level + 1);
        dump_string(o, v.obj[i].first);
        o += indent < 0 ? ":" : ": ";
        dump_value(o, v.obj[i].second, indent, level + 1);
      }
      if (!v.obj.empty()) nl(level);
      o += '}';
      break;
  }
}

}  // namespace

Value parse(std::string_view text, const std::string& what, int max_depth) {
  return Parser(text, what, max_depth).run();
}

std::string dump(const Value& v, int indent) {
  std::string o;
  dump_value(o, v, indent, 0);
  return o;
}

}  // namespace fp4moe::json
