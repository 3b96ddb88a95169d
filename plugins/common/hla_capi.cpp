// extern "C" entry points over hla_kernels.h, for tests and benchmarks through ctypes
// (library target `hla_kernels_capi`). Not used by the ORT op or the TensorRT plugin.
//
// Integer codes: variant 0 hla2, 1 ahla, 2 hla3; dtype 0 float32, 1 float16, 2 bfloat16.
// Every forward validates its Params first and returns -1 when they are invalid (the message is
// available from hla_capi_validate with the same arguments).
#include <cstdint>

#include "hla_chunk_plan.h"
#include "hla_dtype.h"
#include "hla_kernels.h"

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

// The chunked CUDA prefill's plan (hla_chunk_plan.h; plain C++, so also in CPU-only builds):
// out[0..7] = ok, BT, NT, nK, nV, smem_state, smem_out, workspace bytes. Returns 0, -1 (invalid
// params) or -2 (bad dtype).
HLA_CAPI int hla_capi_chunk_plan(int variant, int B, int T, int H, int d, int dv, int normalize,
                                 float eps, float ridge, const float* decay, int num_decay,
                                 int dtype, int64_t* out) {
  const hla::Params p = make_params(variant, B, T, H, d, dv, normalize, eps, ridge, decay, num_decay);
  if (hla::validate(p) != nullptr) return -1;
  if (dtype < 0 || dtype > 2) return -2;
  const hla::ChunkPlan c = hla::chunk_plan(p, static_cast<hla::DType>(dtype));
  const int64_t v[8] = {c.ok ? 1 : 0, c.dims.BT, c.NT, c.nK, c.nV, c.smem_state, c.smem_out,
                        static_cast<int64_t>(c.workspace)};
  for (int i = 0; i < 8; ++i) out[i] = v[i];
  return 0;
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

// 1 when forward_cuda with a workspace runs the chunked prefill on the current device, else 0.
HLA_CAPI int hla_capi_cuda_prefill_chunked(int variant, int B, int T, int H, int d, int dv,
                                           int normalize, float eps, float ridge,
                                           const float* decay, int num_decay, int dtype) {
  const hla::Params p = make_params(variant, B, T, H, d, dv, normalize, eps, ridge, decay, num_decay);
  if (hla::validate(p) != nullptr || dtype < 0 || dtype > 2) return 0;
  return hla::cuda_prefill_chunked(p, static_cast<hla::DType>(dtype)) ? 1 : 0;
}

// workspace == nullptr: the token-serial kernel (tests compare both paths).
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
#endif
