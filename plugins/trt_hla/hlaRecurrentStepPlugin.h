// HLARecurrentStep TensorRT plugin (IPluginV3, TensorRT >= 10.3): one HLA mixer step over T
// tokens with a float32 recurrent state. The kernels are hla::forward_cuda (plugins/common).
//
//   input 0  q      [B, T, H, d]   float32 | float16 | bfloat16
//   input 1  k      [B, T, H, d]   same as q
//   input 2  v      [B, T, H, dv]  same as q
//   input 3  state  [B, H, N]      float32
//   output 0 o      [B, T, H, dv]  same as q
//   output 1 state_out [B, H, N]   float32
//
// Fields (= ONNX node attributes): variant (CHAR), decay (FLOAT32 x 1 or H), normalize (INT32),
// eps (FLOAT32), ridge (FLOAT32). Semantics: docs/OP_CONTRACT.md.
#pragma once

#include <string>
#include <vector>

#include "NvInferRuntime.h"
#include "hlaRecurrentStepAttrs.h"

namespace hla {
namespace trt {

// Logs through the ILogger found via setLoggerFinder(), or to stderr when TensorRT gave none.
void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;
void set_logger_finder(nvinfer1::ILoggerFinder* finder) noexcept;

class HLARecurrentStepPlugin : public nvinfer1::IPluginV3,
                               public nvinfer1::IPluginV3OneCore,
                               public nvinfer1::IPluginV3OneBuild,
                               public nvinfer1::IPluginV3OneRuntime {
 public:
  explicit HLARecurrentStepPlugin(Attrs attrs);
  HLARecurrentStepPlugin(HLARecurrentStepPlugin const& other);
  HLARecurrentStepPlugin& operator=(HLARecurrentStepPlugin const&) = delete;
  ~HLARecurrentStepPlugin() override = default;

  Attrs const& attrs() const { return mAttrs; }

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  char const* getPluginName() const noexcept override;
  char const* getPluginVersion() const noexcept override;
  char const* getPluginNamespace() const noexcept override;

  // IPluginV3OneBuild
  int32_t getNbOutputs() const noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                             nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
                          int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override;
  int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
  char const* getTimingCacheID() noexcept override;
  char const* getMetadataString() noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
                        int32_t nbOutputs) noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                  void const* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

 private:
  void buildSerialFields();

  Attrs mAttrs;
  std::string mVariantName;  // CHAR field data, NUL-terminated
  int32_t mNormalize = 0;
  std::string mCacheId;      // attribute string for getTimingCacheID / getMetadataString
  std::vector<nvinfer1::PluginField> mSerialFields;
  nvinfer1::PluginFieldCollection mSerialFC{};
};

class HLARecurrentStepPluginCreator : public nvinfer1::IPluginCreatorV3One {
 public:
  HLARecurrentStepPluginCreator();
  ~HLARecurrentStepPluginCreator() override = default;

  char const* getPluginName() const noexcept override;
  char const* getPluginVersion() const noexcept override;
  char const* getPluginNamespace() const noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
  nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;

 private:
  std::vector<nvinfer1::PluginField> mFields;
  nvinfer1::PluginFieldCollection mFC{};
};

}  // namespace trt
}  // namespace hla
