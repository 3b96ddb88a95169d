// HLARecurrentStep TensorRT plugin (IPluginV3): TensorRT glue around hla::forward_cuda.
#include "hlaRecurrentStepPlugin.h"

#include "hla_log.h"

#include <cstdio>
#include <exception>
#include <new>
#include <sstream>

using namespace nvinfer1;

namespace hla {
namespace trt {
namespace {

// Field types are passed through by value: keep the TensorRT-free mirror in step.
static_assert(static_cast<int32_t>(FieldType::kFLOAT16) == static_cast<int32_t>(PluginFieldType::kFLOAT16), "");
static_assert(static_cast<int32_t>(FieldType::kFLOAT32) == static_cast<int32_t>(PluginFieldType::kFLOAT32), "");
static_assert(static_cast<int32_t>(FieldType::kFLOAT64) == static_cast<int32_t>(PluginFieldType::kFLOAT64), "");
static_assert(static_cast<int32_t>(FieldType::kINT8) == static_cast<int32_t>(PluginFieldType::kINT8), "");
static_assert(static_cast<int32_t>(FieldType::kINT16) == static_cast<int32_t>(PluginFieldType::kINT16), "");
static_assert(static_cast<int32_t>(FieldType::kINT32) == static_cast<int32_t>(PluginFieldType::kINT32), "");
static_assert(static_cast<int32_t>(FieldType::kCHAR) == static_cast<int32_t>(PluginFieldType::kCHAR), "");
static_assert(static_cast<int32_t>(FieldType::kDIMS) == static_cast<int32_t>(PluginFieldType::kDIMS), "");
static_assert(static_cast<int32_t>(FieldType::kUNKNOWN) == static_cast<int32_t>(PluginFieldType::kUNKNOWN), "");
static_assert(static_cast<int32_t>(FieldType::kBF16) == static_cast<int32_t>(PluginFieldType::kBF16), "");
static_assert(static_cast<int32_t>(FieldType::kINT64) == static_cast<int32_t>(PluginFieldType::kINT64), "");

// Data types too: the dtype rules (hlaRecurrentStepAttrs) see nvinfer1::DataType by value.
static_assert(static_cast<int32_t>(TensorType::kFLOAT) == static_cast<int32_t>(DataType::kFLOAT), "");
static_assert(static_cast<int32_t>(TensorType::kHALF) == static_cast<int32_t>(DataType::kHALF), "");
static_assert(static_cast<int32_t>(TensorType::kINT8) == static_cast<int32_t>(DataType::kINT8), "");
static_assert(static_cast<int32_t>(TensorType::kINT32) == static_cast<int32_t>(DataType::kINT32), "");
static_assert(static_cast<int32_t>(TensorType::kBOOL) == static_cast<int32_t>(DataType::kBOOL), "");
static_assert(static_cast<int32_t>(TensorType::kUINT8) == static_cast<int32_t>(DataType::kUINT8), "");
static_assert(static_cast<int32_t>(TensorType::kFP8) == static_cast<int32_t>(DataType::kFP8), "");
static_assert(static_cast<int32_t>(TensorType::kBF16) == static_cast<int32_t>(DataType::kBF16), "");
static_assert(static_cast<int32_t>(TensorType::kINT64) == static_cast<int32_t>(DataType::kINT64), "");
static_assert(static_cast<int32_t>(TensorType::kINT4) == static_cast<int32_t>(DataType::kINT4), "");

void logError(std::string const& msg) noexcept { log(ILogger::Severity::kERROR, msg); }

TensorType toTensorType(DataType t) { return static_cast<TensorType>(static_cast<int32_t>(t)); }

// float32, float16 or bfloat16: the types hla::forward_cuda takes for q, k, v, o.
bool isActivationType(DataType t) {
  DType unused = DType::kFloat32;
  return kernel_dtype(toTensorType(t), &unused);
}

// q, k, v, state types of TensorRT tensor descriptions, then the dtype rules.
template <typename Desc>
std::string checkInputTypes(Desc const* in) {
  TensorType types[kNbInputs];
  for (int32_t i = 0; i < kNbInputs; ++i) types[i] = toTensorType(in[i].type);
  return check_input_types(types, kNbInputs);
}

// o, state_out types given q's type.
template <typename Desc>
std::string checkOutputTypes(DataType q, Desc const* out) {
  TensorType const types[kNbOutputs] = {toTensorType(out[0].type), toTensorType(out[1].type)};
  return check_output_types(toTensorType(q), types, kNbOutputs);
}

Shape toShape(Dims const& dims) {
  Shape s;
  s.nb_dims = dims.nbDims;
  if (s.nb_dims < 0 || s.nb_dims > 8) {
    s.nb_dims = -1;  // reported as a rank error
    return s;
  }
  for (int32_t i = 0; i < s.nb_dims; ++i) s.d[i] = dims.d[i];
  return s;
}

// Build-time shape: a dimension is known when it is a build-time constant.
Shape toShape(DimsExprs const& dims) {
  Shape s;
  s.nb_dims = dims.nbDims;
  if (s.nb_dims < 0 || s.nb_dims > 8) {
    s.nb_dims = -1;
    return s;
  }
  for (int32_t i = 0; i < s.nb_dims; ++i) {
    IDimensionExpr const* e = dims.d[i];
    s.d[i] = (e != nullptr && e->isConstant()) ? e->getConstantValue() : -1;
  }
  return s;
}

// Configure-time shape: desc.dims has -1 for runtime dims; a dim with min == max is known.
Shape toShape(DynamicPluginTensorDesc const& t) {
  Shape s = toShape(t.desc.dims);
  for (int32_t i = 0; i < s.nb_dims; ++i) {
    if (s.d[i] == -1 && t.min.nbDims == s.nb_dims && t.max.nbDims == s.nb_dims && t.min.d[i] == t.max.d[i]) {
      s.d[i] = t.min.d[i];
    }
  }
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// HLARecurrentStepPlugin

HLARecurrentStepPlugin::HLARecurrentStepPlugin(Attrs attrs) : mAttrs(std::move(attrs)) {
  mVariantName = variant_name(mAttrs.variant);
  mNormalize = mAttrs.normalize ? 1 : 0;
  std::ostringstream os;
  os << "variant=" << mVariantName << ";decay=";
  for (size_t i = 0; i < mAttrs.decay.size(); ++i) os << (i ? "," : "") << mAttrs.decay[i];
  os << ";normalize=" << mNormalize << ";eps=" << mAttrs.eps << ";ridge=" << mAttrs.ridge;
  mCacheId = os.str();
}

HLARecurrentStepPlugin::HLARecurrentStepPlugin(HLARecurrentStepPlugin const& other)
    : HLARecurrentStepPlugin(other.mAttrs) {}

IPluginCapability* HLARecurrentStepPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept {
  switch (type) {
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
  }
  return nullptr;
}

IPluginV3* HLARecurrentStepPlugin::clone() noexcept {
  try {
    return new HLARecurrentStepPlugin(*this);
  } catch (std::exception const& e) {
    logError(std::string(kPluginName) + ": clone failed: " + e.what());
  }
  return nullptr;
}

char const* HLARecurrentStepPlugin::getPluginName() const noexcept { return kPluginName; }
char const* HLARecurrentStepPlugin::getPluginVersion() const noexcept { return kPluginVersion; }
char const* HLARecurrentStepPlugin::getPluginNamespace() const noexcept { return kPluginNamespace; }

int32_t HLARecurrentStepPlugin::getNbOutputs() const noexcept { return kNbOutputs; }

int32_t HLARecurrentStepPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                                   DataType const* inputTypes, int32_t nbInputs) const noexcept {
  if (outputTypes == nullptr || inputTypes == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
    logError(std::string(kPluginName) + ": expected 4 inputs (q, k, v, state) and 2 outputs (o, state_out), got " +
             std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
    return -1;
  }
  TensorType types[kNbInputs];
  for (int32_t i = 0; i < kNbInputs; ++i) types[i] = toTensorType(inputTypes[i]);
  std::string err = check_input_types(types, kNbInputs);
  if (!err.empty()) {
    logError(err);
    return -1;
  }
  outputTypes[0] = inputTypes[0];  // o in q's dtype (float32, float16 or bfloat16)
  outputTypes[1] = DataType::kFLOAT;  // state_out float32
  return 0;
}

int32_t HLARecurrentStepPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
                                                DimsExprs const* /*shapeInputs*/, int32_t nbShapeInputs,
                                                DimsExprs* outputs, int32_t nbOutputs,
                                                IExprBuilder& /*exprBuilder*/) noexcept {
  try {
    if (inputs == nullptr || outputs == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs ||
        nbShapeInputs != 0) {
      logError(std::string(kPluginName) + ": expected 4 inputs (q, k, v, state), no shape inputs and 2 outputs");
      return -1;
    }
    Shape in[kNbInputs];
    for (int32_t i = 0; i < kNbInputs; ++i) in[i] = toShape(inputs[i]);
    std::string err = check_shapes(mAttrs, in, kNbInputs, /*require_static_heads=*/false);
    if (!err.empty()) {
      logError(err);
      return -1;
    }
    // o [B, T, H, dv]: B, T, H from q, dv from v (dynamic B, T stay expressions).
    outputs[0].nbDims = 4;
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = inputs[0].d[1];
    outputs[0].d[2] = inputs[0].d[2];
    outputs[0].d[3] = inputs[2].d[3];
    // state_out [B, H, N] = state's shape.
    outputs[1] = inputs[3];
    return 0;
  } catch (std::exception const& e) {
    logError(std::string(kPluginName) + ": getOutputShapes failed: " + e.what());
  }
  return -1;
}

bool HLARecurrentStepPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                                       int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (inOut == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 ||
      pos >= kNbInputs + kNbOutputs) {
    return false;
  }
  PluginTensorDesc const& desc = inOut[pos].desc;
  if (desc.format != TensorFormat::kLINEAR) return false;
  switch (pos) {
    case 0: return isActivationType(desc.type);               // q: float32, float16, bfloat16
    case 1:                                                    // k
    case 2:                                                    // v
    case 4: return desc.type == inOut[0].desc.type;           // o
    case 3:                                                    // state
    case 5: return desc.type == DataType::kFLOAT;             // state_out
    default: return false;
  }
}

int32_t HLARecurrentStepPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                                DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept {
  try {
    if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
      logError(std::string(kPluginName) + ": configurePlugin expects 4 inputs and 2 outputs");
      return -1;
    }
    PluginTensorDesc const inDesc[kNbInputs] = {in[0].desc, in[1].desc, in[2].desc, in[3].desc};
    PluginTensorDesc const outDesc[kNbOutputs] = {out[0].desc, out[1].desc};
    Shape shapes[kNbInputs];
    for (int32_t i = 0; i < kNbInputs; ++i) shapes[i] = toShape(in[i]);
    std::string err = checkInputTypes(inDesc);
    if (err.empty()) err = checkOutputTypes(inDesc[0].type, outDesc);
    if (err.empty()) err = check_shapes(mAttrs, shapes, kNbInputs, /*require_static_heads=*/true);
    if (!err.empty()) {
      logError(err);
      return -1;
    }
    return 0;
  } catch (std::exception const& e) {
    logError(std::string(kPluginName) + ": configurePlugin failed: " + e.what());
  }
  return -1;
}

size_t HLARecurrentStepPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                                                DynamicPluginTensorDesc const* /*outputs*/,
                                                int32_t /*nbOutputs*/) const noexcept {
  try {
    if (inputs == nullptr || nbInputs != kNbInputs) return 0;
    // Enough for the largest shapes of the profile (the workspace grows with B and T).
    Shape q = toShape(inputs[0].max);
    Shape v = toShape(inputs[2].max);
    if (q.nb_dims != 4 || v.nb_dims != 4) return 0;
    Params p = make_params(mAttrs, q, v);
    DType dtype = DType::kFloat32;
    if (validate(p) != nullptr || !kernel_dtype(toTensorType(inputs[0].desc.type), &dtype)) {
      return 0;  // configurePlugin reports the error
    }
    return cuda_workspace_size(p, dtype);
  } catch (std::exception const&) {
  }
  return 0;
}

char const* HLARecurrentStepPlugin::getTimingCacheID() noexcept { return mCacheId.c_str(); }
char const* HLARecurrentStepPlugin::getMetadataString() noexcept { return mCacheId.c_str(); }

int32_t HLARecurrentStepPlugin::onShapeChange(PluginTensorDesc const* in, int32_t nbInputs,
                                              PluginTensorDesc const* out, int32_t nbOutputs) noexcept {
  try {
    if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
      logError(std::string(kPluginName) + ": onShapeChange expects 4 inputs and 2 outputs");
      return -1;
    }
    Shape shapes[kNbInputs];
    for (int32_t i = 0; i < kNbInputs; ++i) shapes[i] = toShape(in[i].dims);
    Params p;
    std::string err = checkInputTypes(in);
    if (err.empty()) err = checkOutputTypes(in[0].type, out);
    if (err.empty()) err = check_runtime_shapes(mAttrs, shapes, kNbInputs, &p);
    if (!err.empty()) {
      logError(err);
      return -1;
    }
    return 0;
  } catch (std::exception const& e) {
    logError(std::string(kPluginName) + ": onShapeChange failed: " + e.what());
  }
  return -1;
}

int32_t HLARecurrentStepPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
                                        void const* const* inputs, void* const* outputs, void* workspace,
                                        cudaStream_t stream) noexcept {
  if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr) return -1;
  Params p;
  DType dtype = DType::kFloat32;
  try {
    // Every input's shape and type, not only q's and v's: the kernel reads k and v as q's dtype and
    // reads/writes the state by the sizes in p, so a mismatch must stop here (TensorRT checked
    // them in supportsFormatCombination and onShapeChange too).
    Shape shapes[kNbInputs];
    for (int32_t i = 0; i < kNbInputs; ++i) shapes[i] = toShape(inputDesc[i].dims);
    std::string err = checkInputTypes(inputDesc);
    if (err.empty()) err = checkOutputTypes(inputDesc[0].type, outputDesc);
    if (err.empty()) err = check_runtime_shapes(mAttrs, shapes, kNbInputs, &p);
    if (err.empty() && !kernel_dtype(toTensorType(inputDesc[0].type), &dtype)) {
      err = std::string(kPluginName) + ": no kernel for q's type";  // unreachable after checkInputTypes
    }
    if (!err.empty()) {
      logError(err);
      return -1;
    }
  } catch (std::exception const& e) {
    logError(std::string(kPluginName) + ": enqueue failed: " + e.what());
    return -1;
  }
  // state_in and state_out are distinct TensorRT buffers (TensorRT does not alias them). A prefill
  // (T > 1) runs the AOT Triton kernels when this configuration has them for the device, in the
  // workspace getWorkspaceSize asked for (hla::cuda_workspace_size of the profile's largest shapes).
  int rc = forward_cuda(p, dtype, inputs[0], inputs[1], inputs[2],
                        static_cast<float const*>(inputs[3]), outputs[0], static_cast<float*>(outputs[1]), workspace,
                        static_cast<void*>(stream));
  if (rc != 0) {
    logError(std::string(kPluginName) + ": hla::forward_cuda failed (error " + std::to_string(rc) +
             "): " + last_error_message());
    return rc;
  }
  return 0;
}

IPluginV3* HLARecurrentStepPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept { return clone(); }

void HLARecurrentStepPlugin::buildSerialFields() {
  mSerialFields.clear();
  mSerialFields.emplace_back("variant", mVariantName.c_str(), PluginFieldType::kCHAR,
                             static_cast<int32_t>(mVariantName.size() + 1));
  mSerialFields.emplace_back("decay", mAttrs.decay.data(), PluginFieldType::kFLOAT32,
                             static_cast<int32_t>(mAttrs.decay.size()));
  mSerialFields.emplace_back("normalize", &mNormalize, PluginFieldType::kINT32, 1);
  mSerialFields.emplace_back("eps", &mAttrs.eps, PluginFieldType::kFLOAT32, 1);
  mSerialFields.emplace_back("ridge", &mAttrs.ridge, PluginFieldType::kFLOAT32, 1);
  mSerialFC.nbFields = static_cast<int32_t>(mSerialFields.size());
  mSerialFC.fields = mSerialFields.data();
}

PluginFieldCollection const* HLARecurrentStepPlugin::getFieldsToSerialize() noexcept {
  try {
    buildSerialFields();
    return &mSerialFC;
  } catch (std::exception const& e) {
    logError(std::string(kPluginName) + ": getFieldsToSerialize failed: " + e.what());
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// HLARecurrentStepPluginCreator

HLARecurrentStepPluginCreator::HLARecurrentStepPluginCreator() {
  // The ONNX parser passes exactly these node attributes (absent ones keep their defaults).
  mFields.emplace_back("variant", nullptr, PluginFieldType::kCHAR, 1);
  mFields.emplace_back("decay", nullptr, PluginFieldType::kFLOAT32, 1);
  mFields.emplace_back("normalize", nullptr, PluginFieldType::kINT32, 1);
  mFields.emplace_back("eps", nullptr, PluginFieldType::kFLOAT32, 1);
  mFields.emplace_back("ridge", nullptr, PluginFieldType::kFLOAT32, 1);
  mFC.nbFields = static_cast<int32_t>(mFields.size());
  mFC.fields = mFields.data();
}

char const* HLARecurrentStepPluginCreator::getPluginName() const noexcept { return kPluginName; }
char const* HLARecurrentStepPluginCreator::getPluginVersion() const noexcept { return kPluginVersion; }
char const* HLARecurrentStepPluginCreator::getPluginNamespace() const noexcept { return kPluginNamespace; }
PluginFieldCollection const* HLARecurrentStepPluginCreator::getFieldNames() noexcept { return &mFC; }

IPluginV3* HLARecurrentStepPluginCreator::createPlugin(char const* name, PluginFieldCollection const* fc,
                                                       TensorRTPhase /*phase*/) noexcept {
  std::string const node = (name != nullptr && name[0] != '\0') ? name : "<unnamed>";
  try {
    std::vector<Field> fields;
    if (fc != nullptr && fc->nbFields > 0) {
      if (fc->fields == nullptr) {
        logError(std::string(kPluginName) + " node '" + node + "': field collection without fields");
        return nullptr;
      }
      for (int32_t i = 0; i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        fields.push_back(Field{f.name, f.data, static_cast<FieldType>(static_cast<int32_t>(f.type)), f.length});
      }
    }
    Attrs attrs;
    std::string err = parse_fields(fields.data(), static_cast<int32_t>(fields.size()), &attrs);
    if (!err.empty()) {
      logError(err + " (node '" + node + "')");
      return nullptr;
    }
    return new HLARecurrentStepPlugin(std::move(attrs));
  } catch (std::exception const& e) {
    logError(std::string(kPluginName) + " node '" + node + "': createPlugin failed: " + e.what());
  }
  return nullptr;
}

}  // namespace trt
}  // namespace hla
