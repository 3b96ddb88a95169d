// ONNX Runtime custom op `hla_deploy::HLARecurrentStep` (docs/OP_CONTRACT.md).
//
// This file only translates ORT tensors and attributes into hla::Params and calls the shared
// kernels of plugins/common (hla::forward_cpu / hla::forward_cuda). No kernel code lives here.
//
//   inputs : q [B, T, H, d], k [B, T, H, d], v [B, T, H, dv]   float32 | float16 | bfloat16
//            state [B, H, N]                                  float32
//   outputs: o [B, T, H, dv] (q's dtype), state_out [B, H, N] float32
//   attrs  : variant (string, "hla2"), decay (floats, [1.0]), normalize (int, 0),
//            eps (float, 1e-6), ridge (float, 0.0)
//
// One OrtCustomOp is registered per (activation dtype, execution provider): ORT picks the one
// whose input types match the node. Every error is returned as an OrtStatus naming the tensor or
// attribute and what was expected; nothing throws across the C ABI.
#pragma once

// The library never links libonnxruntime: RegisterCustomOps initialises the C++ API from the
// OrtApiBase handed in by the runtime that loads it.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <string>
#include <vector>

#include "hla_kernels.h"

namespace hla_ort {

constexpr const char* kDomain = "hla_deploy";
constexpr const char* kOpType = "HLARecurrentStep";
constexpr int kNumInputs = 4;   // q, k, v, state
constexpr int kNumOutputs = 2;  // o, state_out

enum class Device { kCPU, kCUDA };

// Attributes of one node, read once when the kernel is created.
struct OpAttributes {
  hla::Variant variant = hla::Variant::kHLA2;
  std::vector<float> decay{1.0f};
  bool normalize = false;
  float eps = 1e-6f;
  float ridge = 0.0f;
};

// Reads and checks the node's attributes (values that do not depend on input shapes).
// Returns nullptr or an ORT_INVALID_ARGUMENT status naming the attribute.
OrtStatusPtr ReadAttributes(const OrtApi& api, const OrtKernelInfo* info, OpAttributes* out);

struct HLAKernel {
  HLAKernel(const OrtApi& api, OpAttributes attrs, hla::DType dtype, Device device);
  // Called by ORT for every run of the node. Never throws.
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  OrtStatusPtr Compute(OrtKernelContext* context);
  const OrtApi& api_;
  OpAttributes attrs_;
  hla::DType dtype_;
  Device device_;
  int num_threads_;  // CPU threads for forward_cpu (0 = hardware concurrency)
};

struct HLAOp : Ort::CustomOpBase<HLAOp, HLAKernel, /*WithStatus=*/true> {
  HLAOp(hla::DType dtype, Device device);

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** op_kernel) const;
  const char* GetName() const { return kOpType; }
  const char* GetExecutionProviderType() const;
  size_t GetInputTypeCount() const { return kNumInputs; }
  ONNXTensorElementDataType GetInputType(size_t index) const;
  size_t GetOutputTypeCount() const { return kNumOutputs; }
  ONNXTensorElementDataType GetOutputType(size_t index) const;

  hla::DType dtype() const { return dtype_; }

 private:
  hla::DType dtype_;
  Device device_;
};

// ONNX element type of an activation dtype, and its name for messages.
ONNXTensorElementDataType OnnxType(hla::DType dtype);
const char* OnnxTypeName(ONNXTensorElementDataType type);

}  // namespace hla_ort

extern "C" {
// Entry point looked up by ORT (SessionOptions.register_custom_ops_library / RegisterCustomOpsLibrary).
// Registers domain `hla_deploy` with op `HLARecurrentStep` for CPU (and CUDA when built with it).
#if defined(_WIN32)
__declspec(dllexport)
#else
__attribute__((visibility("default")))
#endif
OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base);
}
