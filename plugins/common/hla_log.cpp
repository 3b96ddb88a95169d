// Log sinks of plugins/common (hla_log.h).
#include "hla_log.h"

#include <cstdio>
#include <mutex>

namespace hla {
namespace {

std::mutex g_mu;
LogFn g_fn = nullptr;
void* g_user = nullptr;
thread_local LogFn t_fn = nullptr;
thread_local void* t_user = nullptr;
thread_local std::string t_last_error;

}  // namespace

void set_log_sink(LogFn fn, void* user) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_fn = fn;
  g_user = user;
}

ScopedLogSink::ScopedLogSink(LogFn fn, void* user) : prev_fn_(t_fn), prev_user_(t_user) {
  t_fn = fn;
  t_user = user;
}

ScopedLogSink::~ScopedLogSink() {
  t_fn = prev_fn_;
  t_user = prev_user_;
}

void log_message(LogLevel level, const std::string& message) {
  if (t_fn != nullptr) {
    t_fn(t_user, level, message.c_str());
    return;
  }
  LogFn fn;
  void* user;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    fn = g_fn;
    user = g_user;
  }
  if (fn != nullptr) {
    fn(user, level, message.c_str());
    return;
  }
  std::fprintf(stderr, "[hla-deploy] %s: %s\n", level == LogLevel::kError ? "ERROR" : "WARNING", message.c_str());
  std::fflush(stderr);
}

const char* last_error_message() { return t_last_error.c_str(); }
void set_last_error_message(const std::string& message) { t_last_error = message; }

}  // namespace hla
