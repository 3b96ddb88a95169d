// The AOT prefill launcher (hla_aot_launcher.h).
#include "hla_aot_launcher.h"

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <tuple>

#include "hla_cuda_driver.h"
#include "hla_layout.h"
#include "hla_log.h"
#include "hla_sha256.h"

namespace hla {
namespace aot {
namespace {

constexpr uint64_t kDefaultSharedLimit = 48 * 1024;  // static + dynamic above it: the opt-in attribute

// ---- process-wide state (one mutex) --------------------------------------------------------------

struct DirState {
  bool has_manifest = false;
  std::string error;  // malformed manifest, or an $HLA_DEPLOY_KERNEL_DIR directory that is unusable
  Manifest manifest;
};

struct Lookup {
  const Entry* entry = nullptr;
  std::string error;     // the search failed (malformed manifest ...)
  std::string searched;  // "dir (why not)" list, for the warning
};

struct DeviceInfo {
  int cc = 0;      // major * 10 + minor
  int optin = 0;   // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
};

using KernelKey = std::tuple<unsigned long long, const Entry*, size_t>;  // (context id, entry, kernel index)
using ModuleKey = std::pair<unsigned long long, std::string>;           // (context id, cubin path)

struct State {
  std::mutex mu;
  bool dirs_ready = false;
  std::vector<std::string> dirs;
  std::set<std::string> env_dirs;  // the ones $HLA_DEPLOY_KERNEL_DIR named (must exist)
  std::map<std::string, std::unique_ptr<DirState>> dir_states;
  std::map<std::string, Lookup> lookups;  // "<config>@<arch>"
  std::set<std::string> warned;
  std::map<int, DeviceInfo> devices;
  std::map<std::string, std::string> cubins;  // path -> verified bytes
  std::map<ModuleKey, cu::Module> modules;
  std::map<KernelKey, cu::Function> functions;
};

State& state() {
  static State* s = new State();  // never destroyed: plugins may run during static destruction
  return *s;
}

bool is_dir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void anchor() {}  // an address inside the library holding this code (dladdr)

std::string library_dir() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&anchor), &info) == 0 || info.dli_fname == nullptr) return "";
  std::string path = info.dli_fname;
  if (char* real = realpath(info.dli_fname, nullptr)) {  // absolute: the working directory may change
    path = real;
    std::free(real);
  }
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// A path as hla_deploy.native.locations reads one (Path(x).expanduser().resolve(), without the
// symlinks): a leading ~ is $HOME (environment variables are not always set by a shell), a relative
// path is taken from the working directory.
std::string user_path(const std::string& path) {
  std::string p = path;
  if (p == "~" || p.compare(0, 2, "~/") == 0) {
    const char* h = std::getenv("HOME");
    p = std::string(h != nullptr ? h : "") + p.substr(1);
  }
  if (!p.empty() && p[0] != '/') {
    char buf[4096];
    if (getcwd(buf, sizeof(buf)) != nullptr) p = std::string(buf) + "/" + p;
  }
  return p;
}

// hla_deploy.native.locations.cache_dir(): where `hla-deploy build-plugins` writes kernels/.
std::string cache_dir() {
  const char* c = std::getenv("HLA_DEPLOY_CACHE");
  if (c != nullptr && c[0] != '\0') return user_path(c);
  const char* x = std::getenv("XDG_CACHE_HOME");
  if (x != nullptr && x[0] != '\0') return user_path(x) + "/hla-deploy";
  return user_path("~/.cache/hla-deploy");
}

void ensure_dirs(State& s) {
  if (s.dirs_ready) return;
  s.dirs.clear();
  s.env_dirs.clear();
  if (const char* env = std::getenv("HLA_DEPLOY_KERNEL_DIR")) {
    std::stringstream ss(env);
    std::string d;
    while (std::getline(ss, d, ':')) {
      if (d.empty()) continue;
      d = user_path(d);
      s.dirs.push_back(d);
      s.env_dirs.insert(d);
    }
  }
  const std::string lib = library_dir();
  if (!lib.empty()) s.dirs.push_back(lib + "/hla_kernels");
  s.dirs.push_back(cache_dir() + "/kernels");
  s.dirs_ready = true;
}

DirState& dir_state(State& s, const std::string& dir) {
  auto it = s.dir_states.find(dir);
  if (it != s.dir_states.end()) return *it->second;
  std::unique_ptr<DirState> ds(new DirState());
  const bool from_env = s.env_dirs.count(dir) > 0;
  if (!is_dir(dir)) {
    if (from_env) ds->error = "HLA_DEPLOY_KERNEL_DIR names " + dir + ", which is not a directory";
  } else if (!is_file(dir + "/manifest.json")) {
    if (from_env) ds->error = "HLA_DEPLOY_KERNEL_DIR names " + dir + ", which has no manifest.json";
  } else {
    ds->has_manifest = read_manifest(dir, &ds->manifest, &ds->error);
  }
  DirState& ref = *ds;
  s.dir_states[dir] = std::move(ds);
  return ref;
}

// The entry for (config, arch): the first directory that has one (cached per process).
const Lookup& lookup(State& s, const Config& c, const std::string& arch) {
  const std::string key = c.name() + "@" + arch;
  auto it = s.lookups.find(key);
  if (it != s.lookups.end()) return it->second;
  ensure_dirs(s);
  Lookup L;
  for (const std::string& dir : s.dirs) {
    DirState& ds = dir_state(s, dir);
    if (!ds.error.empty()) {
      L.error = ds.error;
      break;
    }
    if (!ds.has_manifest) {
      L.searched += (L.searched.empty() ? "" : ", ") + dir + (is_dir(dir) ? " (no manifest.json)" : " (absent)");
      continue;
    }
    for (const Entry& e : ds.manifest.entries) {
      if (e.config == c && e.arch == arch) {
        L.entry = &e;
        break;
      }
    }
    if (L.entry != nullptr) break;
    L.searched += (L.searched.empty() ? "" : ", ") + dir + " (no entry)";
  }
  return s.lookups[key] = L;
}

// What `hla-deploy build-plugins` can build (hla_deploy/native/kernel_configs.py: ARCHS and
// MAX_HEAD_DIM, the Triton kernels' limits): "" when it can build c for sm_<cc>, else why not.
constexpr int kAotArchs[] = {87, 90};
constexpr int kAotMaxHeadDim = 128;

std::string why_unbuildable(const Config& c, int cc) {
  if (c.d > kAotMaxHeadDim || c.dv + (c.normalize ? 1 : 0) > kAotMaxHeadDim) {
    return "the Triton kernels take d <= " + std::to_string(kAotMaxHeadDim) + " and dv + normalize <= " +
           std::to_string(kAotMaxHeadDim) + ", this node has d=" + std::to_string(c.d) + ", dv=" + std::to_string(c.dv) +
           ", normalize=" + std::to_string(c.normalize ? 1 : 0);
  }
  for (int a : kAotArchs)
    if (a == cc) return "";
  return "AOT kernels are built for sm_87 and sm_90 only (hla-deploy build-plugins --arch 87,90)";
}

// The command that builds c for sm_<cc> (the kernels only: no native library build can stop it).
std::string build_command(const Config& c, int cc) {
  return "hla-deploy build-plugins --arch " + std::to_string(cc) + " --config " + c.name() +
         " --kernels-only (or --model MODEL.onnx)";
}

// Logs `message` as a warning once per `key` per process. Call without holding the mutex.
void warn_once(const std::string& key, const std::string& message) {
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (!s.warned.insert(key).second) return;
  }
  log_message(LogLevel::kWarning, message);
}

std::string no_entry_warning(const Config& c, int cc, const std::string& searched) {
  const std::string why = why_unbuildable(c, cc);
  return "HLARecurrentStep: no AOT prefill kernels for configuration " + c.name() + " on sm_" + std::to_string(cc) +
         " (kernel directories searched: " + searched + "); prefills of this configuration run the token-serial "
         "CUDA kernel (much slower). " +
         (why.empty() ? "Build them with: " + build_command(c, cc) : "None can be built: " + why);
}

// ---- the device of a context ------------------------------------------------------------------

bool device_info(const cu::Api& api, State& s, cu::Device dev, DeviceInfo* out, std::string* error) {
  auto it = s.devices.find(dev);
  if (it != s.devices.end()) {
    *out = it->second;
    return true;
  }
  int major = 0, minor = 0, optin = 0;
  cu::Result r = api.DeviceGetAttribute(&major, cu::kAttrComputeCapabilityMajor, dev);
  if (r == cu::kSuccess) r = api.DeviceGetAttribute(&minor, cu::kAttrComputeCapabilityMinor, dev);
  if (r == cu::kSuccess) r = api.DeviceGetAttribute(&optin, cu::kAttrMaxSharedPerBlockOptin, dev);
  if (r != cu::kSuccess) {
    *error = "cuDeviceGetAttribute(device " + std::to_string(dev) + ") failed: " + cu::error_text(api, r);
    return false;
  }
  DeviceInfo d;
  d.cc = major * 10 + minor;
  d.optin = optin;
  s.devices[dev] = d;
  *out = d;
  return true;
}

bool is_default_stream(void* stream) {
  const uintptr_t h = reinterpret_cast<uintptr_t>(stream);
  return h == 0 || h == 1 || h == 2;  // NULL, CU_STREAM_LEGACY, CU_STREAM_PER_THREAD
}

// Makes the context of `stream` (or the current one) current for the object's lifetime.
class ContextScope {
 public:
  ContextScope(const cu::Api& api, void* stream) : api_(api) {
    cu::Context cur = nullptr;
    cu::Result r = api.CtxGetCurrent(&cur);
    if (r != cu::kSuccess) {
      error_ = "cuCtxGetCurrent failed: " + cu::error_text(api, r);
      return;
    }
    ctx_ = cur;
    if (!is_default_stream(stream)) {
      r = api.StreamGetCtx(static_cast<cu::Stream>(stream), &ctx_);
      if (r != cu::kSuccess) {
        error_ = "cuStreamGetCtx of the given stream failed: " + cu::error_text(api, r);
        return;
      }
    }
    if (ctx_ == nullptr) {
      error_ = "no CUDA context is current on this thread (and the stream names none)";
      return;
    }
    if (ctx_ != cur) {
      r = api.CtxPushCurrent(ctx_);
      if (r != cu::kSuccess) {
        error_ = "cuCtxPushCurrent of the stream's context failed: " + cu::error_text(api, r);
        return;
      }
      pushed_ = true;
    }
    r = api.CtxGetDevice(&dev_);
    if (r != cu::kSuccess) {
      error_ = "cuCtxGetDevice failed: " + cu::error_text(api, r);
      return;
    }
    id_ = static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(ctx_));
    unsigned long long id = 0;
    if (api.CtxGetId != nullptr && api.CtxGetId(ctx_, &id) == cu::kSuccess) id_ = id;
  }
  ~ContextScope() {
    if (pushed_) {
      cu::Context popped = nullptr;
      api_.CtxPopCurrent(&popped);
    }
  }
  const std::string& error() const { return error_; }
  cu::Device device() const { return dev_; }
  unsigned long long id() const { return id_; }

 private:
  const cu::Api& api_;
  cu::Context ctx_ = nullptr;
  cu::Device dev_ = 0;
  unsigned long long id_ = 0;
  bool pushed_ = false;
  std::string error_;
};

// The device prefill sizes are computed for: the current context's, else device 0.
bool current_device(const cu::Api& api, cu::Device* dev) {
  cu::Context cur = nullptr;
  if (api.CtxGetCurrent(&cur) == cu::kSuccess && cur != nullptr) return api.CtxGetDevice(dev) == cu::kSuccess;
  return api.DeviceGet(dev, 0) == cu::kSuccess;
}

// ---- loading a kernel into a context ----------------------------------------------------------

const std::string* cubin_bytes(State& s, const Entry& e, const Kernel& k, std::string* error) {
  auto it = s.cubins.find(k.cubin);
  if (it != s.cubins.end()) return &it->second;
  std::ifstream f(k.cubin, std::ios::binary);
  if (!f) {
    *error = "cubin " + k.cubin + " of kernel " + k.name + " (" + e.where() + ") cannot be read: " +
             std::strerror(errno) + "; rebuild the kernel directory: " + build_command(e.config, std::atoi(e.arch.c_str() + 3));
    return nullptr;
  }
  std::ostringstream ss;
  ss << f.rdbuf();
  std::string bytes = ss.str();
  const std::string got = sha256_hex(bytes.data(), bytes.size());
  if (got != k.sha256) {
    *error = "cubin " + k.cubin + " of kernel " + k.name + " (" + e.where() + ") has sha256 " + got +
             ", the manifest records " + k.sha256 + " (stale or corrupted kernel directory; rebuild it: " +
             build_command(e.config, std::atoi(e.arch.c_str() + 3)) + ")";
    return nullptr;
  }
  return &(s.cubins[k.cubin] = std::move(bytes));
}

bool check_params(const cu::Api& api, cu::Function fn, const Entry& e, const Kernel& k, std::string* error) {
  if (api.FuncGetParamInfo == nullptr) return true;  // driver older than 12.4: nothing to check against
  size_t count = 0;
  for (; count < 4096; ++count) {
    size_t offset = 0, size = 0;
    const cu::Result r = api.FuncGetParamInfo(fn, count, &offset, &size);
    if (r != cu::kSuccess) {
      if (count == 0 && (r == cu::kErrorNotSupported || r == cu::kErrorNotFound)) return true;  // not available
      break;
    }
    if (count < k.params.size() && size != param_bytes(k.params[count].type)) {
      *error = "kernel " + k.name + " (" + e.where() + "): parameter " + std::to_string(count) + " ('" +
               k.params[count].name + "') is " + std::to_string(size) + " bytes in the cubin, the manifest's type needs " +
               std::to_string(param_bytes(k.params[count].type)) + " (manifest and cubin do not match)";
      return false;
    }
  }
  if (count != k.params.size()) {
    *error = "kernel " + k.name + " (" + e.where() + "): function " + k.function + " takes " + std::to_string(count) +
             " parameters, the manifest lists " + std::to_string(k.params.size()) +
             " (manifest and cubin do not match: a different Triton version adds different hidden parameters; "
             "rebuild the kernel directory)";
    return false;
  }
  return true;
}

// The function of kernel `ki` of `e` in the context `ctx` (loaded on first use).
bool function_for(const cu::Api& api, State& s, const ContextScope& ctx, const DeviceInfo& dev, const Entry& e,
                  size_t ki, cu::Function* out, std::string* error) {
  const KernelKey key(ctx.id(), &e, ki);
  auto it = s.functions.find(key);
  if (it != s.functions.end()) {
    *out = it->second;
    return true;
  }
  const Kernel& k = e.kernels[ki];
  if (uint64_t(k.shared_bytes) > uint64_t(dev.optin)) {
    *error = "kernel " + k.name + " (" + e.where() + ") needs " + std::to_string(k.shared_bytes) +
             " bytes of shared memory per block, device " + std::to_string(ctx.device()) + " allows " +
             std::to_string(dev.optin) + " (opt-in limit): this entry cannot run here";
    return false;
  }
  const ModuleKey mkey(ctx.id(), k.cubin);
  cu::Module mod = nullptr;
  auto mit = s.modules.find(mkey);
  if (mit != s.modules.end()) {
    mod = mit->second;
  } else {
    const std::string* bytes = cubin_bytes(s, e, k, error);
    if (bytes == nullptr) return false;
    const cu::Result r = api.ModuleLoadData(&mod, bytes->data());
    if (r != cu::kSuccess) {
      *error = "cuModuleLoadData(" + k.cubin + ") for kernel " + k.name + " (" + e.where() + ") failed: " +
               cu::error_text(api, r) + " (a cubin for another arch or a newer CUDA than this driver?)";
      return false;
    }
    s.modules[mkey] = mod;
  }
  cu::Function fn = nullptr;
  cu::Result r = api.ModuleGetFunction(&fn, mod, k.function.c_str());
  if (r != cu::kSuccess) {
    *error = "cuModuleGetFunction(" + k.function + ") in " + k.cubin + " (" + e.where() + ") failed: " +
             cu::error_text(api, r);
    return false;
  }
  int static_bytes = 0;
  r = api.FuncGetAttribute(&static_bytes, cu::kFuncAttrSharedSizeBytes, fn);
  if (r != cu::kSuccess) {
    *error = "cuFuncGetAttribute(SHARED_SIZE_BYTES) of " + k.function + " failed: " + cu::error_text(api, r);
    return false;
  }
  if (uint64_t(k.shared_bytes) + uint64_t(static_bytes) > uint64_t(dev.optin)) {
    *error = "kernel " + k.name + " (" + e.where() + ") needs " + std::to_string(k.shared_bytes) + " + " +
             std::to_string(static_bytes) + " (static) bytes of shared memory per block, device " +
             std::to_string(ctx.device()) + " allows " + std::to_string(dev.optin) + " (opt-in limit)";
    return false;
  }
  if (uint64_t(k.shared_bytes) + uint64_t(static_bytes) > kDefaultSharedLimit) {
    // Without the opt-in a block has 48 KB, static and dynamic together. Prefer shared memory over
    // L1, then opt in (as Triton's own loader does for its kernels, which have no static part).
    r = api.FuncSetCacheConfig(fn, cu::kFuncCachePreferShared);
    if (r != cu::kSuccess) {
      *error = "cuFuncSetCacheConfig(PREFER_SHARED) of " + k.function + " failed: " + cu::error_text(api, r);
      return false;
    }
    r = api.FuncSetAttribute(fn, cu::kFuncAttrMaxDynamicShared, int(k.shared_bytes));
    if (r != cu::kSuccess) {
      *error = "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES, " + std::to_string(k.shared_bytes) + ") of " +
               k.function + " failed: " + cu::error_text(api, r);
      return false;
    }
  }
  if (!check_params(api, fn, e, k, error)) return false;
  s.functions[key] = fn;
  *out = fn;
  return true;
}

// ---- shapes ------------------------------------------------------------------------------------

bool eval(const Product& prod, int64_t B, int64_t T, int64_t H, int64_t chunk, uint64_t* out) {
  uint64_t x = 1;
  for (const Factor& f : prod) {
    uint64_t v = 0;
    switch (f.symbol) {
      case Factor::Symbol::kNone: v = uint64_t(f.value); break;
      case Factor::Symbol::kB: v = uint64_t(B); break;
      case Factor::Symbol::kH: v = uint64_t(H); break;
      case Factor::Symbol::kT: v = uint64_t(T); break;
      case Factor::Symbol::kNT: v = uint64_t((T + chunk - 1) / chunk); break;
    }
    if (v != 0 && x > (uint64_t(1) << 62) / v) return false;
    x *= v;
  }
  *out = x;
  return true;
}

uint64_t round_up(uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

const cu::Api* api_or_error(std::string* error) {
  std::string why;
  const cu::Api* api = cu::driver(&why);
  if (api == nullptr && error != nullptr) *error = why;
  return api;
}

std::string prefix(const Config& c, int cc) {
  return "HLARecurrentStep AOT prefill (" + c.name() + (cc > 0 ? " on sm_" + std::to_string(cc) : std::string()) + "): ";
}

}  // namespace

// ---- public ------------------------------------------------------------------------------------

bool config_for(const Params& p, DType dtype, Config* out) {
  if (p.T <= 1 || (p.variant != Variant::kHLA2 && p.variant != Variant::kAHLA)) return false;
  Config c;
  c.variant = p.variant;
  c.normalize = p.normalize;
  c.has_c = p.variant == Variant::kHLA2 && p.ridge != 0.0f;
  c.d = p.d;
  c.dv = p.dv;
  c.dtype = dtype;
  *out = c;
  return true;
}

bool layout(const Entry& e, int64_t B, int64_t T, int64_t H, Layout* out, std::string* error) {
  Layout L;
  uint64_t off = 0;
  for (const Buffer& b : e.workspace) {
    uint64_t n = 0;
    if (!eval(b.dims, B, T, H, e.chunk_size, &n) || n > (uint64_t(1) << 60) / uint64_t(b.elem_bytes)) {
      *error = "workspace buffer " + b.name + " of " + e.where() + " overflows for B=" + std::to_string(B) +
               ", T=" + std::to_string(T) + ", H=" + std::to_string(H);
      return false;
    }
    L.buffers.push_back(off);
    off += round_up(n * uint64_t(b.elem_bytes));
  }
  L.decay = off;
  off += round_up(uint64_t(H) * 4);
  L.state_copy = off;
  off += round_up(uint64_t(B) * uint64_t(H) * uint64_t(e.state_size) * 4);
  L.bytes = kAlign + off;
  *out = std::move(L);
  return true;
}

std::vector<std::string> search_dirs() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  ensure_dirs(s);
  return s.dirs;
}

void reset_for_tests() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.dirs_ready = false;
  s.dirs.clear();
  s.env_dirs.clear();
  s.lookups.clear();
  s.dir_states.clear();
  s.warned.clear();
  s.devices.clear();
  s.cubins.clear();
  s.modules.clear();
  s.functions.clear();
}

// The entry for p on device `dev` (null: none / error; *error set on error), warning once when none.
static const Entry* entry_for(const cu::Api& api, const Config& c, cu::Device dev, int* cc, std::string* error) {
  State& s = state();
  std::string warning, warn_key;
  const Entry* entry = nullptr;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    DeviceInfo info;
    if (!device_info(api, s, dev, &info, error)) return nullptr;
    *cc = info.cc;
    const std::string arch = "sm_" + std::to_string(info.cc);
    const Lookup& L = lookup(s, c, arch);
    if (!L.error.empty()) {
      *error = L.error;
      return nullptr;
    }
    entry = L.entry;
    if (entry == nullptr) {
      warn_key = "none:" + c.name() + "@" + arch;
      warning = no_entry_warning(c, info.cc, L.searched);
    }
  }
  if (!warning.empty()) warn_once(warn_key, warning);
  return entry;
}

size_t workspace_bytes(const Params& p, DType dtype) {
  Config c;
  if (!config_for(p, dtype, &c)) return 0;
  const cu::Api* api = api_or_error(nullptr);
  cu::Device dev = 0;
  if (api == nullptr || !current_device(*api, &dev)) return 0;
  std::string error;
  int cc = 0;
  const Entry* e = entry_for(*api, c, dev, &cc, &error);
  Layout L;
  if (e == nullptr || !layout(*e, p.B, p.T, p.H, &L, &error)) return 0;
  return size_t(L.bytes);
}

bool available(const Params& p, DType dtype) {
  Config c;
  if (!config_for(p, dtype, &c)) return false;
  const cu::Api* api = api_or_error(nullptr);
  cu::Device dev = 0;
  if (api == nullptr || !current_device(*api, &dev)) return false;
  std::string error;
  int cc = 0;
  return entry_for(*api, c, dev, &cc, &error) != nullptr;
}

Status prefill(const Params& p, DType dtype, const Tensors& t, void* workspace, void* stream, std::string* message) {
  Config c;
  if (!config_for(p, dtype, &c)) return Status::kTokenSerial;
  std::string error;
  const cu::Api* api = api_or_error(&error);
  if (api == nullptr) {
    *message = prefix(c, 0) + error;
    return Status::kError;
  }
  ContextScope ctx(*api, stream);
  if (!ctx.error().empty()) {
    *message = prefix(c, 0) + ctx.error();
    return Status::kError;
  }
  int cc = 0;
  const Entry* e = entry_for(*api, c, ctx.device(), &cc, &error);
  if (e == nullptr) {
    if (error.empty()) return Status::kTokenSerial;  // no entry (warned once)
    *message = prefix(c, cc) + error;
    return Status::kError;
  }
  if (workspace == nullptr) return Status::kTokenSerial;  // the caller asked for the token-serial kernel
  // The kernels are specialised for 16-byte aligned pointers (docs/AOT_KERNELS.md section 1).
  const struct { const char* name; const void* ptr; } ptrs[] = {
      {"q", t.q}, {"k", t.k}, {"v", t.v}, {"o", t.o}, {"state_in", t.state_in}, {"state_out", t.state_out}};
  for (const auto& x : ptrs) {
    if (reinterpret_cast<uintptr_t>(x.ptr) % 16 != 0) {
      warn_once("align:" + c.name() + ":" + x.name,
                "HLARecurrentStep: tensor '" + std::string(x.name) + "' is not 16-byte aligned; the AOT prefill kernels " +
                    "need 16-byte aligned tensors, so prefills of " + c.name() + " with such a tensor run the " +
                    "token-serial CUDA kernel");
      return Status::kTokenSerial;
    }
  }
  Layout L;
  if (!layout(*e, p.B, p.T, p.H, &L, &error)) {
    *message = prefix(c, cc) + error;
    return Status::kError;
  }
  std::vector<cu::Function> fns(e->kernels.size());
  {
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mu);
    DeviceInfo dev;
    if (!device_info(*api, s, ctx.device(), &dev, &error)) {
      *message = prefix(c, cc) + error;
      return Status::kError;
    }
    for (size_t i = 0; i < e->kernels.size(); ++i) {
      if (!function_for(*api, s, ctx, dev, *e, i, &fns[i], &error)) {
        *message = prefix(c, cc) + error;
        return Status::kError;
      }
    }
  }
  const cu::Stream st = static_cast<cu::Stream>(stream);
  const cu::DevicePtr base = (cu::DevicePtr(reinterpret_cast<uintptr_t>(workspace)) + kAlign - 1) / kAlign * kAlign;
  // decay: one cuMemsetD32Async per run of equal values (1.0 when the node has none)
  const cu::DevicePtr decay = base + L.decay;
  for (int h0 = 0; h0 < p.H;) {
    const float g = head_decay(p, h0);
    int h1 = h0 + 1;
    while (h1 < p.H && head_decay(p, h1) == g) ++h1;
    unsigned bits = 0;
    std::memcpy(&bits, &g, 4);
    const cu::Result r = api->MemsetD32Async(decay + cu::DevicePtr(h0) * 4, bits, size_t(h1 - h0), st);
    if (r != cu::kSuccess) {
      *message = prefix(c, cc) + "cuMemsetD32Async of the decay slot failed: " + cu::error_text(*api, r);
      return Status::kError;
    }
    h0 = h1;
  }
  // state_in overlapping state_out: the kernels read a copy
  cu::DevicePtr state_in = cu::DevicePtr(reinterpret_cast<uintptr_t>(t.state_in));
  const cu::DevicePtr state_out = cu::DevicePtr(reinterpret_cast<uintptr_t>(t.state_out));
  const uint64_t state_bytes = uint64_t(p.B) * uint64_t(p.H) * uint64_t(e->state_size) * 4;
  if (state_in < state_out + state_bytes && state_out < state_in + state_bytes) {
    const cu::Result r = api->MemcpyDtoDAsync(base + L.state_copy, state_in, size_t(state_bytes), st);
    if (r != cu::kSuccess) {
      *message = prefix(c, cc) + "cuMemcpyDtoDAsync of state_in into the workspace failed: " + cu::error_text(*api, r);
      return Status::kError;
    }
    state_in = base + L.state_copy;
  }
  for (size_t ki = 0; ki < e->kernels.size(); ++ki) {
    const Kernel& k = e->kernels[ki];
    uint64_t grid[3];
    for (int i = 0; i < 3; ++i) {
      const uint64_t limit = i == 0 ? 0x7fffffffULL : 65535ULL;
      if (!eval(k.grid[i], p.B, p.T, p.H, e->chunk_size, &grid[i]) || grid[i] > limit) {
        *message = prefix(c, cc) + "kernel " + k.name + ": grid dim " + std::to_string(i) + " exceeds the CUDA limit " +
                   std::to_string(limit) + " for B=" + std::to_string(p.B) + ", T=" + std::to_string(p.T) +
                   ", H=" + std::to_string(p.H);
        return Status::kError;
      }
    }
    std::vector<uint64_t> slots(k.params.size(), 0);
    std::vector<void*> args(k.params.size());
    for (size_t i = 0; i < k.params.size(); ++i) {
      const Param& prm = k.params[i];
      uint64_t v = 0;
      int32_t i32 = 0;
      float f32 = 0.0f;
      bool is_i32 = false, is_f32 = false;
      switch (prm.bind) {
        case Bind::kQ: v = reinterpret_cast<uintptr_t>(t.q); break;
        case Bind::kK: v = reinterpret_cast<uintptr_t>(t.k); break;
        case Bind::kV: v = reinterpret_cast<uintptr_t>(t.v); break;
        case Bind::kO: v = reinterpret_cast<uintptr_t>(t.o); break;
        case Bind::kStateIn: v = state_in; break;
        case Bind::kStateOut: v = state_out; break;
        case Bind::kDecay: v = decay; break;
        case Bind::kWorkspace: v = base + L.buffers[size_t(prm.workspace_index)]; break;
        case Bind::kT: i32 = p.T; is_i32 = true; break;
        case Bind::kH: i32 = p.H; is_i32 = true; break;
        case Bind::kB: i32 = p.B; is_i32 = true; break;
        case Bind::kEps: f32 = p.eps; is_f32 = true; break;
        case Bind::kLam: f32 = p.ridge; is_f32 = true; break;
        case Bind::kHidden: v = 0; break;
      }
      if (is_i32) std::memcpy(&slots[i], &i32, 4);
      else if (is_f32) std::memcpy(&slots[i], &f32, 4);
      else slots[i] = v;
      args[i] = &slots[i];
    }
    const cu::Result r = api->LaunchKernel(fns[ki], unsigned(grid[0]), unsigned(grid[1]), unsigned(grid[2]),
                                           unsigned(32 * k.num_warps), 1, 1, unsigned(k.shared_bytes), st,
                                           args.empty() ? nullptr : args.data(), nullptr);
    if (r != cu::kSuccess) {
      *message = prefix(c, cc) + "cuLaunchKernel of " + k.name + " (" + e->where() + ") failed: " + cu::error_text(*api, r);
      return Status::kError;
    }
  }
  return Status::kLaunched;
}

}  // namespace aot
}  // namespace hla
