// HLARecurrentStep kernels shared by the ONNX Runtime op (plugins/ort_hla) and the TensorRT
// plugin (plugins/trt_hla). ONE copy of each kernel lives in plugins/common; backends only
// translate their framework's tensors/attributes into hla::Params and call these functions.
// Semantics and state layout: docs/OP_CONTRACT.md.
//
// Shapes (row-major, contiguous):
//   q, k  [B, T, H, d]   dtype = DType (float32 / float16 / bfloat16)
//   v     [B, T, H, dv]  same dtype
//   o     [B, T, H, dv]  same dtype
//   state_in, state_out  [B, H, N] float32 (N = state_size(...)); they may be the same pointer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hla {

enum class Variant : int32_t { kHLA2 = 0, kAHLA = 1, kHLA3 = 2 };
enum class DType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Largest H for which per-head decay is passed to the token-serial CUDA kernel by value.
constexpr int kMaxHeads = 256;

struct Params {
  Variant variant = Variant::kHLA2;
  int32_t B = 0, T = 0, H = 0, d = 0, dv = 0;
  bool normalize = false;
  float eps = 1e-6f;
  float ridge = 0.0f;
  const float* decay = nullptr;  // host pointer to num_decay values (1 or H); nullptr = all 1.0
  int32_t num_decay = 0;
};

// N, the per-head state length, as defined in docs/OP_CONTRACT.md.
int64_t state_size(Variant variant, int d, int dv, bool normalize, float ridge);

// Parses "hla2" / "ahla" / "hla3"; returns false for anything else.
bool parse_variant(const char* name, Variant* out);
const char* variant_name(Variant v);

// Checks the attribute/shape combination. Returns nullptr when valid, otherwise a static,
// human-readable message naming the attribute or dimension and what was expected.
const char* validate(const Params& p);

// Decay for head h (1.0 when none given).
inline float head_decay(const Params& p, int h) {
  if (p.decay == nullptr || p.num_decay == 0) return 1.0f;
  return p.num_decay == 1 ? p.decay[0] : p.decay[h];
}

// CPU forward: decode (T == 1) streams each head's state once; prefill (T > 1) works by chunks.
// Threads split the B*H (batch, head) pairs; num_threads <= 0 means hardware concurrency.
// Call validate() first: behaviour is undefined for invalid Params.
void forward_cpu(const Params& p, DType dtype, const void* q, const void* k, const void* v,
                 const float* state_in, void* o, float* state_out, int num_threads);

// CUDA forward on `stream` (a cudaStream_t passed as void* so this header needs no CUDA).
// Device pointers. Decode (T == 1) and hla3 run the token-serial kernel; a prefill (T > 1) of
// hla2 / ahla runs the ahead-of-time compiled Triton kernels (hla_aot_launcher.h) when the
// stream's device has them for this configuration (docs/AOT_KERNELS.md) and `workspace` is not
// null, else the token-serial kernel (with ONE warning per configuration and arch when the
// kernels are missing: hla_log.h). `workspace` must hold cuda_workspace_size(p, dtype) bytes.
// Returns 0 (cudaSuccess) or an error code (a cudaError_t; cudaErrorUnknown for a failure of the
// AOT launcher); last_error_message() (hla_log.h) then says what failed. Never aborts.
// Only compiled when CUDA is available (HLA_WITH_CUDA).
// cuda_workspace_size: bytes the AOT prefill needs for these shapes on the current device; 0 for
// decode, hla3 or a configuration without AOT kernels here. It grows with B, T and H, so the size
// for a TensorRT profile's largest shapes covers every smaller shape.
size_t cuda_workspace_size(const Params& p, DType dtype);
// True when forward_cuda, given a workspace of cuda_workspace_size(p, dtype) bytes, runs the AOT
// prefill on the current device; false: the token-serial kernel (also what a null workspace gives).
bool cuda_prefill_aot(const Params& p, DType dtype);
int forward_cuda(const Params& p, DType dtype, const void* q, const void* k, const void* v,
                 const float* state_in, void* o, float* state_out, void* workspace, void* stream);

}  // namespace hla
