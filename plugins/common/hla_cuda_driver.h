// The CUDA driver API as the AOT launcher uses it, loaded at run time with dlopen("libcuda.so.1"):
// minimal typedefs of our own (values and signatures as in the driver's cuda.h, CUDA 12.x / 13),
// so this file and the launcher compile with a plain C++ compiler and no CUDA headers.
//
// `HLA_DEPLOY_CUDA_DRIVER` (environment) names another library to load instead: tests point it at
// a mocked driver (plugins/common/tests/fake_cuda_driver.cpp) that records every call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace hla {
namespace cu {

using Result = int;                       // CUresult
using Device = int;                       // CUdevice
using DevicePtr = unsigned long long;     // CUdeviceptr
using Context = struct CUctx_st*;         // CUcontext
using Module = struct CUmod_st*;          // CUmodule
using Function = struct CUfunc_st*;       // CUfunction
using Stream = struct CUstream_st*;       // CUstream

constexpr Result kSuccess = 0;                   // CUDA_SUCCESS
constexpr Result kErrorInvalidValue = 1;         // CUDA_ERROR_INVALID_VALUE
constexpr Result kErrorNotSupported = 801;       // CUDA_ERROR_NOT_SUPPORTED
constexpr Result kErrorNotFound = 500;           // CUDA_ERROR_NOT_FOUND

constexpr int kAttrComputeCapabilityMajor = 75;    // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kAttrComputeCapabilityMinor = 76;    // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
constexpr int kAttrMaxSharedPerBlockOptin = 97;    // CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
constexpr int kFuncAttrSharedSizeBytes = 1;        // CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES (static)
constexpr int kFuncAttrMaxDynamicShared = 8;       // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
constexpr int kFuncCachePreferShared = 1;          // CU_FUNC_CACHE_PREFER_SHARED

// The entry points, resolved once. Optional ones (newer drivers) are null when absent.
struct Api {
  Result (*Init)(unsigned) = nullptr;
  Result (*DriverGetVersion)(int*) = nullptr;
  Result (*GetErrorName)(Result, const char**) = nullptr;
  Result (*GetErrorString)(Result, const char**) = nullptr;
  Result (*DeviceGet)(Device*, int) = nullptr;
  Result (*DeviceGetAttribute)(int*, int, Device) = nullptr;
  Result (*CtxGetCurrent)(Context*) = nullptr;
  Result (*CtxGetDevice)(Device*) = nullptr;
  Result (*CtxPushCurrent)(Context) = nullptr;   // cuCtxPushCurrent_v2
  Result (*CtxPopCurrent)(Context*) = nullptr;   // cuCtxPopCurrent_v2
  Result (*CtxGetId)(Context, unsigned long long*) = nullptr;  // optional (CUDA 12.0+)
  Result (*StreamGetCtx)(Stream, Context*) = nullptr;
  Result (*ModuleLoadData)(Module*, const void*) = nullptr;
  Result (*ModuleGetFunction)(Function*, Module, const char*) = nullptr;
  Result (*FuncGetAttribute)(int*, int, Function) = nullptr;
  Result (*FuncSetAttribute)(Function, int, int) = nullptr;
  Result (*FuncSetCacheConfig)(Function, int) = nullptr;
  Result (*FuncGetParamInfo)(Function, size_t, size_t*, size_t*) = nullptr;  // optional (CUDA 12.4+)
  Result (*LaunchKernel)(Function, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                         Stream, void**, void**) = nullptr;
  Result (*MemsetD32Async)(DevicePtr, unsigned, size_t, Stream) = nullptr;
  Result (*MemcpyDtoDAsync)(DevicePtr, DevicePtr, size_t, Stream) = nullptr;  // cuMemcpyDtoDAsync_v2
};

// The driver, loaded and cuInit(0)-ed once per process (thread-safe). nullptr when it cannot be
// loaded; `error` (may be null) then says why (library name, dlerror, the missing symbol or
// cuInit's error).
const Api* driver(std::string* error);

// "CUDA_ERROR_X (what it means)" for a driver result, "CUresult N" when the driver has no name for it.
std::string error_text(const Api& api, Result r);

}  // namespace cu
}  // namespace hla
