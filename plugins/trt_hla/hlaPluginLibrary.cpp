// Entry points of the HLARecurrentStep plugin library, as TensorRT's plugin registry expects them
// from a dynamically loaded library (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins):
//   extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);
//   extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
// Only these two symbols are exported (exports.map).
#include <cstdio>
#include <mutex>

#include "hla_log.h"
#include "hlaRecurrentStepPlugin.h"

#define HLA_TRT_EXPORT __attribute__((visibility("default")))

namespace hla {
namespace trt {
namespace {

std::mutex gLoggerMutex;
nvinfer1::ILoggerFinder* gLoggerFinder = nullptr;

char const* severityName(nvinfer1::ILogger::Severity s) {
  switch (s) {
    case nvinfer1::ILogger::Severity::kINTERNAL_ERROR: return "INTERNAL_ERROR";
    case nvinfer1::ILogger::Severity::kERROR: return "ERROR";
    case nvinfer1::ILogger::Severity::kWARNING: return "WARNING";
    case nvinfer1::ILogger::Severity::kINFO: return "INFO";
    case nvinfer1::ILogger::Severity::kVERBOSE: return "VERBOSE";
  }
  return "?";
}

// plugins/common's messages (the AOT launcher's one warning per configuration without kernels)
// go to TensorRT's logger.
void commonLogSink(void*, hla::LogLevel level, char const* message) {
  log(level == hla::LogLevel::kError ? nvinfer1::ILogger::Severity::kERROR : nvinfer1::ILogger::Severity::kWARNING,
      message);
}

void installCommonLogSink() {
  static std::once_flag once;
  std::call_once(once, [] { hla::set_log_sink(&commonLogSink, nullptr); });
}

}  // namespace

void set_logger_finder(nvinfer1::ILoggerFinder* finder) noexcept {
  std::lock_guard<std::mutex> lock(gLoggerMutex);
  gLoggerFinder = finder;
}

void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept {
  nvinfer1::ILogger* logger = nullptr;
  {
    std::lock_guard<std::mutex> lock(gLoggerMutex);
    if (gLoggerFinder != nullptr) logger = gLoggerFinder->findLogger();
  }
  if (logger != nullptr) {
    logger->log(severity, message.c_str());
  } else {
    std::fprintf(stderr, "[hla_trt_plugin] %s: %s\n", severityName(severity), message.c_str());
  }
}

}  // namespace trt
}  // namespace hla

extern "C" HLA_TRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  hla::trt::set_logger_finder(finder);
  hla::trt::installCommonLogSink();
}

extern "C" HLA_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  try {  // the creator's constructor allocates: no exception may cross this C entry point
    hla::trt::installCommonLogSink();
    static hla::trt::HLARecurrentStepPluginCreator sCreator;
    static nvinfer1::IPluginCreatorInterface* const kCreators[] = {&sCreator};
    nbCreators = 1;
    return kCreators;
  } catch (...) {
    hla::trt::log(nvinfer1::ILogger::Severity::kERROR, "HLARecurrentStep: could not create the plugin creator");
  }
  nbCreators = 0;
  return nullptr;
}
