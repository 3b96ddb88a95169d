// Loads the CUDA driver API (hla_cuda_driver.h) with dlopen; no CUDA headers, no link to libcuda.
#include "hla_cuda_driver.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

namespace hla {
namespace cu {
namespace {

struct Loaded {
  Api api;
  std::string error;  // empty when loaded
};

template <typename Fn>
bool resolve(void* lib, const char* name, Fn* out, bool required, std::string* error) {
  *out = reinterpret_cast<Fn>(dlsym(lib, name));
  if (*out == nullptr && required && error->empty()) *error = std::string("symbol ") + name + " not found";
  return *out != nullptr || !required;
}

Loaded load() {
  Loaded L;
  const char* env = std::getenv("HLA_DEPLOY_CUDA_DRIVER");
  const std::string name = (env != nullptr && env[0] != '\0') ? env : "libcuda.so.1";
  void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    L.error = "could not load the CUDA driver " + name + " (" + (why ? why : "dlopen failed") + ")";
    return L;
  }
  Api& a = L.api;
  std::string missing;
  resolve(lib, "cuInit", &a.Init, true, &missing);
  resolve(lib, "cuDriverGetVersion", &a.DriverGetVersion, true, &missing);
  resolve(lib, "cuGetErrorName", &a.GetErrorName, true, &missing);
  resolve(lib, "cuGetErrorString", &a.GetErrorString, true, &missing);
  resolve(lib, "cuDeviceGet", &a.DeviceGet, true, &missing);
  resolve(lib, "cuDeviceGetAttribute", &a.DeviceGetAttribute, true, &missing);
  resolve(lib, "cuCtxGetCurrent", &a.CtxGetCurrent, true, &missing);
  resolve(lib, "cuCtxGetDevice", &a.CtxGetDevice, true, &missing);
  resolve(lib, "cuCtxPushCurrent_v2", &a.CtxPushCurrent, true, &missing);
  resolve(lib, "cuCtxPopCurrent_v2", &a.CtxPopCurrent, true, &missing);
  resolve(lib, "cuCtxGetId", &a.CtxGetId, false, &missing);
  resolve(lib, "cuStreamGetCtx", &a.StreamGetCtx, true, &missing);
  resolve(lib, "cuModuleLoadData", &a.ModuleLoadData, true, &missing);
  resolve(lib, "cuModuleGetFunction", &a.ModuleGetFunction, true, &missing);
  resolve(lib, "cuFuncGetAttribute", &a.FuncGetAttribute, true, &missing);
  resolve(lib, "cuFuncSetAttribute", &a.FuncSetAttribute, true, &missing);
  resolve(lib, "cuFuncSetCacheConfig", &a.FuncSetCacheConfig, true, &missing);
  resolve(lib, "cuFuncGetParamInfo", &a.FuncGetParamInfo, false, &missing);
  resolve(lib, "cuLaunchKernel", &a.LaunchKernel, true, &missing);
  resolve(lib, "cuMemsetD32Async", &a.MemsetD32Async, true, &missing);
  resolve(lib, "cuMemcpyDtoDAsync_v2", &a.MemcpyDtoDAsync, true, &missing);
  if (!missing.empty()) {
    L.error = "the CUDA driver " + name + " is too old or not a CUDA driver: " + missing;
    return L;  // the library stays loaded (never unloaded: other code may hold its symbols)
  }
  const Result r = a.Init(0);
  if (r != kSuccess) L.error = "cuInit(0) failed in " + name + ": " + error_text(a, r);
  return L;
}

}  // namespace

const Api* driver(std::string* error) {
  static std::once_flag once;
  static Loaded* loaded = nullptr;  // never freed: used until the process exits
  std::call_once(once, [] { loaded = new Loaded(load()); });
  if (!loaded->error.empty()) {
    if (error != nullptr) *error = loaded->error;
    return nullptr;
  }
  return &loaded->api;
}

std::string error_text(const Api& api, Result r) {
  const char* name = nullptr;
  const char* what = nullptr;
  if (api.GetErrorName != nullptr && api.GetErrorName(r, &name) != kSuccess) name = nullptr;
  if (api.GetErrorString != nullptr && api.GetErrorString(r, &what) != kSuccess) what = nullptr;
  std::string s = name != nullptr ? name : "CUresult " + std::to_string(r);
  if (what != nullptr) s += std::string(" (") + what + ")";
  return s;
}

}  // namespace cu
}  // namespace hla
