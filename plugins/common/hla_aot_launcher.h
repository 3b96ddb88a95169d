// The ONE launcher of the ahead-of-time compiled Triton prefill kernels (docs/AOT_KERNELS.md),
// used unchanged by the ORT CUDA op and the TensorRT plugin through hla::forward_cuda.
// Plain C++: the CUDA driver API is loaded at run time (hla_cuda_driver.h); no CUDA headers.
//
// For a prefill of configuration c on a device of arch sm_XY it
//   1. finds the first kernel directory (search_dirs()) whose manifest.json has an entry for
//      (c, sm_XY) (manifests are read once per process);
//   2. loads each cubin of the entry once per CUDA context (cuModuleLoadData, cuModuleGetFunction;
//      the context of the stream it is given, else the current one), after checking its sha256;
//      checks the function's parameter count and sizes (cuFuncGetParamInfo, where the driver has
//      it), the shared memory against THAT device's opt-in limit, and raises the function's
//      dynamic shared-memory limit when its dynamic plus static shared memory exceed 48 KB (the
//      default per block). Thread-safe: concurrent
//      first calls load once;
//   3. carves the workspace (layout() below), fills the decay slot with cuMemsetD32Async (one per
//      run of equal values: capturable in a CUDA graph, nothing read from host memory at replay),
//      copies state_in into the workspace when it overlaps state_out, and launches the entry's
//      kernels in order on the stream (grid, block = 32 * num_warps, dynamic shared memory and
//      arguments from the manifest; hidden parameters 0).
// Errors are returned with a message, never exit()/abort(). No entry: ONE warning per
// (configuration, arch) per process (hla_log.h), and the caller runs the token-serial kernel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "hla_aot_manifest.h"
#include "hla_kernels.h"

namespace hla {
namespace aot {

// Device pointers of one prefill (contiguous, contract shapes: hla_kernels.h).
struct Tensors {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const float* state_in = nullptr;
  void* o = nullptr;
  float* state_out = nullptr;
};

enum class Status {
  kLaunched,     // the AOT kernels were launched on the stream
  kTokenSerial,  // no AOT path for this call (no entry: warned once; null workspace; unaligned
                 // tensor: warned once): the caller runs the token-serial kernel
  kError,        // `message` says what failed; nothing more was launched
};

// The configuration a prefill with these Params needs; false when no AOT kernel serves it
// (T <= 1: decode; hla3).
bool config_for(const Params& p, DType dtype, Config* out);

// Workspace carve-up, offsets from the workspace base rounded up to kAlign bytes: the entry's
// buffers in manifest order, then the decay slot (float32 [H]), then the state copy (float32
// [B, H, N]), each starting at a multiple of kAlign. bytes = kAlign (room to align the base) +
// the sum of every slot's size rounded up to kAlign.
constexpr uint64_t kAlign = 256;
struct Layout {
  std::vector<uint64_t> buffers;
  uint64_t decay = 0, state_copy = 0, bytes = 0;
};
bool layout(const Entry& e, int64_t B, int64_t T, int64_t H, Layout* out, std::string* error);

// Bytes of workspace the AOT prefill needs for p on the current device (the current context's
// device, else device 0); 0 when it does not apply (decode, hla3, no entry) or fails (the failure
// is reported by prefill()). Grows with B, T and H: the size for the largest shapes covers all.
size_t workspace_bytes(const Params& p, DType dtype);

// True when the current device has an entry for p's configuration (prefill would launch it given
// a workspace).
bool available(const Params& p, DType dtype);

// Runs the prefill (see the top of this file). `workspace`: workspace_bytes(p, dtype) bytes of
// device memory, or null (then kTokenSerial). `stream`: a CUstream / cudaStream_t (null: the
// legacy default stream of the current context).
Status prefill(const Params& p, DType dtype, const Tensors& t, void* workspace, void* stream, std::string* message);

// The kernel directories searched, in order (docs/AOT_KERNELS.md section 4): every entry of
// $HLA_DEPLOY_KERNEL_DIR (':'-separated), hla_kernels/ beside the shared library holding this
// code, kernels/ in the hla-deploy cache ($HLA_DEPLOY_CACHE, else $XDG_CACHE_HOME/hla-deploy, else
// ~/.cache/hla-deploy; a leading ~ in a variable is $HOME, a relative path is made absolute, as
// hla_deploy.native.locations reads them). Read once per process.
std::vector<std::string> search_dirs();

// Forgets manifests, lookups, loaded modules and warnings, and re-reads the search directories
// (tests only: modules are not unloaded).
void reset_for_tests();

}  // namespace aot
}  // namespace hla
