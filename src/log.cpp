#include "log.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "fp4moe/error.hpp"

namespace fp4moe {

namespace {

LogLevel initial_level() {
  if (const char* env = std::getenv("FP4MOE_LOG_LEVEL")) {
    try {
      return parse_log_level(env);
    } catch (const Error& e) {
      // A misspelled variable must not silently do nothing: say so once, keep the default.
      std::fprintf(stderr, "[fp4moe warn] FP4MOE_LOG_LEVEL ignored: %s\n", e.what());
    }
  }
  return LogLevel::Info;
}

std::atomic<int>& level_ref() {
  static std::atomic<int> level{static_cast<int>(initial_level())};
  return level;
}

std::mutex& sink_mutex() {
  static std::mutex mu;
  return mu;
}
LogSink& sink_ref() {
  static LogSink sink;
  return sink;
}

}  // namespace

const char* to_string(LogLevel l) {
  switch (l) {
    case LogLevel::Trace: return "trace";
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warn: return "warn";
    case LogLevel::Error: return "error";
    case LogLevel::Off: return "off";
  }
  return "?";
}

LogLevel parse_log_level(const std::string& s) {
  for (LogLevel l : {LogLevel::Trace, LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error, LogLevel::Off})
    if (s == to_string(l)) return l;
  if (s == "warning") return LogLevel::Warn;
  throw_arg_error("log level", "one of trace, debug, info, warn, error, off", "\"" + s + "\"");
}

void set_log_level(LogLevel level) { level_ref().store(static_cast<int>(level)); }
LogLevel log_level() { return static_cast<LogLevel>(level_ref().load()); }

void set_log_sink(LogSink sink) {
  std::lock_guard<std::mutex> lk(sink_mutex());
  sink_ref() = std::move(sink);
}

namespace detail {

bool log_enabled(LogLevel level) {
  return level != LogLevel::Off && static_cast<int>(level) >= level_ref().load();
}

void log(LogLevel level, const std::string& message) {
  if (!log_enabled(level)) return;
  std::lock_guard<std::mutex> lk(sink_mutex());
  if (sink_ref()) {
    sink_ref()(level, message);
    return;
  }
  std::fprintf(stderr, "[fp4moe %s] %s\n", to_string(level), message.c_str());
}

}  // namespace detail
}  // namespace fp4moe
