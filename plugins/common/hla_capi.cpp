// extern "C" entry points over hla_kernels.h, for tests and benchmarks through ctypes
// (library target `hla_kernels_capi`). Not used by the ORT op or the TensorRT plugin.
//
// Integer codes: variant 0 hla2, 1 ahla, 2 hla3; dtype 0 float32, 1 float16, 2 bfloat16.
// Every forward validates its Params first and returns -1 when they are invalid (the message is
// available from hla_capi_validate with the same arguments).
#include <cstdint>

#include <cstring>
#include <exception>
#include <mutex>
#include <string>

#include "hla_aot_launcher.h"
#include "hla_dtype.h"
#include "hla_kernels.h"
#include "hla_log.h"
#include "hla_sha256.h"

#if defined(_WIN32)
#define HLA_CAPI extern "C" __declspec(dllexport)
#else
#define HLA_CAPI extern "C" __attribute__((visibility("default")))
#endif

namespace {

hla::Params make_params(int variant, int B, int T, int H, int d, int dv, int normalize, float eps,
                        float ridge, const float* decay, int num_decay) {
  hla::Params p;
  p.variant = static_cast<hla::Variant>(variant);
  p.B = B;
  p.T = T;
  p.H = H;
  p.d = d;
  p.dv = dv;
  p.normalize = normalize != 0;
  p.eps = eps;
  p.ridge = ridge;
  p.decay = decay;
  p.num_decay = num_decay;
  return p;
}

}  // namespace

HLA_CAPI int64_t hla_capi_state_size(int variant, int d, int dv, int normalize, float ridge) {
  if (variant < 0 || variant > 2) return -1;
  return hla::state_size(static_cast<hla::Variant>(variant), d, dv, normalize != 0, ridge);
}

// Returns 0..2, or -1 for an unknown name.
HLA_CAPI int hla_capi_parse_variant(const char* name) {
  hla::Variant v;
  return hla::parse_variant(name, &v) ? static_cast<int>(v) : -1;
}

HLA_CAPI const char* hla_capi_variant_name(int variant) {
  return hla::variant_name(static_cast<hla::Variant>(variant));
}

// nullptr (None in ctypes) when valid, else the message.
HLA_CAPI const char* hla_capi_validate(int variant, int B, int T, int H, int d, int dv,
                                       int normalize, float eps, float ridge, const float* decay,
                                       int num_decay) {
  return hla::validate(make_params(variant, B, T, H, d, dv, normalize, eps, ridge, decay, num_decay));
}

// Host pointers. Returns 0, -1 (invalid params), -2 (unknown dtype) or -3 (out of memory).
HLA_CAPI int hla_capi_forward_cpu(int variant, int B, int T, int H, int d, int dv, int normalize,
                                  float eps, float ridge, const float* decay, int num_decay,
                                  int dtype, const void* q, const void* k, const void* v,
                                  const float* state_in, void* o, float* state_out,
                                  int num_threads) {
  const hla::Params p = make_params(variant, B, T, H, d, dv, normalize, eps, ridge, decay, num_decay);
  if (hla::validate(p) != nullptr) return -1;
  if (dtype < 0 || dtype > 2) return -2;
  try {  // no C++ exception (std::bad_alloc) may cross the C boundary
    hla::forward_cpu(p, static_cast<hla::DType>(dtype), q, k, v, state_in, o, state_out, num_threads);
  } catch (...) {
    return -3;
  }
  return 0;
}

// Element-wise dtype conversion, to test the host fp16/bf16 code: dtype 1 or 2;
// direction 0: uint16 -> float32, 1: float32 -> uint16. Returns 0, or -2 for a bad dtype.
HLA_CAPI int hla_capi_convert(int dtype, int direction, int64_t n, const void* in, void* out) {
  if (dtype != 1 && dtype != 2) return -2;
  if (direction == 0) {
    const uint16_t* s = static_cast<const uint16_t*>(in);
    float* d = static_cast<float*>(out);
    for (int64_t i = 0; i < n; ++i)
      d[i] = dtype == 1 ? hla::detail::half_to_float(s[i]) : hla::detail::bf16_to_float(s[i]);
  } else {
    const float* s = static_cast<const float*>(in);
    uint16_t* d = static_cast<uint16_t*>(out);
    for (int64_t i = 0; i < n; ++i)
      d[i] = dtype == 1 ? hla::detail::float_to_half(s[i]) : hla::detail::float_to_bf16(s[i]);
  }
  return 0;
}

// ---- the AOT launcher (plain C++: also in CPU-only builds, tested against a mocked driver) ------

namespace {
std::mutex g_log_mu;
std::string g_log;  // messages of the capture sink, one per line: "W <text>" / "E <text>"
void capture_sink(void*, hla::LogLevel level, const char* message) {
  std::lock_guard<std::mutex> lock(g_log_mu);
  g_log += (level == hla::LogLevel::kError ? "E " : "W ") + std::string(message) + "\n";
}
std::string g_log_copy;
}  // namespace

// capture != 0: warnings/errors of plugins/common go to a buffer (hla_capi_take_log); 0: stderr.
HLA_CAPI void hla_capi_capture_log(int capture) { hla::set_log_sink(capture ? capture_sink : nullptr, nullptr); }

// The captured messages since the last call (then cleared). Valid until the next call.
HLA_CAPI const char* hla_capi_take_log(void) {
  std::lock_guard<std::mutex> lock(g_log_mu);
  g_log_copy.swap(g_log);
  g_log.clear();
  return g_log_copy.c_str();
}

// SHA-256 of n bytes as 64 hex digits + NUL into out (65 bytes): the launcher's cubin check.
HLA_CAPI void hla_capi_sha256(const void* data, int64_t n, char* out) {
  const std::string h = hla::sha256_hex(data, size_t(n));
  std::memcpy(out, h.c_str(), 65);
}

// Forgets manifests, loaded modules and warnings (hla::aot::reset_for_tests).
HLA_CAPI void hla_capi_aot_reset(void) { hla::aot::reset_for_tests(); }

// The kernel directories searched, joined with '\n'. Valid until the next call.
HLA_CAPI const char* hla_capi_aot_search_dirs(void) {
  static std::string s;
  s.clear();
  for (const std::string& d : hla::aot::search_dirs()) s += d + "\n";
  return s.c_str();
}

// hla::aot::workspace_bytes; -1 for invalid params or dtype.
HLA_CAPI int64_t hla_capi_aot_workspace_bytes(int variant, int B, int T, int H, int d, int dv, int normalize,
                                              float eps, float ridge, const float* decay, int num_decay, int dtype) {
  const hla::Params p = make_params(variant, B, T, H, d, dv, normalize, eps, ridge, decay, num_decay);
  if (hla::validate(p) != nullptr || dtype < 0 || dtype > 2) return -1;
  return static_cast<int64_t>(hla::aot::workspace_bytes(p, static_cast<hla::DType>(dtype)));
}

// hla::aot::prefill with device pointers as integers. Returns 0 launched, 1 token-serial (nothing
// launched), 2 error (message copied into msg, NUL-terminated, at most msg_size bytes), -1 invalid
// params or dtype.
HLA_CAPI int hla_capi_aot_prefill(int variant, int B, int T, int H, int d, int dv, int normalize, float eps,
                                  float ridge, const float* decay, int num_decay, int dtype, const void* q,
                                  const void* k, const void* v, const float* state_in, void* o, float* state_out,
                                  void* workspace, void* stream, char* msg, int msg_size) {
  const hla::Params p = make_params(variant, B, T, H, d, dv, normalize, eps, ridge, decay, num_decay);
  if (hla::validate(p) != nullptr || dtype < 0 || dtype > 2) return -1;
  hla::aot::Tensors t;
  t.q = q; t.k = k; t.v = v; t.state_in = state_in; t.o = o; t.state_out = state_out;
  std::string message;
  hla::aot::Status st = hla::aot::Status::kError;
  try {
    st = hla::aot::prefill(p, static_cast<hla::DType>(dtype), t, workspace, stream, &message);
  } catch (const std::exception& e) {
    message = std::string("exception: ") + e.what();
  }
  if (msg != nullptr && msg_size > 0) {
    std::strncpy(msg, message.c_str(), size_t(msg_size) - 1);
    msg[msg_size - 1] = '\0';
  }
  return st == hla::aot::Status::kLaunched ? 0 : (st == hla::aot::Status::kTokenSerial ? 1 : 2);
}

HLA_CAPI int hla_capi_has_cuda(void) {
#ifdef HLA_WITH_CUDA
  return 1;
#else
  return 0;
#endif
}

#ifdef HLA_WITH_CUDA
// Device pointers and a cudaStream_t (0 = default stream); the workspace is allocated by the
// caller (hla_capi_cuda_workspace_size bytes). Returns 0, -1 (invalid params), -2 (bad dtype)
// or the CUDA error code (> 0) of the failed launch.
HLA_CAPI int64_t hla_capi_cuda_workspace_size(int variant, int B, int T, int H, int d, int dv,
                                              int normalize, float eps, float ridge,
                                              const float* decay, int num_decay, int dtype) {
  const hla::Params p = make_params(variant, B, T, H, d, dv, normalize, eps, ridge, decay, num_decay);
  return static_cast<int64_t>(hla::cuda_workspace_size(p, static_cast<hla::DType>(dtype)));
}

// 1 when forward_cuda with a workspace runs the AOT prefill on the current device, else 0.
HLA_CAPI int hla_capi_cuda_prefill_aot(int variant, int B, int T, int H, int d, int dv,
                                           int normalize, float eps, float ridge,
                                           const float* decay, int num_decay, int dtype) {
  const hla::Params p = make_params(variant, B, T, H, d, dv, normalize, eps, ridge, decay, num_decay);
  if (hla::validate(p) != nullptr || dtype < 0 || dtype > 2) return 0;
  return hla::cuda_prefill_aot(p, static_cast<hla::DType>(dtype)) ? 1 : 0;
}

// workspace == nullptr: the token-serial kernel (tests compare both paths). On failure
// hla_capi_last_error says why.
HLA_CAPI int hla_capi_forward_cuda(int variant, int B, int T, int H, int d, int dv, int normalize,
                                   float eps, float ridge, const float* decay, int num_decay,
                                   int dtype, const void* q, const void* k, const void* v,
                                   const float* state_in, void* o, float* state_out,
                                   void* workspace, void* stream) {
  const hla::Params p = make_params(variant, B, T, H, d, dv, normalize, eps, ridge, decay, num_decay);
  if (hla::validate(p) != nullptr) return -1;
  if (dtype < 0 || dtype > 2) return -2;
  return hla::forward_cuda(p, static_cast<hla::DType>(dtype), q, k, v, state_in, o, state_out,
                           workspace, stream);
}

// The message of the last failed hla_capi_forward_cuda on this thread.
HLA_CAPI const char* hla_capi_last_error(void) { return hla::last_error_message(); }
#endif
