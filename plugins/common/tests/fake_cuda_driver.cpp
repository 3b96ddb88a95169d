// A mocked CUDA driver (tests only): a shared library exporting the driver entry points the AOT
// launcher resolves (hla_cuda_driver.cpp), loaded instead of libcuda.so.1 through
// HLA_DEPLOY_CUDA_DRIVER. It touches no GPU and no device memory: every call is checked and
// recorded as one JSON line in a log that tests read back (fake_cuda_log).
//
// Devices: fake_cuda_configure(n, cc[], optin[]) (default: one device, cc 90, opt-in 232448 B).
// Contexts: one primary context per device (fake_cuda_context(dev)); each thread starts with
// device 0's context current; fake_cuda_set_current(ctx). Streams: fake_cuda_stream(ctx) returns
// a handle whose context cuStreamGetCtx reports.
// "Cubins" are text, never real code:
//     FAKECUBIN
//     function <name> <param size>,<param size>,...      (one line per function)
//     static_smem <bytes>                                  (optional, every function)
// anything else is refused by cuModuleLoadData with CUDA_ERROR_INVALID_IMAGE (200).
// Failures: fake_cuda_fail("cuModuleLoadData", code) makes that entry point return `code`.
// Options: fake_cuda_set_option("param_info", 0) makes cuFuncGetParamInfo return NOT_SUPPORTED;
// ("load_delay_ms", n) sleeps in cuModuleLoadData (widens races for the thread test).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#define FAKE_API extern "C" __attribute__((visibility("default")))

namespace {

using Result = int;
constexpr Result kOk = 0, kInvalidValue = 1, kNotInitialized = 3, kInvalidContext = 201, kInvalidImage = 200,
                 kInvalidHandle = 400, kNotFound = 500, kNotSupported = 801;

struct Function {
  std::string name;
  std::vector<size_t> params;
  int static_smem = 0;
  int max_dynamic = 48 * 1024;
  int ctx = 0;
};
struct Module {
  int ctx = 0;
  std::vector<std::unique_ptr<Function>> functions;
};
struct Device {
  int cc = 90, optin = 232448;
};

struct Fake {
  std::mutex mu;
  bool initialized = false;
  std::vector<Device> devices{Device()};
  std::map<std::string, Result> fail;
  std::map<std::string, long long> options{{"param_info", 1}, {"load_delay_ms", 0}};
  std::vector<std::unique_ptr<Module>> modules;
  std::map<uintptr_t, int> streams;  // handle -> context index
  uintptr_t next_stream = 0x7000;
  std::string log;
  std::string log_copy;
};

Fake& fake() {
  static Fake* f = new Fake();
  return *f;
}

// Context handles: 0x1000 + 0x100 * index (index = device: one primary context per device).
void* ctx_handle(int i) { return reinterpret_cast<void*>(uintptr_t(0x1000 + 0x100 * i)); }
int ctx_index(void* h) {
  const uintptr_t x = reinterpret_cast<uintptr_t>(h);
  if (x < 0x1000 || (x - 0x1000) % 0x100 != 0) return -1;
  const int i = int((x - 0x1000) / 0x100);
  return i < int(fake().devices.size()) ? i : -1;
}
thread_local int t_current = 0;  // index; -1: none

Result failure(Fake& f, const char* name) {
  auto it = f.fail.find(name);
  return it == f.fail.end() ? kOk : it->second;
}

void record(Fake& f, const std::string& line) { f.log += line + "\n"; }

int stream_ctx(Fake& f, void* stream) {
  const uintptr_t h = reinterpret_cast<uintptr_t>(stream);
  if (h <= 2) return t_current;
  auto it = f.streams.find(h);
  return it == f.streams.end() ? -2 : it->second;
}

}  // namespace

// ---- control (tests) ----------------------------------------------------------------------------

FAKE_API void fake_cuda_reset() {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  f.devices.assign(1, Device());
  f.fail.clear();
  f.options = {{"param_info", 1}, {"load_delay_ms", 0}};
  f.log.clear();
  f.streams.clear();
  // modules stay allocated: the launcher under test may still hold their handles
}

FAKE_API void fake_cuda_configure(int n, const int* cc, const int* optin) {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  f.devices.assign(size_t(n), Device());
  for (int i = 0; i < n; ++i) {
    f.devices[size_t(i)].cc = cc[i];
    f.devices[size_t(i)].optin = optin[i];
  }
}

FAKE_API void fake_cuda_fail(const char* name, int code) {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  if (code == 0) f.fail.erase(name);
  else f.fail[name] = code;
}

FAKE_API void fake_cuda_set_option(const char* name, long long value) {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  f.options[name] = value;
}

FAKE_API void* fake_cuda_context(int device) { return ctx_handle(device); }

FAKE_API void fake_cuda_set_current(void* ctx) { t_current = ctx == nullptr ? -1 : ctx_index(ctx); }

FAKE_API void* fake_cuda_stream(void* ctx) {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  const uintptr_t h = f.next_stream;
  f.next_stream += 0x10;
  f.streams[h] = ctx_index(ctx);
  return reinterpret_cast<void*>(h);
}

// The log since the last reset / take: JSON lines. Clears it.
FAKE_API const char* fake_cuda_take_log() {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  f.log_copy.swap(f.log);
  f.log.clear();
  return f.log_copy.c_str();
}

// ---- the driver entry points ------------------------------------------------------------------

FAKE_API Result cuInit(unsigned flags) {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  if (Result r = failure(f, "cuInit")) return r;
  if (flags != 0) return kInvalidValue;
  f.initialized = true;
  record(f, "{\"call\": \"cuInit\"}");
  return kOk;
}

FAKE_API Result cuDriverGetVersion(int* v) {
  *v = 12080;
  return kOk;
}

FAKE_API Result cuGetErrorName(Result r, const char** out) {
  switch (r) {
    case kOk: *out = "CUDA_SUCCESS"; return kOk;
    case kInvalidValue: *out = "CUDA_ERROR_INVALID_VALUE"; return kOk;
    case kNotInitialized: *out = "CUDA_ERROR_NOT_INITIALIZED"; return kOk;
    case kInvalidImage: *out = "CUDA_ERROR_INVALID_IMAGE"; return kOk;
    case kInvalidContext: *out = "CUDA_ERROR_INVALID_CONTEXT"; return kOk;
    case kInvalidHandle: *out = "CUDA_ERROR_INVALID_HANDLE"; return kOk;
    case kNotFound: *out = "CUDA_ERROR_NOT_FOUND"; return kOk;
    case 2: *out = "CUDA_ERROR_OUT_OF_MEMORY"; return kOk;
    case 209: *out = "CUDA_ERROR_NO_BINARY_FOR_GPU"; return kOk;
    case kNotSupported: *out = "CUDA_ERROR_NOT_SUPPORTED"; return kOk;
  }
  *out = nullptr;
  return kInvalidValue;
}

FAKE_API Result cuGetErrorString(Result r, const char** out) {
  *out = r == kInvalidImage ? "device kernel image is invalid" : (r == 2 ? "out of memory" : nullptr);
  return *out ? kOk : kInvalidValue;
}

FAKE_API Result cuDeviceGet(int* dev, int ordinal) {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  if (!f.initialized) return kNotInitialized;
  if (ordinal < 0 || ordinal >= int(f.devices.size())) return kInvalidValue;
  *dev = ordinal;
  return kOk;
}

FAKE_API Result cuDeviceGetAttribute(int* out, int attr, int dev) {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  if (Result r = failure(f, "cuDeviceGetAttribute")) return r;
  if (dev < 0 || dev >= int(f.devices.size())) return kInvalidValue;
  const Device& d = f.devices[size_t(dev)];
  switch (attr) {
    case 75: *out = d.cc / 10; break;
    case 76: *out = d.cc % 10; break;
    case 97: *out = d.optin; break;
    default: *out = 0;
  }
  return kOk;
}

FAKE_API Result cuCtxGetCurrent(void** ctx) {
  *ctx = t_current < 0 ? nullptr : ctx_handle(t_current);
  return kOk;
}

FAKE_API Result cuCtxGetDevice(int* dev) {
  if (t_current < 0) return kInvalidContext;
  *dev = t_current;
  return kOk;
}

FAKE_API Result cuCtxGetId(void* ctx, unsigned long long* id) {
  const int i = ctx_index(ctx);
  if (i < 0) return kInvalidContext;
  *id = 1000 + unsigned(i);
  return kOk;
}

thread_local std::vector<int> t_stack;

FAKE_API Result cuCtxPushCurrent_v2(void* ctx) {
  const int i = ctx_index(ctx);
  if (i < 0) return kInvalidContext;
  t_stack.push_back(t_current);
  t_current = i;
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  record(f, "{\"call\": \"cuCtxPushCurrent\", \"ctx\": " + std::to_string(1000 + i) + "}");
  return kOk;
}

FAKE_API Result cuCtxPopCurrent_v2(void** ctx) {
  if (t_stack.empty()) return kInvalidContext;
  if (ctx) *ctx = ctx_handle(t_current);
  t_current = t_stack.back();
  t_stack.pop_back();
  return kOk;
}

FAKE_API Result cuStreamGetCtx(void* stream, void** ctx) {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  const int i = stream_ctx(f, stream);
  if (i == -2) return kInvalidHandle;
  *ctx = i < 0 ? nullptr : ctx_handle(i);
  return kOk;
}

FAKE_API Result cuModuleLoadData(void** module, const void* image) {
  long long delay = 0;
  {
    Fake& f = fake();
    std::lock_guard<std::mutex> lock(f.mu);
    delay = f.options["load_delay_ms"];
  }
  if (delay > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay));
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  if (Result r = failure(f, "cuModuleLoadData")) return r;
  if (t_current < 0) return kInvalidContext;
  const char* text = static_cast<const char*>(image);
  if (std::strncmp(text, "FAKECUBIN\n", 10) != 0) return kInvalidImage;
  std::unique_ptr<Module> m(new Module());
  m->ctx = t_current;
  std::istringstream in(text + 10);
  std::string word, first;
  int static_smem = 0;
  while (in >> word) {
    if (word == "function") {
      std::unique_ptr<Function> fn(new Function());
      std::string sizes;
      in >> fn->name >> sizes;
      std::stringstream ss(sizes);
      std::string s;
      while (std::getline(ss, s, ','))
        if (!s.empty()) fn->params.push_back(size_t(std::stoul(s)));
      fn->ctx = t_current;
      if (first.empty()) first = fn->name;
      m->functions.push_back(std::move(fn));
    } else if (word == "static_smem") {
      in >> static_smem;
    } else {
      return kInvalidImage;
    }
  }
  for (auto& fn : m->functions) fn->static_smem = static_smem;
  record(f, "{\"call\": \"cuModuleLoadData\", \"ctx\": " + std::to_string(1000 + t_current) + ", \"function\": \"" +
                first + "\"}");
  *module = m.get();
  f.modules.push_back(std::move(m));
  return kOk;
}

FAKE_API Result cuModuleGetFunction(void** fn, void* module, const char* name) {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  if (Result r = failure(f, "cuModuleGetFunction")) return r;
  Module* m = static_cast<Module*>(module);
  for (auto& x : m->functions) {
    if (x->name == name) {
      *fn = x.get();
      return kOk;
    }
  }
  return kNotFound;
}

FAKE_API Result cuFuncGetAttribute(int* out, int attr, void* fn) {
  const Function* x = static_cast<const Function*>(fn);
  *out = attr == 1 ? x->static_smem : (attr == 8 ? x->max_dynamic : 0);
  return kOk;
}

FAKE_API Result cuFuncSetAttribute(void* fn, int attr, int value) {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  if (Result r = failure(f, "cuFuncSetAttribute")) return r;
  Function* x = static_cast<Function*>(fn);
  if (attr == 8) {
    if (value > f.devices[size_t(x->ctx)].optin - x->static_smem) return kInvalidValue;
    x->max_dynamic = value;
  }
  record(f, "{\"call\": \"cuFuncSetAttribute\", \"function\": \"" + x->name + "\", \"attr\": " + std::to_string(attr) +
                ", \"value\": " + std::to_string(value) + "}");
  return kOk;
}

FAKE_API Result cuFuncSetCacheConfig(void* fn, int config) {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  if (Result r = failure(f, "cuFuncSetCacheConfig")) return r;
  record(f, "{\"call\": \"cuFuncSetCacheConfig\", \"function\": \"" + static_cast<Function*>(fn)->name +
                "\", \"config\": " + std::to_string(config) + "}");
  return kOk;
}

FAKE_API Result cuFuncGetParamInfo(void* fn, size_t index, size_t* offset, size_t* size) {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  if (f.options["param_info"] == 0) return kNotSupported;
  const Function* x = static_cast<const Function*>(fn);
  if (index >= x->params.size()) return kInvalidValue;
  size_t off = 0;
  for (size_t i = 0; i <= index; ++i) {
    off = (off + x->params[i] - 1) / x->params[i] * x->params[i];
    if (i < index) off += x->params[i];
  }
  *offset = off;
  *size = x->params[index];
  return kOk;
}

FAKE_API Result cuLaunchKernel(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                               unsigned bz, unsigned smem, void* stream, void** params, void** extra) {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  if (Result r = failure(f, "cuLaunchKernel")) return r;
  const Function* x = static_cast<const Function*>(fn);
  const int sc = stream_ctx(f, stream);
  if (sc != x->ctx) return kInvalidHandle;  // a function of another context
  if (extra != nullptr || (params == nullptr && !x->params.empty())) return kInvalidValue;
  if (int(smem) > x->max_dynamic) return kInvalidValue;  // as the driver: over the function's limit
  std::ostringstream os;
  os << "{\"call\": \"cuLaunchKernel\", \"function\": \"" << x->name << "\", \"ctx\": " << 1000 + x->ctx
     << ", \"grid\": [" << gx << ", " << gy << ", " << gz << "], \"block\": [" << bx << ", " << by << ", " << bz
     << "], \"smem\": " << smem << ", \"stream\": " << reinterpret_cast<uintptr_t>(stream) << ", \"args\": [";
  for (size_t i = 0; i < x->params.size(); ++i) {
    uint64_t v = 0;
    std::memcpy(&v, params[i], x->params[i] < 8 ? x->params[i] : 8);
    os << (i ? ", " : "") << v;
  }
  os << "]}";
  record(f, os.str());
  return kOk;
}

FAKE_API Result cuMemsetD32Async(unsigned long long dst, unsigned value, size_t n, void* stream) {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  if (Result r = failure(f, "cuMemsetD32Async")) return r;
  if (dst % 4 != 0) return kInvalidValue;
  record(f, "{\"call\": \"cuMemsetD32Async\", \"dst\": " + std::to_string(dst) + ", \"value\": " +
                std::to_string(value) + ", \"count\": " + std::to_string(n) + ", \"stream\": " +
                std::to_string(reinterpret_cast<uintptr_t>(stream)) + "}");
  return kOk;
}

FAKE_API Result cuMemcpyDtoDAsync_v2(unsigned long long dst, unsigned long long src, size_t n, void* stream) {
  Fake& f = fake();
  std::lock_guard<std::mutex> lock(f.mu);
  if (Result r = failure(f, "cuMemcpyDtoDAsync")) return r;
  record(f, "{\"call\": \"cuMemcpyDtoDAsync\", \"dst\": " + std::to_string(dst) + ", \"src\": " + std::to_string(src) +
                ", \"bytes\": " + std::to_string(n) + ", \"stream\": " +
                std::to_string(reinterpret_cast<uintptr_t>(stream)) + "}");
  return kOk;
}
