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
// Real cubins (ELF, EM_CUDA) are read too, as the driver reads them: a function per
// `.text.<name>` section, its parameter sizes from the EIATTR_KPARAM_INFO records of
// `.nv.info.<name>` (by ordinal), its static shared memory from `.nv.shared.<name>` (less the
// block's reserved 1 KB that sm_90 cubins put there, marked by a `.nv.reservedSmem` symbol), its required
// block from EIATTR_REQNTID (cuLaunchKernel with another block: CUDA_ERROR_INVALID_VALUE, as the
// driver). A cubin for another SM than the current context's device is refused with
// CUDA_ERROR_NO_BINARY_FOR_GPU (209); the SM is e_flags bits 0-7 (ELF ABI version < 8) or 8-15.
// Shared memory: without the opt-in a block has 48 KB, static and dynamic together (a function's
// MAX_DYNAMIC_SHARED_SIZE_BYTES starts at 48 KB - its static); cuFuncSetAttribute raises it up to
// the device's opt-in limit - static; a launch asking more dynamic memory fails (INVALID_VALUE).
// The load's log line names the cubin's sm, and its first function's parameter sizes, static
// shared memory and required block (tests compare them with cuobjdump's reading).
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
                 kNoBinaryForGpu = 209, kInvalidHandle = 400, kNotFound = 500, kNotSupported = 801;

struct Function {
  std::string name;
  std::vector<size_t> params;
  int static_smem = 0;
  int max_dynamic = 48 * 1024;  // set at load: 48 KB per block (static + dynamic) without the opt-in
  int ctx = 0;
  unsigned reqntid[3] = {0, 0, 0};  // real cubins: the block the kernel was compiled for (0: any)
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


// ---- real cubins (ELF) ------------------------------------------------------------------------

template <typename T>
bool read_at(const unsigned char* b, uint64_t size, uint64_t off, T* out) {
  if (off > size || size - off < sizeof(T)) return false;
  std::memcpy(out, b + off, sizeof(T));
  return true;
}

// Parses a cubin into `m` (functions, params, static shared memory, reqntid); *sm = its SM.
// The image's size is what its section headers span (the driver gets no size either).
bool parse_cubin(const unsigned char* b, Module* m, int* sm) {
  uint16_t machine = 0, shentsize = 0, shnum = 0, shstrndx = 0;
  uint64_t shoff = 0;
  uint32_t flags = 0;
  const uint64_t head = 64;
  if (b[4] != 2 || !read_at(b, head, 18, &machine) || machine != 190) return false;  // ELF64, EM_CUDA
  read_at(b, head, 0x28, &shoff);
  read_at(b, head, 0x30, &flags);
  read_at(b, head, 0x3A, &shentsize);
  read_at(b, head, 0x3C, &shnum);
  read_at(b, head, 0x3E, &shstrndx);
  if (shentsize != 64 || shnum == 0 || shstrndx >= shnum) return false;
  *sm = b[8] >= 8 ? int((flags >> 8) & 0xff) : int(flags & 0xff);
  const uint64_t size = shoff + uint64_t(shnum) * shentsize;
  struct Sec { uint32_t name, type; uint64_t off, size; uint32_t link; };
  std::vector<Sec> secs(shnum);
  for (uint16_t i = 0; i < shnum; ++i) {
    const uint64_t h = shoff + uint64_t(i) * shentsize;
    read_at(b, size, h, &secs[i].name);
    read_at(b, size, h + 4, &secs[i].type);
    read_at(b, size, h + 24, &secs[i].off);
    read_at(b, size, h + 32, &secs[i].size);
    read_at(b, size, h + 40, &secs[i].link);
  }
  auto name_of = [&](const Sec& s) { return std::string(reinterpret_cast<const char*>(b + secs[shstrndx].off + s.name)); };
  auto find = [&](const std::string& n) -> const Sec* {
    for (const Sec& s : secs)
      if (name_of(s) == n) return &s;
    return nullptr;
  };
  // sm_90 cubins place the block's reserved shared memory (1 KB, the device's
  // RESERVED_SHARED_MEMORY_PER_BLOCK, for the system) at the start of each function's
  // .nv.shared.<name>, marked by a `.nv.reservedSmem.*` symbol: not the function's static shared
  // memory (SHARED_SIZE_BYTES) and not counted against the per-block limits.
  bool reserved_smem = false;
  for (const Sec& s : secs) {
    if (s.type != 2 || s.link >= shnum) continue;  // SHT_SYMTAB; its names in section `link`
    for (uint64_t e = s.off; e + 24 <= s.off + s.size; e += 24) {
      uint32_t name = 0;
      std::memcpy(&name, b + e, 4);
      const char* n = reinterpret_cast<const char*>(b + secs[s.link].off + name);
      if (std::strncmp(n, ".nv.reservedSmem", 16) == 0) reserved_smem = true;
    }
  }
  constexpr int kReservedSmem = 1024;
  for (const Sec& s : secs) {
    const std::string n = name_of(s);
    if (n.compare(0, 6, ".text.") != 0) continue;
    std::unique_ptr<Function> fn(new Function());
    fn->name = n.substr(6);
    if (const Sec* sh = find(".nv.shared." + fn->name)) {
      fn->static_smem = int(sh->size);
      if (reserved_smem) fn->static_smem = fn->static_smem > kReservedSmem ? fn->static_smem - kReservedSmem : 0;
    }
    std::map<uint16_t, size_t> params;  // ordinal -> bytes
    if (const Sec* info = find(".nv.info." + fn->name)) {
      for (uint64_t p = info->off; p + 4 <= info->off + info->size;) {
        const unsigned char format = b[p], attr = b[p + 1];
        uint16_t len = 0;
        std::memcpy(&len, b + p + 2, 2);
        if (format != 4) {  // EIFMT_NVAL / BVAL / HVAL: the value is in these 4 bytes
          p += 4;
          continue;
        }
        const unsigned char* v = b + p + 4;  // EIFMT_SVAL: `len` bytes follow
        if (attr == 0x17 && len >= 12) {    // EIATTR_KPARAM_INFO: index, ordinal, offset, info
          uint16_t ordinal = 0;
          uint32_t word = 0;
          std::memcpy(&ordinal, v + 4, 2);
          std::memcpy(&word, v + 8, 4);
          params[ordinal] = (word >> 18) & 0x3fff;
        } else if (attr == 0x10 && len >= 12) {  // EIATTR_REQNTID: x, y, z
          std::memcpy(fn->reqntid, v, 12);
        }
        p += 4 + len;
      }
    }
    size_t next = 0;
    for (const auto& kv : params) {
      if (kv.first != next++) return false;  // ordinals 0..n-1, each once
      fn->params.push_back(kv.second);
    }
    m->functions.push_back(std::move(fn));
  }
  return !m->functions.empty();
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
    case kNoBinaryForGpu: *out = "CUDA_ERROR_NO_BINARY_FOR_GPU"; return kOk;
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
  std::unique_ptr<Module> m(new Module());
  m->ctx = t_current;
  std::string first, extra;
  if (std::memcmp(text, "\x7f" "ELF", 4) == 0) {
    int sm = 0;
    if (!parse_cubin(static_cast<const unsigned char*>(image), m.get(), &sm)) return kInvalidImage;
    if (sm != f.devices[size_t(t_current)].cc) return kNoBinaryForGpu;
    for (auto& fn : m->functions) fn->ctx = t_current;
    const Function& fn = *m->functions.front();
    first = fn.name;
    std::string sizes;
    for (size_t x : fn.params) sizes += (sizes.empty() ? "" : ", ") + std::to_string(x);
    extra = ", \"sm\": " + std::to_string(sm) + ", \"params\": [" + sizes + "], \"static_smem\": " +
            std::to_string(fn.static_smem) + ", \"reqntid\": [" + std::to_string(fn.reqntid[0]) + ", " +
            std::to_string(fn.reqntid[1]) + ", " + std::to_string(fn.reqntid[2]) + "]";
  } else {
    if (std::strncmp(text, "FAKECUBIN\n", 10) != 0) return kInvalidImage;
    std::istringstream in(text + 10);
    std::string word;
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
  }
  for (auto& fn : m->functions) fn->max_dynamic = fn->static_smem < 48 * 1024 ? 48 * 1024 - fn->static_smem : 0;
  record(f, "{\"call\": \"cuModuleLoadData\", \"ctx\": " + std::to_string(1000 + t_current) + ", \"function\": \"" +
                first + "\"" + extra + "}");
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
  if (x->reqntid[0] != 0 && (bx != x->reqntid[0] || by != x->reqntid[1] || bz != x->reqntid[2])) {
    return kInvalidValue;  // as the driver: a kernel compiled for another block size (.reqntid)
  }
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
