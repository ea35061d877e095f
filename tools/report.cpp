// fp4moe CLI: the accuracy-and-time report shared by `run` (presets) and `run --checkpoint`.
#include <cstdio>
#include <fstream>

#include "cli.hpp"

namespace fp4moe::cli {

void print_report(const std::string& against, const std::vector<ModeResult>& rows) {
  bool notes = false;
  for (const auto& r : rows) notes |= !r.note.empty();
  std::printf("\nerror against %s:\n", against.c_str());
  std::printf("  %-6s  %-14s  %11s  %11s  %10s  %10s%s\n", "mode", "backend", "rel L2", "max abs", "cosine", "time ms",
              notes ? "  note" : "");
  for (const auto& r : rows)
    std::printf("  %-6s  %-14s  %11.3e  %11.3e  %10.6f  %10.2f%s%s\n", to_string(r.mode), r.backend.c_str(),
                r.err.rel_l2, r.err.max_abs, r.err.cosine, r.ms, notes ? "  " : "", r.note.c_str());
}

std::string results_json(const std::vector<ModeResult>& rows) {
  std::string arr = "[";
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    Json j;
    j.str("mode", to_string(r.mode)).str("backend", r.backend);
    if (!r.why.empty()) j.str("why", r.why);
    if (!r.note.empty()) j.str("note", r.note);
    j.num("rel_l2", r.err.rel_l2).num("max_abs", r.err.max_abs).num("cosine", r.err.cosine).num("time_ms", r.ms);
    arr += (i ? ", " : "") + j.dump();
  }
  return arr + "]";
}

void write_json(const std::string& path, const std::string& doc) {
  std::ofstream f(path);
  if (!f) throw Error("--json: expected a writable file, got \"" + path + "\"");
  f << doc << "\n";
  std::printf("\nwrote %s\n", path.c_str());
}

}  // namespace fp4moe::cli
