// Where plugins/common reports warnings and errors that are not return values (the AOT launcher's
// one warning per missing configuration, its error messages): a sink the backend installs.
//   - process-wide: set_log_sink (the TensorRT plugin: its ILogger);
//   - for the calls of one thread inside a scope: ScopedLogSink (the ORT op: the kernel
//     context's OrtLogger for the duration of one Compute);
//   - neither: stderr, one line per message prefixed "[hla-deploy] WARNING: " / "ERROR: ".
#pragma once

#include <string>

namespace hla {

enum class LogLevel { kError = 0, kWarning = 1 };
using LogFn = void (*)(void* user, LogLevel level, const char* message);

void set_log_sink(LogFn fn, void* user);  // fn == nullptr: back to stderr

class ScopedLogSink {
 public:
  ScopedLogSink(LogFn fn, void* user);
  ~ScopedLogSink();
  ScopedLogSink(const ScopedLogSink&) = delete;
  ScopedLogSink& operator=(const ScopedLogSink&) = delete;

 private:
  LogFn prev_fn_;
  void* prev_user_;
};

void log_message(LogLevel level, const std::string& message);

// The message of the last failed hla::forward_cuda on this thread ("" after a successful call):
// backends put it into their error status / log.
const char* last_error_message();
void set_last_error_message(const std::string& message);

}  // namespace hla
