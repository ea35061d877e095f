// The hybrid crossover: the tune file (read, write) and where a layer's crossover comes from.
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "fp4moe/select.hpp"

namespace fp4moe {

std::string gpu_key(const std::string& name) {
  std::string k = name;
  for (char& c : k)
    if (c == ' ' || c == '\t') c = '_';
  return k.empty() ? "unknown-gpu" : k;
}

TuneEntry tune_entry(const std::string& gpu_name, const MoeSpec& spec, int64_t crossover) {
  TuneEntry e;
  e.gpu = gpu_key(gpu_name);
  e.hidden = spec.hidden;
  e.inter = spec.inter;
  e.experts = spec.experts;
  e.topk = spec.topk;
  e.activation = spec.activation;
  e.mode = spec.mode;
  e.crossover = crossover;
  return e;
}

std::string tune_file_path() {
  if (const char* p = std::getenv("FP4MOE_TUNE_FILE"); p && *p) return p;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/fp4moe/crossover.txt";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/fp4moe/crossover.txt";
  return "fp4moe-crossover.txt";
}

namespace {

int64_t parse_int(const std::string& s, const std::string& where, const char* field) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(s, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != s.size()) throw Error(where + ": " + field + ": expected an integer, got \"" + s + "\"");
  return v;
}

bool same_key(const TuneEntry& a, const TuneEntry& b) {
  return a.gpu == b.gpu && a.hidden == b.hidden && a.inter == b.inter && a.experts == b.experts && a.topk == b.topk &&
         a.activation == b.activation && a.mode == b.mode;
}

void check_range(int64_t v, const std::string& source) {
  if (v < 1 || v > kMaxCrossover)
    throw Error(detail::concat(source, ": expected a crossover in 1..", kMaxCrossover, " tokens, got ", v));
}

}  // namespace

std::vector<TuneEntry> read_tune_file(const std::string& path) {
  std::vector<TuneEntry> out;
  std::ifstream f(path);
  if (!f) return out;
  std::string line;
  int lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (auto h = line.find('#'); h != std::string::npos) line.resize(h);
    std::istringstream is(line);
    std::vector<std::string> tok;
    for (std::string t; is >> t;) tok.push_back(t);
    if (tok.empty()) continue;
    const std::string where = path + ":" + std::to_string(lineno);
    if (tok.size() != 8)
      throw Error(detail::concat(where, ": expected 8 fields (gpu H I E k activation mode crossover), got ",
                                 tok.size()));
    TuneEntry e;
    e.gpu = tok[0];
    e.hidden = parse_int(tok[1], where, "H");
    e.inter = parse_int(tok[2], where, "I");
    e.experts = parse_int(tok[3], where, "E");
    e.topk = parse_int(tok[4], where, "k");
    try {
      e.activation = parse_activation(tok[5]);
      e.mode = parse_mode(tok[6]);
    } catch (const Error& err) {
      throw Error(where + ": " + err.what());
    }
    e.crossover = parse_int(tok[7], where, "crossover");
    check_range(e.crossover, where);
    for (auto& old : out)
      if (same_key(old, e)) old.crossover = e.crossover, e.gpu.clear();
    if (!e.gpu.empty()) out.push_back(e);
  }
  return out;
}

void write_tune_entry(const std::string& path, const TuneEntry& e) {
  check_range(e.crossover, "crossover");
  std::vector<TuneEntry> all = read_tune_file(path);
  bool replaced = false;
  for (auto& old : all)
    if (same_key(old, e)) old.crossover = e.crossover, replaced = true;
  if (!replaced) all.push_back(e);
  const std::filesystem::path p(path);
  if (p.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(p.parent_path(), ec);
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    if (!f) throw Error("tune file: expected a writable path, got \"" + path + "\"");
    f << "# fp4moe hybrid crossover (tokens): calls with T < crossover run cuda-decode, others cuda-prefill.\n"
         "# Written by `fp4moe tune`. Fields: gpu H I E k activation mode crossover\n";
    for (const auto& x : all)
      f << gpu_key(x.gpu) << ' ' << x.hidden << ' ' << x.inter << ' ' << x.experts << ' ' << x.topk << ' '
        << to_string(x.activation) << ' ' << to_string(x.mode) << ' ' << x.crossover << '\n';
    if (!f) throw Error("tune file: writing \"" + tmp + "\" failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw Error("tune file: renaming \"" + tmp + "\" to \"" + path + "\" failed: " + ec.message());
}

Crossover resolve_crossover(const MoeSpec& spec, const GpuInfo* gpu, int64_t override_tokens) {
  if (override_tokens > 0) {
    check_range(override_tokens, "crossover (requested)");
    return {override_tokens, "requested"};
  }
  if (override_tokens < 0) check_range(override_tokens, "crossover (requested)");
  if (const char* env = std::getenv("FP4MOE_CROSSOVER"); env && *env) {
    const int64_t v = parse_int(env, "FP4MOE_CROSSOVER", "value");
    check_range(v, "FP4MOE_CROSSOVER");
    return {v, "FP4MOE_CROSSOVER"};
  }
  if (gpu) {
    const std::string path = tune_file_path();
    const TuneEntry key = tune_entry(gpu->name, spec);
    for (const auto& e : read_tune_file(path))
      if (same_key(e, key)) return {e.crossover, "tune file " + path};
  }
  return {kDefaultCrossover, "built-in default"};
}

}  // namespace fp4moe
