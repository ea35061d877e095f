// fp4moe CLI: small shared helpers (argument parsing, progress, JSON output).
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "fp4moe/error.hpp"
#include "fp4moe/metrics.hpp"
#include "fp4moe/moe.hpp"

namespace fp4moe::cli {

// "--name value" and "--flag" options; anything not declared is an error naming it.
class Args {
 public:
  Args(const std::vector<std::string>& argv, const std::map<std::string, bool>& options_takes_value) {
    for (size_t i = 0; i < argv.size(); ++i) {
      const std::string& a = argv[i];
      auto it = options_takes_value.find(a);
      if (it == options_takes_value.end()) {
        std::string valid;
        for (auto& [k, v] : options_takes_value) valid += (valid.empty() ? "" : ", ") + k;
        throw Error("option: expected one of " + valid + ", got \"" + a + "\"");
      }
      if (it->second) {
        if (i + 1 >= argv.size()) throw Error(a + ": expected a value, got none");
        values_[a] = argv[++i];
      } else {
        values_[a] = "1";
      }
    }
  }
  bool has(const std::string& k) const { return values_.count(k) > 0; }
  std::string str(const std::string& k, const std::string& def) const {
    auto it = values_.find(k);
    return it == values_.end() ? def : it->second;
  }
  int64_t integer(const std::string& k, int64_t def, int64_t lo, int64_t hi) const {
    auto it = values_.find(k);
    if (it == values_.end()) return def;
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(it->second, &used);
    } catch (...) {
      used = 0;
    }
    if (used != it->second.size() || it->second.empty())
      throw Error(k + ": expected an integer, got \"" + it->second + "\"");
    if (v < lo || v > hi) throw Error(detail::concat(k, ": expected ", lo, "..", hi, ", got ", v));
    return v;
  }

 private:
  std::map<std::string, std::string> values_;
};

// Progress on stderr in ~10% steps, for long loops.
class Progress {
 public:
  explicit Progress(std::string what) : what_(std::move(what)), t0_(std::chrono::steady_clock::now()) {}
  void operator()(int64_t done, int64_t total) {
    std::lock_guard<std::mutex> lk(mu_);
    const int64_t step = done * 10 / (total ? total : 1);
    if (step <= last_ && done != total) return;
    last_ = step;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    std::fprintf(stderr, "  %s: %lld/%lld (%.1f s)\n", what_.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total), s);
  }

 private:
  std::string what_;
  std::chrono::steady_clock::time_point t0_;
  std::mutex mu_;
  int64_t last_ = -1;
};

// A minimal JSON object writer (values are numbers, strings, booleans or raw JSON).
class Json {
 public:
  Json& num(const std::string& k, double v) {
    std::ostringstream os;
    os.precision(9);
    os << v;
    return raw(k, os.str());
  }
  Json& str(const std::string& k, const std::string& v) { return raw(k, quote(v)); }
  Json& boolean(const std::string& k, bool v) { return raw(k, v ? "true" : "false"); }
  Json& raw(const std::string& k, const std::string& v) {
    fields_.push_back(quote(k) + ": " + v);
    return *this;
  }
  std::string dump() const {
    std::string s = "{";
    for (size_t i = 0; i < fields_.size(); ++i) s += (i ? ", " : "") + fields_[i];
    return s + "}";
  }
  static std::string quote(const std::string& v) {
    std::string o = "\"";
    for (char c : v) {
      if (c == '"' || c == '\\') o += '\\', o += c;
      else if (c == '\n') o += "\\n";
      else if (static_cast<unsigned char>(c) < 0x20) o += ' ';
      else o += c;
    }
    return o + "\"";
  }

 private:
  std::vector<std::string> fields_;
};

// One row of the accuracy-and-time report (report.cpp).
struct ModeResult {
  Mode mode = Mode::W4A16;
  std::string backend, why, note;
  ErrorStats err;
  double ms = 0;
};
void print_report(const std::string& against, const std::vector<ModeResult>& rows);
std::string results_json(const std::vector<ModeResult>& rows);  // a JSON array
void write_json(const std::string& path, const std::string& doc);

int cmd_run(const std::vector<std::string>& args);
int cmd_info(const std::vector<std::string>& args);
int cmd_tune(const std::vector<std::string>& args);
// checkpoints (cmd_inspect.cpp, cmd_quantize.cpp)
int cmd_inspect(const std::vector<std::string>& args);
int cmd_quantize(const std::vector<std::string>& args);
int cmd_run_checkpoint(const std::vector<std::string>& args);  // run --checkpoint

}  // namespace fp4moe::cli
