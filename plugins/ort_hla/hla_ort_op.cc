// ONNX Runtime custom op `hla_deploy::HLARecurrentStep`: attributes, input checks, dispatch to the
// shared kernels (plugins/common), and the library entry point RegisterCustomOps.
// Contract: docs/OP_CONTRACT.md. Declarations and shapes: hla_ort_op.h.
#include "hla_ort_op.h"

#include "hla_attrs.h"
#include "hla_log.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <sstream>

namespace hla_ort {
namespace {

// ---- small helpers ---------------------------------------------------------------------------

OrtStatusPtr Error(const OrtApi& api, const std::string& msg, OrtErrorCode code = ORT_INVALID_ARGUMENT) {
  return api.CreateStatus(code, (std::string(kOpType) + ": " + msg).c_str());
}

std::string ShapeStr(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

// True when the node has an attribute `name` of any type (ORT has no "has attribute" call:
// an attribute exists when one of the typed getters succeeds).
bool HasAttribute(const OrtApi& api, const OrtKernelInfo* info, const char* name) {
  auto ok = [&](OrtStatusPtr st) {
    if (st == nullptr) return true;
    api.ReleaseStatus(st);
    return false;
  };
  float f;
  int64_t i;
  size_t n = 0;
  return ok(api.KernelInfoGetAttribute_float(info, name, &f)) ||
         ok(api.KernelInfoGetAttribute_int64(info, name, &i)) ||
         ok(api.KernelInfoGetAttribute_string(info, name, nullptr, &n)) ||
         ok(api.KernelInfoGetAttributeArray_float(info, name, nullptr, &n)) ||
         ok(api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &n));
}

// Reads an optional attribute with a typed getter. Missing -> keeps the default; present with
// another type -> error naming the attribute and the expected type.
template <typename Getter>
OrtStatusPtr ReadOptional(const OrtApi& api, const OrtKernelInfo* info, const char* name,
                          const char* type_name, Getter getter) {
  OrtStatusPtr st = getter();
  if (st == nullptr) return nullptr;
  api.ReleaseStatus(st);
  if (!HasAttribute(api, info, name)) return nullptr;  // absent: default
  return Error(api, std::string("attribute '") + name + "' must be of type " + type_name);
}

}  // namespace

ONNXTensorElementDataType OnnxType(hla::DType dtype) {
  switch (dtype) {
    case hla::DType::kFloat32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case hla::DType::kFloat16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case hla::DType::kBFloat16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
  }
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

const char* OnnxTypeName(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    default: return "an unsupported type";
  }
}

// ---- attributes -------------------------------------------------------------------------------

OrtStatusPtr ReadAttributes(const OrtApi& api, const OrtKernelInfo* info, OpAttributes* out) {
  OpAttributes a;
  OrtStatusPtr st = nullptr;

  // variant (string)
  std::string variant = "hla2";
  {
    size_t size = 0;
    st = ReadOptional(api, info, "variant", "string", [&]() -> OrtStatusPtr {
      OrtStatusPtr s = api.KernelInfoGetAttribute_string(info, "variant", nullptr, &size);
      if (s != nullptr) return s;
      std::string buf(size, '\0');
      s = api.KernelInfoGetAttribute_string(info, "variant", &buf[0], &size);
      if (s != nullptr) return s;
      variant.assign(buf.c_str());
      return nullptr;
    });
    if (st != nullptr) return st;
    if (!hla::parse_variant(variant.c_str(), &a.variant)) {
      return Error(api, "attribute 'variant' is '" + variant + "', expected one of hla2, ahla, hla3");
    }
  }

  // decay (floats; a single float is accepted too)
  {
    size_t n = 0;
    OrtStatusPtr s = api.KernelInfoGetAttributeArray_float(info, "decay", nullptr, &n);
    if (s == nullptr && n == 0) {
      // ORT reports a FLOAT (scalar) attribute as an empty FLOATS list: read it as a scalar.
      float one = 0.0f;
      OrtStatusPtr s1 = api.KernelInfoGetAttribute_float(info, "decay", &one);
      if (s1 == nullptr) {
        a.decay.assign(1, one);
      } else {
        api.ReleaseStatus(s1);
        a.decay.clear();
      }
    } else if (s == nullptr) {
      a.decay.assign(n, 0.0f);
      if (n > 0) {
        s = api.KernelInfoGetAttributeArray_float(info, "decay", a.decay.data(), &n);
        if (s != nullptr) return s;
      }
    } else {
      api.ReleaseStatus(s);
      float one = 1.0f;
      s = api.KernelInfoGetAttribute_float(info, "decay", &one);
      if (s == nullptr) {
        a.decay.assign(1, one);
      } else {
        api.ReleaseStatus(s);
        if (HasAttribute(api, info, "decay")) return Error(api, "attribute 'decay' must be of type floats");
        a.decay.assign(1, 1.0f);
      }
    }
  }

  // normalize (int)
  {
    int64_t v = 0;
    st = ReadOptional(api, info, "normalize", "int",
                      [&]() { return api.KernelInfoGetAttribute_int64(info, "normalize", &v); });
    if (st != nullptr) return st;
    if (v != 0 && v != 1) return Error(api, "attribute 'normalize' is " + std::to_string(v) + ", expected 0 or 1");
    a.normalize = v != 0;
  }

  // eps, ridge (float)
  st = ReadOptional(api, info, "eps", "float", [&]() { return api.KernelInfoGetAttribute_float(info, "eps", &a.eps); });
  if (st != nullptr) return st;
  st = ReadOptional(api, info, "ridge", "float",
                    [&]() { return api.KernelInfoGetAttribute_float(info, "ridge", &a.ridge); });
  if (st != nullptr) return st;

  // The value rules (decay range, hla3 decay, eps, ridge) are the contract's, shared with TensorRT.
  const std::string err = hla::check_attribute_values(a.variant, a.decay.data(), a.decay.size(), a.eps, a.ridge);
  if (!err.empty()) return Error(api, err);
  *out = std::move(a);
  return nullptr;
}

// ---- kernel -----------------------------------------------------------------------------------

HLAKernel::HLAKernel(const OrtApi& api, OpAttributes attrs, hla::DType dtype, Device device)
    : api_(api), attrs_(std::move(attrs)), dtype_(dtype), device_(device), num_threads_(0) {
  if (const char* env = std::getenv("HLA_DEPLOY_NUM_THREADS")) {
    num_threads_ = std::atoi(env);
  }
}

OrtStatusPtr HLAKernel::ComputeV2(OrtKernelContext* context) {
  try {
    return Compute(context);
  } catch (const Ort::Exception& e) {
    return Error(api_, e.what(), e.GetOrtErrorCode());
  } catch (const std::exception& e) {
    return Error(api_, e.what(), ORT_RUNTIME_EXCEPTION);
  } catch (...) {
    return Error(api_, "unknown exception", ORT_RUNTIME_EXCEPTION);
  }
}

OrtStatusPtr HLAKernel::Compute(OrtKernelContext* context) {
  Ort::KernelContext ctx(context);
  if (ctx.GetInputCount() != static_cast<size_t>(kNumInputs) ||
      ctx.GetOutputCount() != static_cast<size_t>(kNumOutputs)) {
    return Error(api_, "expected 4 inputs (q, k, v, state) and 2 outputs (o, state_out), got " +
                           std::to_string(ctx.GetInputCount()) + " inputs and " +
                           std::to_string(ctx.GetOutputCount()) + " outputs");
  }
  static const char* kNames[kNumInputs] = {"q", "k", "v", "state"};
  Ort::ConstValue in[kNumInputs] = {ctx.GetInput(0), ctx.GetInput(1), ctx.GetInput(2), ctx.GetInput(3)};
  std::vector<int64_t> shape[kNumInputs];
  for (int i = 0; i < kNumInputs; ++i) {
    if (in[i] == nullptr || !in[i].IsTensor()) {
      return Error(api_, std::string("input '") + kNames[i] + "' is missing or not a tensor");
    }
    auto info = in[i].GetTensorTypeAndShapeInfo();
    shape[i] = info.GetShape();
    const ONNXTensorElementDataType want = i < 3 ? OnnxType(dtype_) : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    if (info.GetElementType() != want) {
      return Error(api_, std::string("input '") + kNames[i] + "' has dtype " + OnnxTypeName(info.GetElementType()) +
                             ", expected " + OnnxTypeName(want) +
                             (i < 3 ? " (q, k and v must share one dtype)" : " (the state is float32 always)"));
    }
    const size_t want_rank = i < 3 ? 4 : 3;
    if (shape[i].size() != want_rank) {
      return Error(api_, std::string("input '") + kNames[i] + "' has rank " + std::to_string(shape[i].size()) +
                             " (shape " + ShapeStr(shape[i]) + "), expected rank " + std::to_string(want_rank) +
                             (i < 3 ? (i == 2 ? " [B, T, H, dv]" : " [B, T, H, d]") : " [B, H, N]"));
    }
  }
  const auto& qs = shape[0];
  const auto& ks = shape[1];
  const auto& vs = shape[2];
  const auto& ss = shape[3];
  const int64_t B = qs[0], T = qs[1], H = qs[2], d = qs[3], dv = vs[3];
  if (ks != qs) {
    return Error(api_, "input 'k' has shape " + ShapeStr(ks) + ", expected q's shape " + ShapeStr(qs));
  }
  if (vs[0] != B || vs[1] != T || vs[2] != H) {
    return Error(api_, "input 'v' has shape " + ShapeStr(vs) + ", expected [B, T, H, dv] = [" + std::to_string(B) +
                           ", " + std::to_string(T) + ", " + std::to_string(H) + ", dv] from q " + ShapeStr(qs));
  }
  if (ss[0] != B || ss[1] != H) {
    return Error(api_, "input 'state' has shape " + ShapeStr(ss) + ", expected [B, H, N] with B = " +
                           std::to_string(B) + ", H = " + std::to_string(H) + " from q " + ShapeStr(qs));
  }
  if (T < 1) return Error(api_, "input 'q' has T = " + std::to_string(T) + " (shape " + ShapeStr(qs) + "), expected T >= 1");
  if (B < 1 || H < 1 || d < 1 || dv < 1) {
    return Error(api_, "inputs q " + ShapeStr(qs) + " / v " + ShapeStr(vs) + " have an empty dimension; expected B, H, d, dv >= 1");
  }
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (B > kMax || T > kMax || H > kMax || d > kMax || dv > kMax) {
    return Error(api_, "input 'q' shape " + ShapeStr(qs) + " has a dimension larger than 2^31 - 1");
  }
  const int64_t N = hla::state_size(attrs_.variant, static_cast<int>(d), static_cast<int>(dv), attrs_.normalize, attrs_.ridge);
  if (ss[2] != N) {
    std::ostringstream os;
    os << "input 'state' has last dim " << ss[2] << " (shape " << ShapeStr(ss) << "), expected N = " << N
       << " for variant=" << hla::variant_name(attrs_.variant) << ", d=" << d << ", dv=" << dv
       << ", normalize=" << (attrs_.normalize ? 1 : 0) << ", ridge=" << attrs_.ridge;
    return Error(api_, os.str());
  }
  if (attrs_.decay.size() != 1 && static_cast<int64_t>(attrs_.decay.size()) != H) {
    return Error(api_, "attribute 'decay' has " + std::to_string(attrs_.decay.size()) +
                           " values, expected 1 or H = " + std::to_string(H) + " (one per head)");
  }

  hla::Params p;
  p.variant = attrs_.variant;
  p.B = static_cast<int32_t>(B);
  p.T = static_cast<int32_t>(T);
  p.H = static_cast<int32_t>(H);
  p.d = static_cast<int32_t>(d);
  p.dv = static_cast<int32_t>(dv);
  p.normalize = attrs_.normalize;
  p.eps = attrs_.eps;
  p.ridge = attrs_.ridge;
  p.decay = attrs_.decay.data();
  p.num_decay = static_cast<int32_t>(attrs_.decay.size());
  if (const char* msg = hla::validate(p)) return Error(api_, msg);

  auto o = ctx.GetOutput(0, vs);
  auto state_out = ctx.GetOutput(1, ss);
  const void* q_ptr = in[0].GetTensorRawData();
  const void* k_ptr = in[1].GetTensorRawData();
  const void* v_ptr = in[2].GetTensorRawData();
  const float* s_ptr = in[3].GetTensorData<float>();
  void* o_ptr = o.GetTensorMutableRawData();
  float* so_ptr = state_out.GetTensorMutableData<float>();

  if (device_ == Device::kCPU) {
    hla::forward_cpu(p, dtype_, q_ptr, k_ptr, v_ptr, s_ptr, o_ptr, so_ptr, num_threads_);
    return nullptr;
  }
#ifdef HLA_WITH_CUDA
  // CUDA EP: device pointers, ORT's compute stream; scratch from ORT's device allocator. Freeing
  // it right after the (asynchronous) launch is safe because ORT's allocator hands memory out in
  // the order of this same stream. A prefill (T > 1) runs the AOT Triton kernels when this
  // configuration has them for the device (hla::forward_cuda decides); their workspace is
  // hla::cuda_workspace_size bytes (0: the token-serial kernel, no workspace).
  void* stream = ctx.GetGPUComputeStream();
  // plugins/common's warnings (one per configuration without AOT kernels) go to ORT's logger.
  const OrtLogger* logger = nullptr;
  if (OrtStatusPtr st = api_.KernelContext_GetLogger(context, &logger)) {
    api_.ReleaseStatus(st);
    logger = nullptr;
  }
  struct Sink {
    static void log(void* user, hla::LogLevel level, const char* message) {
      auto* self = static_cast<Sink*>(user);
      OrtStatusPtr st = self->api.Logger_LogMessage(
          self->logger, level == hla::LogLevel::kError ? ORT_LOGGING_LEVEL_ERROR : ORT_LOGGING_LEVEL_WARNING,
          message, __FILE__, __LINE__, kOpType);
      if (st != nullptr) {  // the logger refused: stderr
        self->api.ReleaseStatus(st);
        std::fprintf(stderr, "[hla-deploy] %s\n", message);
      }
    }
    const OrtApi& api;
    const OrtLogger* logger;
  } sink{api_, logger};
  std::unique_ptr<hla::ScopedLogSink> scoped;
  if (logger != nullptr) scoped.reset(new hla::ScopedLogSink(&Sink::log, &sink));
  const size_t ws_bytes = hla::cuda_workspace_size(p, dtype_);
  // Frees the workspace and releases the allocator handle (KernelContext_GetAllocator hands out
  // an OrtAllocator that the caller must release) on every path out of this block.
  struct Workspace {
    const OrtApi& api;
    OrtAllocator* alloc = nullptr;
    void* ptr = nullptr;
    ~Workspace() {
      if (alloc != nullptr) {
        if (ptr != nullptr) alloc->Free(alloc, ptr);
        api.ReleaseAllocator(alloc);
      }
    }
  } ws{api_};
  if (ws_bytes > 0) {
    Ort::ConstMemoryInfo mem = in[3].GetTensorMemoryInfo();
    Ort::MemoryInfo dev_mem("Cuda", OrtDeviceAllocator, mem.GetDeviceId(), OrtMemTypeDefault);
    ws.alloc = ctx.GetAllocator(*dev_mem);
    if (ws.alloc == nullptr) return Error(api_, "no CUDA allocator available for the workspace", ORT_RUNTIME_EXCEPTION);
    ws.ptr = ws.alloc->Alloc(ws.alloc, ws_bytes);
    if (ws.ptr == nullptr) {
      return Error(api_, "could not allocate " + std::to_string(ws_bytes) + " bytes of CUDA workspace", ORT_RUNTIME_EXCEPTION);
    }
  }
  void* workspace = ws.ptr;
  const int err = hla::forward_cuda(p, dtype_, q_ptr, k_ptr, v_ptr, s_ptr, o_ptr, so_ptr, workspace, stream);
  if (err != 0) {
    return Error(api_, "hla::forward_cuda failed (error " + std::to_string(err) + "): " + hla::last_error_message(),
                 ORT_RUNTIME_EXCEPTION);
  }
  return nullptr;
#else
  return Error(api_, "this library was built without CUDA (HLA_WITH_CUDA=OFF)", ORT_NOT_IMPLEMENTED);
#endif
}

// ---- op ---------------------------------------------------------------------------------------

HLAOp::HLAOp(hla::DType dtype, Device device) : dtype_(dtype), device_(device) {}

const char* HLAOp::GetExecutionProviderType() const {
  return device_ == Device::kCUDA ? "CUDAExecutionProvider" : "CPUExecutionProvider";
}

ONNXTensorElementDataType HLAOp::GetInputType(size_t index) const {
  return index < 3 ? OnnxType(dtype_) : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}

ONNXTensorElementDataType HLAOp::GetOutputType(size_t index) const {
  return index == 0 ? OnnxType(dtype_) : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}

OrtStatusPtr HLAOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** op_kernel) const {
  try {
    OpAttributes attrs;
    if (OrtStatusPtr st = ReadAttributes(api, info, &attrs)) return st;
    *op_kernel = new HLAKernel(api, std::move(attrs), dtype_, device_);
    return nullptr;
  } catch (const Ort::Exception& e) {
    return Error(api, e.what(), e.GetOrtErrorCode());
  } catch (const std::exception& e) {
    return Error(api, e.what(), ORT_RUNTIME_EXCEPTION);
  } catch (...) {
    return api.CreateStatus(ORT_RUNTIME_EXCEPTION, "HLARecurrentStep: unknown exception while creating the kernel");
  }
}

}  // namespace hla_ort

// ---- library entry point ------------------------------------------------------------------------

namespace {

struct OpRegistry {
  std::vector<std::unique_ptr<hla_ort::HLAOp>> ops;
  OpRegistry() {
    const hla::DType dtypes[] = {hla::DType::kFloat32, hla::DType::kFloat16, hla::DType::kBFloat16};
    for (hla::DType t : dtypes) ops.emplace_back(new hla_ort::HLAOp(t, hla_ort::Device::kCPU));
#ifdef HLA_WITH_CUDA
    for (hla::DType t : dtypes) ops.emplace_back(new hla_ort::HLAOp(t, hla_ort::Device::kCUDA));
#endif
  }
};

// Ops must outlive every session that uses them: they live for the life of the library.
OpRegistry& Registry() {
  static OpRegistry* registry = new OpRegistry();
  return *registry;
}

// Domains created for sessions; released at process exit by ORT's users, kept alive here.
std::mutex g_domains_mutex;
std::vector<OrtCustomOpDomain*> g_domains;

}  // namespace

extern "C" OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  if (api_base == nullptr) return nullptr;  // cannot even create a status
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // Runtime older than the headers we were built with (1.21): no OrtApi to report with, so use
    // the oldest one every runtime has.
    const OrtApi* any = api_base->GetApi(1);
    return any ? any->CreateStatus(ORT_FAIL, "hla_deploy custom-op library needs ONNX Runtime >= 1.21 (ORT API 21)")
               : nullptr;
  }
  Ort::InitApi(api);
  OrtCustomOpDomain* domain = nullptr;
  try {  // no C++ exception (std::bad_alloc) may cross this C entry point
    if (OrtStatus* st = api->CreateCustomOpDomain(hla_ort::kDomain, &domain)) return st;
    for (auto& op : Registry().ops) {
      if (OrtStatus* st = api->CustomOpDomain_Add(domain, op.get())) {
        api->ReleaseCustomOpDomain(domain);
        return st;
      }
    }
    if (OrtStatus* st = api->AddCustomOpDomain(options, domain)) {
      api->ReleaseCustomOpDomain(domain);
      return st;
    }
    std::lock_guard<std::mutex> lock(g_domains_mutex);
    g_domains.push_back(domain);  // sessions keep referring to it
  } catch (...) {
    // The domain may already be added to the options (then the options own it): not released here.
    return api->CreateStatus(ORT_FAIL, "hla_deploy custom-op library: out of memory while registering HLARecurrentStep");
  }
  return nullptr;
}
