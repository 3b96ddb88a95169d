// Mocked TensorRT objects and small helpers shared by the trt_hla plugin test executables
// (hla_trt_plugin_test.cpp, hla_trt_plugin_aot_test.cpp): IDimensionExpr, IExprBuilder, a logger
// that keeps warnings and errors, tensor descriptions and the field collection the ONNX parser
// passes. No libnvinfer needed (only the header-declared virtual interfaces).
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "NvInferRuntime.h"

using namespace nvinfer1;

// ---- mocks -------------------------------------------------------------------------------------
class MockDimImpl : public apiv::VDimensionExpr {
 public:
  MockDimImpl(bool constant, int64_t value) : mConstant(constant), mValue(value) {}
  bool isConstant() const override { return mConstant; }
  int64_t getConstantValue() const override { return mConstant ? mValue : INT64_MIN; }
  bool isSizeTensor() const override { return false; }

 private:
  bool mConstant;
  int64_t mValue;
};

class MockDim : public IDimensionExpr {
 public:
  MockDim(bool constant, int64_t value) : mImplObj(constant, value) { mImpl = &mImplObj; }
  ~MockDim() override = default;

 private:
  MockDimImpl mImplObj;
};

class MockExprBuilderImpl : public apiv::VExprBuilder {
 public:
  IDimensionExpr const* constant(int64_t value) override {
    mDims.emplace_back(new MockDim(true, value));
    return mDims.back().get();
  }
  IDimensionExpr const* operation(DimensionOperation, IDimensionExpr const&, IDimensionExpr const&) override {
    mDims.emplace_back(new MockDim(false, 0));
    return mDims.back().get();
  }
  IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override {
    return nullptr;
  }
  std::vector<std::unique_ptr<MockDim>> mDims;
};

class MockExprBuilder : public IExprBuilder {
 public:
  MockExprBuilder() { mImpl = &mImplObj; }
  ~MockExprBuilder() override = default;

 private:
  MockExprBuilderImpl mImplObj;
};

class CaptureLogger : public ILogger {
 public:
  void log(Severity severity, AsciiChar const* msg) noexcept override {
    if (severity <= Severity::kWARNING) mMessages.emplace_back(msg);
  }
  bool saw(char const* part) const {
    for (auto const& m : mMessages)
      if (m.find(part) != std::string::npos) return true;
    return false;
  }
  std::vector<std::string> mMessages;
};

class Finder : public ILoggerFinder {
 public:
  explicit Finder(ILogger* logger) : mLogger(logger) {}
  ~Finder() override = default;
  ILogger* findLogger() override { return mLogger; }

 private:
  ILogger* mLogger;
};

// ---- helpers -----------------------------------------------------------------------------------
static Dims dims(std::vector<int64_t> const& v) {
  Dims d{};
  d.nbDims = static_cast<int32_t>(v.size());
  for (size_t i = 0; i < v.size(); ++i) d.d[i] = v[i];
  return d;
}

static PluginTensorDesc desc(std::vector<int64_t> const& v, DataType t, TensorFormat f = TensorFormat::kLINEAR) {
  PluginTensorDesc p{};
  p.dims = dims(v);
  p.type = t;
  p.format = f;
  p.scale = 1.0f;
  return p;
}

static DynamicPluginTensorDesc ddesc(std::vector<int64_t> const& build, std::vector<int64_t> const& mn,
                                     std::vector<int64_t> const& mx, DataType t) {
  DynamicPluginTensorDesc d{};
  d.desc = desc(build, t);
  d.min = dims(mn);
  d.opt = dims(mx);
  d.max = dims(mx);
  return d;
}

struct Fields {
  std::string variant;
  std::vector<float> decay;
  int32_t normalize;
  float eps, ridge;
  std::vector<PluginField> f;
  PluginFieldCollection fc{};
  Fields(char const* v, std::vector<float> d, int32_t n, float e, float r)
      : variant(v), decay(std::move(d)), normalize(n), eps(e), ridge(r) {
    // As onnx-tensorrt passes node attributes (STRING -> kCHAR incl. NUL, FLOATS, INT, FLOAT).
    f.emplace_back("variant", variant.c_str(), PluginFieldType::kCHAR, (int32_t)variant.size() + 1);
    f.emplace_back("decay", decay.data(), PluginFieldType::kFLOAT32, (int32_t)decay.size());
    f.emplace_back("normalize", &normalize, PluginFieldType::kINT32, 1);
    f.emplace_back("eps", &eps, PluginFieldType::kFLOAT32, 1);
    f.emplace_back("ridge", &ridge, PluginFieldType::kFLOAT32, 1);
    fc.nbFields = (int32_t)f.size();
    fc.fields = f.data();
  }
};

static bool sameFields(PluginFieldCollection const* a, PluginFieldCollection const* b) {
  if (a == nullptr || b == nullptr || a->nbFields != b->nbFields) return false;
  for (int32_t i = 0; i < a->nbFields; ++i) {
    PluginField const& x = a->fields[i];
    PluginField const& y = b->fields[i];
    if (std::strcmp(x.name, y.name) != 0 || x.type != y.type || x.length != y.length) return false;
    size_t elem = (x.type == PluginFieldType::kCHAR) ? 1 : 4;
    if (std::memcmp(x.data, y.data, elem * static_cast<size_t>(x.length)) != 0) return false;
  }
  return true;
}

static PluginField const* findField(PluginFieldCollection const* fc, char const* name) {
  for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    if (std::strcmp(fc->fields[i].name, name) == 0) return &fc->fields[i];
  return nullptr;
}

using GetCreatorsFn = IPluginCreatorInterface* const* (*)(int32_t&);
using SetLoggerFinderFn = void (*)(ILoggerFinder*);
