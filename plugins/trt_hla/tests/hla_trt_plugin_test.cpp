// Test of the built plugin library libhla_trt_plugin.so WITHOUT TensorRT's libraries: it is
// dlopen()ed like IPluginRegistry::loadLibrary does, its two entry points are called, and the
// creator and the IPluginV3 capability interfaces are driven through their (header-declared,
// virtual) methods with mocked TensorRT objects (IDimensionExpr, IExprBuilder, ILoggerFinder).
// When a CUDA device is present, enqueue() is also run and compared with hla::forward_cpu
// (float32: hla2, ahla, hla3; float16: hla2; bfloat16: hla2, ahla).
//
// Usage: hla_trt_plugin_test [path/to/libhla_trt_plugin.so]   (exit code 0 = all passed)
#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "NvInferRuntime.h"
#include "hla_check.h"
#include "hla_trt_mocks.h"
#include "hla_dtype.h"
#include "hla_kernels.h"

using namespace nvinfer1;

// ---- GPU check of enqueue against hla::forward_cpu ----------------------------------------------
// q, k, v, o in `type` (float32, float16 or bfloat16), states float32. The reference is
// hla::forward_cpu on the same (already rounded) inputs. The token-serial kernel accumulates in
// float32 and rounds o to `type` once, so o may differ by about one unit in the last place of
// `type`; a prefill that runs the AOT Triton kernels (hla::cuda_prefill_aot: cubins for this
// configuration in a kernel directory) rounds tensor-core operands to `type`, so it gets the Triton
// forward's bounds (tests/test_triton_hla.py: float32 1e-3, float16 3e-3, bfloat16 2e-2 of max|x|).
static void test_enqueue_on_gpu(IPluginV3OneRuntime* rt, IPluginV3OneBuild* build, hla::Variant variant,
                                bool normalize, std::vector<float> const& decay, DataType type, int B = 2,
                                int T = 5, int H = 2, int d = 8, int dv = 8) {
  int64_t const N = hla::state_size(variant, d, dv, normalize, 0.0f);
  size_t const nq = (size_t)B * T * H * d, nv = (size_t)B * T * H * dv, ns = (size_t)B * H * N;
  hla::DType const kt = type == DataType::kHALF   ? hla::DType::kFloat16
                        : type == DataType::kBF16 ? hla::DType::kBFloat16
                                                  : hla::DType::kFloat32;
  size_t const esz = type == DataType::kFLOAT ? 4 : 2;
  // float32 values -> bytes of `type`, and back.
  auto pack = [&](std::vector<float> const& x) {
    std::vector<unsigned char> b(x.size() * esz);
    for (size_t i = 0; i < x.size(); ++i) {
      if (esz == 4) {
        std::memcpy(&b[i * 4], &x[i], 4);
      } else {
        uint16_t h = type == DataType::kHALF ? hla::detail::float_to_half(x[i]) : hla::detail::float_to_bf16(x[i]);
        std::memcpy(&b[i * 2], &h, 2);
      }
    }
    return b;
  };
  auto unpack = [&](std::vector<unsigned char> const& b) {
    std::vector<float> x(b.size() / esz);
    for (size_t i = 0; i < x.size(); ++i) {
      if (esz == 4) {
        std::memcpy(&x[i], &b[i * 4], 4);
      } else {
        uint16_t h;
        std::memcpy(&h, &b[i * 2], 2);
        x[i] = type == DataType::kHALF ? hla::detail::half_to_float(h) : hla::detail::bf16_to_float(h);
      }
    }
    return x;
  };
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.f, 0.5f);
  std::vector<float> q(nq), k(nq), v(nv), s(ns);
  for (auto& x : q) x = g(rng);
  for (auto& x : k) x = g(rng);
  for (auto& x : v) x = g(rng);
  for (auto& x : s) x = 0.1f * g(rng);
  std::vector<unsigned char> qb = pack(q), kb = pack(k), vb = pack(v), o_refb(nv * esz);
  std::vector<float> s_ref(ns);
  hla::Params p;
  p.variant = variant;
  p.B = B; p.T = T; p.H = H; p.d = d; p.dv = dv;
  p.normalize = normalize;
  p.decay = decay.data();
  p.num_decay = (int32_t)decay.size();
  hla::forward_cpu(p, kt, qb.data(), kb.data(), vb.data(), s.data(), o_refb.data(), s_ref.data(), 1);
  cudaFree(nullptr);  // make the primary context current before asking which path runs
  bool const aot = hla::cuda_prefill_aot(p, kt);
  std::vector<float> const o_ref = unpack(o_refb);

  DataType const F = DataType::kFLOAT;
  PluginTensorDesc in[4] = {desc({B, T, H, d}, type), desc({B, T, H, d}, type), desc({B, T, H, dv}, type),
                            desc({B, H, N}, F)};
  PluginTensorDesc out[2] = {desc({B, T, H, dv}, type), desc({B, H, N}, F)};
  DynamicPluginTensorDesc din[4] = {ddesc({B, T, H, d}, {B, T, H, d}, {B, T, H, d}, type),
                                    ddesc({B, T, H, d}, {B, T, H, d}, {B, T, H, d}, type),
                                    ddesc({B, T, H, dv}, {B, T, H, dv}, {B, T, H, dv}, type),
                                    ddesc({B, H, N}, {B, H, N}, {B, H, N}, F)};
  DynamicPluginTensorDesc dout[2] = {ddesc({B, T, H, dv}, {B, T, H, dv}, {B, T, H, dv}, type),
                                     ddesc({B, H, N}, {B, H, N}, {B, H, N}, F)};
  CHECK(build->configurePlugin(din, 4, dout, 2) == 0);
  CHECK(rt->onShapeChange(in, 4, out, 2) == 0);
  size_t ws = build->getWorkspaceSize(din, 4, dout, 2);

  auto dmalloc = [](size_t bytes) {
    void* ptr = nullptr;
    CHECK(cudaMalloc(&ptr, bytes) == cudaSuccess);
    return ptr;
  };
  void* dq = dmalloc(nq * esz);
  void* dk = dmalloc(nq * esz);
  void* dvv = dmalloc(nv * esz);
  void* ds = dmalloc(ns * 4);
  void* dout_o = dmalloc(nv * esz);
  void* dout_s = dmalloc(ns * 4);
  void* dws = ws > 0 ? dmalloc(ws) : nullptr;
  cudaMemcpy(dq, qb.data(), nq * esz, cudaMemcpyHostToDevice);
  cudaMemcpy(dk, kb.data(), nq * esz, cudaMemcpyHostToDevice);
  cudaMemcpy(dvv, vb.data(), nv * esz, cudaMemcpyHostToDevice);
  cudaMemcpy(ds, s.data(), ns * 4, cudaMemcpyHostToDevice);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  void const* inputs[4] = {dq, dk, dvv, ds};
  void* outputs[2] = {dout_o, dout_s};
  CHECK(rt->enqueue(in, out, inputs, outputs, dws, stream) == 0);
  CHECK(cudaStreamSynchronize(stream) == cudaSuccess);
  std::vector<unsigned char> o_gpub(nv * esz);
  std::vector<float> s_gpu(ns);
  cudaMemcpy(o_gpub.data(), dout_o, nv * esz, cudaMemcpyDeviceToHost);
  cudaMemcpy(s_gpu.data(), dout_s, ns * 4, cudaMemcpyDeviceToHost);
  std::vector<float> const o_gpu = unpack(o_gpub);
  double err_o = 0, err_s = 0, mag_o = 0, mag_s = 0;
  for (size_t i = 0; i < nv; ++i) {
    err_o = std::fmax(err_o, std::fabs(o_gpu[i] - o_ref[i]));
    mag_o = std::fmax(mag_o, std::fabs(o_ref[i]));
  }
  for (size_t i = 0; i < ns; ++i) {
    err_s = std::fmax(err_s, std::fabs(s_gpu[i] - s_ref[i]));
    mag_s = std::fmax(mag_s, std::fabs(s_ref[i]));
  }
  char const* tname = type == DataType::kHALF ? "float16" : type == DataType::kBF16 ? "bfloat16" : "float32";
  std::printf("enqueue vs forward_cpu (%s, normalize=%d, %s%s): path=%s max|do| = %.3g (max|o| %.3g), "
              "max|dstate| = %.3g (max|state| %.3g)\n",
              hla::variant_name(variant), normalize ? 1 : 0, tname, T > 5 ? (", T=" + std::to_string(T) + " d=" + std::to_string(d)).c_str() : "",
              aot ? "aot" : "serial", err_o, mag_o, err_s, mag_s);
  if (aot) {
    double const tol = type == DataType::kFLOAT ? 1e-3 : type == DataType::kHALF ? 3e-3 : 2e-2;
    CHECK(mag_o > 0 && err_o <= tol * mag_o);
    CHECK(mag_s > 0 && err_s <= tol * mag_s);
  } else {
    // o: float32 1e-4; float16 / bfloat16 one unit in the last place (2^-10 / 2^-7 of |o|) plus float32 noise.
    double const tol_o = type == DataType::kFLOAT ? 1e-4 : type == DataType::kHALF ? 2e-3 : 1.6e-2;
    CHECK(mag_o > 0 && err_o <= tol_o * (1 + mag_o));
    CHECK(mag_s > 0 && err_s <= 1e-4 * (1 + mag_s));
  }
  cudaFree(dq); cudaFree(dk); cudaFree(dvv); cudaFree(ds); cudaFree(dout_o); cudaFree(dout_s);
  if (dws) cudaFree(dws);
  cudaStreamDestroy(stream);
}

int main(int argc, char** argv) {
  char const* path = argc > 1 ? argv[1] : HLA_TRT_PLUGIN_PATH;
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    std::printf("FAIL: dlopen(%s): %s\n", path, dlerror());
    return 1;
  }
  auto getCreators = reinterpret_cast<GetCreatorsFn>(dlsym(lib, "getCreators"));
  auto setLoggerFinder = reinterpret_cast<SetLoggerFinderFn>(dlsym(lib, "setLoggerFinder"));
  CHECK(getCreators != nullptr);
  CHECK(setLoggerFinder != nullptr);
  CHECK(dlsym(lib, "_ZN3hla10state_sizeENS_7VariantEiibf") == nullptr);  // internals stay hidden
  if (getCreators == nullptr || setLoggerFinder == nullptr) return 1;

  CaptureLogger logger;
  Finder finder(&logger);
  setLoggerFinder(&finder);

  // ---- creator ----
  int32_t nb = -1;
  IPluginCreatorInterface* const* creators = getCreators(nb);
  CHECK(nb == 1 && creators != nullptr && creators[0] != nullptr);
  CHECK(std::strcmp(creators[0]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
  auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
  CHECK(std::strcmp(creator->getPluginName(), "HLARecurrentStep") == 0);
  CHECK(std::strcmp(creator->getPluginVersion(), "1") == 0);
  CHECK(std::strcmp(creator->getPluginNamespace(), "") == 0);
  PluginFieldCollection const* names = creator->getFieldNames();
  CHECK(names != nullptr && names->nbFields == 5);
  CHECK(findField(names, "variant") && findField(names, "variant")->type == PluginFieldType::kCHAR);
  CHECK(findField(names, "decay") && findField(names, "decay")->type == PluginFieldType::kFLOAT32);
  CHECK(findField(names, "normalize") && findField(names, "normalize")->type == PluginFieldType::kINT32);
  CHECK(findField(names, "eps") && findField(names, "eps")->type == PluginFieldType::kFLOAT32);
  CHECK(findField(names, "ridge") && findField(names, "ridge")->type == PluginFieldType::kFLOAT32);

  // Bad attributes: nullptr and an error naming the attribute and the node.
  Fields bad("hla9", {1.0f}, 0, 1e-6f, 0.f);
  CHECK(creator->createPlugin("bad_node", &bad.fc, TensorRTPhase::kBUILD) == nullptr);
  CHECK(logger.saw("'variant'") && logger.saw("hla9") && logger.saw("bad_node"));
  Fields bad_ridge("hla3", {1.0f}, 0, 1e-6f, 0.5f);
  CHECK(creator->createPlugin("n", &bad_ridge.fc, TensorRTPhase::kBUILD) == nullptr);
  CHECK(logger.saw("'ridge'"));

  // Defaults (no fields).
  PluginFieldCollection empty{};
  IPluginV3* dflt = creator->createPlugin("defaults", &empty, TensorRTPhase::kBUILD);
  CHECK(dflt != nullptr);
  if (dflt) {
    auto* rt = static_cast<IPluginV3OneRuntime*>(dflt->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* ser = rt->getFieldsToSerialize();
    CHECK(ser && std::strcmp(static_cast<char const*>(findField(ser, "variant")->data), "hla2") == 0);
    CHECK(ser && *static_cast<float const*>(findField(ser, "decay")->data) == 1.0f);
    CHECK(ser && *static_cast<float const*>(findField(ser, "eps")->data) == 1e-6f);
    delete dflt;
  }

  // ---- a plugin as the ONNX parser creates it: ahla, normalize, per-head decay (H = 4) ----
  Fields good("ahla", {0.9f, 0.8f, 0.7f, 0.95f}, 1, 1e-5f, 0.f);
  IPluginV3* plugin = creator->createPlugin("layer0", &good.fc, TensorRTPhase::kBUILD);
  CHECK(plugin != nullptr);
  if (plugin == nullptr) return 1;
  auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
  auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
  auto* rt = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
  CHECK(core && build && rt);
  CHECK(std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0);
  CHECK(std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0);
  CHECK(std::strcmp(rt->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0);
  CHECK(std::strcmp(core->getPluginName(), "HLARecurrentStep") == 0);
  CHECK(std::strcmp(core->getPluginVersion(), "1") == 0);
  CHECK(std::strcmp(core->getPluginNamespace(), "") == 0);
  CHECK(build->getNbOutputs() == 2);
  CHECK(build->getTimingCacheID() != nullptr &&
        std::string(build->getTimingCacheID()).find("variant=ahla") != std::string::npos);

  // N for ahla, normalize, d = 8, dv = 16: 2*d*dv + 2*d = 272 (docs/OP_CONTRACT.md).
  int64_t const H = 4, d = 8, dv = 16, N = 272;

  // Data types.
  DataType outTypes[2];
  DataType inHalf[4] = {DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kFLOAT};
  CHECK(build->getOutputDataTypes(outTypes, 2, inHalf, 4) == 0);
  CHECK(outTypes[0] == DataType::kHALF && outTypes[1] == DataType::kFLOAT);
  DataType inFloat[4] = {DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT};
  CHECK(build->getOutputDataTypes(outTypes, 2, inFloat, 4) == 0);
  CHECK(outTypes[0] == DataType::kFLOAT && outTypes[1] == DataType::kFLOAT);
  DataType halfState[4] = {DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kHALF};
  CHECK(build->getOutputDataTypes(outTypes, 2, halfState, 4) != 0);
  CHECK(logger.saw("'state' is float16, expected float32"));
  DataType mixed[4] = {DataType::kHALF, DataType::kFLOAT, DataType::kHALF, DataType::kFLOAT};
  CHECK(build->getOutputDataTypes(outTypes, 2, mixed, 4) != 0);
  CHECK(logger.saw("'k' is float32, expected the same type as q"));
  // bfloat16: accepted like float16, o in bfloat16, state_out float32.
  DataType inBf16[4] = {DataType::kBF16, DataType::kBF16, DataType::kBF16, DataType::kFLOAT};
  outTypes[0] = outTypes[1] = DataType::kINT8;
  CHECK(build->getOutputDataTypes(outTypes, 2, inBf16, 4) == 0);
  CHECK(outTypes[0] == DataType::kBF16 && outTypes[1] == DataType::kFLOAT);
  DataType bf16State[4] = {DataType::kBF16, DataType::kBF16, DataType::kBF16, DataType::kBF16};
  CHECK(build->getOutputDataTypes(outTypes, 2, bf16State, 4) != 0);
  CHECK(logger.saw("'state' is bfloat16, expected float32"));
  // Mixed activation dtypes with bfloat16 are rejected, naming the tensor and q's type.
  DataType bfHalf[4] = {DataType::kBF16, DataType::kHALF, DataType::kBF16, DataType::kFLOAT};
  CHECK(build->getOutputDataTypes(outTypes, 2, bfHalf, 4) != 0);
  CHECK(logger.saw("input 1 'k' is float16, expected the same type as q (bfloat16)"));
  DataType bfFloatV[4] = {DataType::kBF16, DataType::kBF16, DataType::kFLOAT, DataType::kFLOAT};
  CHECK(build->getOutputDataTypes(outTypes, 2, bfFloatV, 4) != 0);
  CHECK(logger.saw("input 2 'v' is float32, expected the same type as q (bfloat16)"));
  DataType halfBfV[4] = {DataType::kHALF, DataType::kHALF, DataType::kBF16, DataType::kFLOAT};
  CHECK(build->getOutputDataTypes(outTypes, 2, halfBfV, 4) != 0);
  CHECK(logger.saw("input 2 'v' is bfloat16, expected the same type as q (float16)"));
  DataType fp8[4] = {DataType::kFP8, DataType::kFP8, DataType::kFP8, DataType::kFLOAT};
  CHECK(build->getOutputDataTypes(outTypes, 2, fp8, 4) != 0);
  CHECK(logger.saw("'q' is fp8, expected float32, float16 or bfloat16"));
  DataType ints[4] = {DataType::kINT32, DataType::kINT32, DataType::kINT32, DataType::kFLOAT};
  CHECK(build->getOutputDataTypes(outTypes, 2, ints, 4) != 0);
  CHECK(build->getOutputDataTypes(outTypes, 1, inFloat, 4) != 0);

  // Formats: linear only; q float32|float16|bfloat16; k, v, o = q's type; state, state_out float32.
  {
    DynamicPluginTensorDesc io[6] = {};
    auto set = [&](int i, DataType t, TensorFormat f = TensorFormat::kLINEAR) {
      io[i].desc.type = t;
      io[i].desc.format = f;
    };
    DataType const activations[] = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16};
    for (DataType t : activations) {
      set(0, t);
      CHECK(build->supportsFormatCombination(0, io, 4, 2));
      for (int pos : {1, 2, 4}) {
        set(pos, t);
        CHECK(build->supportsFormatCombination(pos, io, 4, 2));
        for (DataType other : activations) {  // every other activation type: mixed, rejected
          if (other == t) continue;
          set(pos, other);
          CHECK(!build->supportsFormatCombination(pos, io, 4, 2));
        }
        set(pos, t, TensorFormat::kHWC8);
        CHECK(!build->supportsFormatCombination(pos, io, 4, 2));
        set(pos, t);
      }
      for (int pos : {3, 5}) {
        set(pos, DataType::kFLOAT);
        CHECK(build->supportsFormatCombination(pos, io, 4, 2));
        for (DataType other : {DataType::kHALF, DataType::kBF16}) {
          set(pos, other);
          CHECK(!build->supportsFormatCombination(pos, io, 4, 2));
        }
      }
    }
    for (DataType t : {DataType::kINT32, DataType::kINT8, DataType::kFP8, DataType::kINT64, DataType::kBOOL}) {
      set(0, t);
      CHECK(!build->supportsFormatCombination(0, io, 4, 2));
    }
    set(0, DataType::kFLOAT, TensorFormat::kCHW32);
    CHECK(!build->supportsFormatCombination(0, io, 4, 2));
    set(0, DataType::kFLOAT);
    CHECK(!build->supportsFormatCombination(6, io, 4, 2));
    CHECK(!build->supportsFormatCombination(0, io, 3, 2));
  }

  // Output shapes with dynamic B and T (non-constant expressions) and static H, d, dv, N.
  {
    MockExprBuilder eb;
    MockDim Bq(false, 0), Tq(false, 0), Bk(false, 0), Tk(false, 0), Bv(false, 0), Tv(false, 0), Bs(false, 0);
    MockDim h1(true, H), h2(true, H), h3(true, H), h4(true, H), d1(true, d), d2(true, d), dv1(true, dv),
        n1(true, N), nbad(true, N - 1);
    DimsExprs in[4] = {};
    in[0].nbDims = 4; in[0].d[0] = &Bq; in[0].d[1] = &Tq; in[0].d[2] = &h1; in[0].d[3] = &d1;
    in[1].nbDims = 4; in[1].d[0] = &Bk; in[1].d[1] = &Tk; in[1].d[2] = &h2; in[1].d[3] = &d2;
    in[2].nbDims = 4; in[2].d[0] = &Bv; in[2].d[1] = &Tv; in[2].d[2] = &h3; in[2].d[3] = &dv1;
    in[3].nbDims = 3; in[3].d[0] = &Bs; in[3].d[1] = &h4; in[3].d[2] = &n1;
    DimsExprs out[2] = {};
    CHECK(build->getOutputShapes(in, 4, nullptr, 0, out, 2, eb) == 0);
    CHECK(out[0].nbDims == 4 && out[0].d[0] == &Bq && out[0].d[1] == &Tq && out[0].d[2] == &h1 &&
          out[0].d[3] == &dv1);
    CHECK(out[1].nbDims == 3 && out[1].d[0] == &Bs && out[1].d[1] == &h4 && out[1].d[2] == &n1);
    in[3].d[2] = &nbad;
    CHECK(build->getOutputShapes(in, 4, nullptr, 0, out, 2, eb) != 0);
    CHECK(logger.saw("expected N = 272"));
    in[3].d[2] = &n1;
    in[3].nbDims = 2;
    CHECK(build->getOutputShapes(in, 4, nullptr, 0, out, 2, eb) != 0);
    CHECK(logger.saw("'state' must have rank 3"));
  }

  // configurePlugin: build-time dims with -1 for B, T; profile min/max.
  DynamicPluginTensorDesc din[4] = {
      ddesc({-1, -1, H, d}, {1, 1, H, d}, {4, 64, H, d}, DataType::kHALF),
      ddesc({-1, -1, H, d}, {1, 1, H, d}, {4, 64, H, d}, DataType::kHALF),
      ddesc({-1, -1, H, dv}, {1, 1, H, dv}, {4, 64, H, dv}, DataType::kHALF),
      ddesc({-1, H, N}, {1, H, N}, {4, H, N}, DataType::kFLOAT)};
  DynamicPluginTensorDesc dout[2] = {ddesc({-1, -1, H, dv}, {1, 1, H, dv}, {4, 64, H, dv}, DataType::kHALF),
                                     ddesc({-1, H, N}, {1, H, N}, {4, H, N}, DataType::kFLOAT)};
  CHECK(build->configurePlugin(din, 4, dout, 2) == 0);
  {
    DynamicPluginTensorDesc wrong[4] = {din[0], din[1], din[2], ddesc({-1, H, N + 4}, {1, H, N + 4}, {4, H, N + 4},
                                                                      DataType::kFLOAT)};
    CHECK(build->configurePlugin(wrong, 4, dout, 2) != 0);
    DynamicPluginTensorDesc dynH[4] = {ddesc({-1, -1, -1, d}, {1, 1, 1, d}, {4, 64, 8, d}, DataType::kHALF),
                                       ddesc({-1, -1, -1, d}, {1, 1, 1, d}, {4, 64, 8, d}, DataType::kHALF),
                                       ddesc({-1, -1, -1, dv}, {1, 1, 1, dv}, {4, 64, 8, dv}, DataType::kHALF),
                                       ddesc({-1, -1, N}, {1, 1, N}, {4, 8, N}, DataType::kFLOAT)};
    CHECK(build->configurePlugin(dynH, 4, dout, 2) != 0);
    CHECK(logger.saw("must be static"));
    // A dimension that is -1 in desc.dims but has min == max is known.
    DynamicPluginTensorDesc minmax[4] = {ddesc({-1, -1, -1, d}, {1, 1, H, d}, {4, 64, H, d}, DataType::kHALF),
                                         din[1], din[2], din[3]};
    CHECK(build->configurePlugin(minmax, 4, dout, 2) == 0);
  }
  // configurePlugin with bfloat16 q, k, v, o (float32 states), then mixed types.
  DynamicPluginTensorDesc dinBf[4] = {din[0], din[1], din[2], din[3]};
  DynamicPluginTensorDesc doutBf[2] = {dout[0], dout[1]};
  for (int i = 0; i < 3; ++i) dinBf[i].desc.type = DataType::kBF16;
  doutBf[0].desc.type = DataType::kBF16;
  CHECK(build->configurePlugin(dinBf, 4, doutBf, 2) == 0);
  {
    logger.mMessages.clear();
    DynamicPluginTensorDesc mixed[4] = {dinBf[0], din[1], dinBf[2], dinBf[3]};  // k float16
    CHECK(build->configurePlugin(mixed, 4, doutBf, 2) != 0);
    CHECK(logger.saw("'k' is float16, expected the same type as q (bfloat16)"));
    CHECK(build->configurePlugin(dinBf, 4, dout, 2) != 0);  // o float16 with bfloat16 inputs
    CHECK(logger.saw("output 0 'o' is float16, expected the same type as q (bfloat16)"));
    DynamicPluginTensorDesc bfState[4] = {dinBf[0], dinBf[1], dinBf[2], dinBf[3]};
    bfState[3].desc.type = DataType::kBF16;
    CHECK(build->configurePlugin(bfState, 4, doutBf, 2) != 0);
    CHECK(logger.saw("'state' is bfloat16, expected float32"));
    DynamicPluginTensorDesc bfStateOut[2] = {doutBf[0], doutBf[1]};
    bfStateOut[1].desc.type = DataType::kBF16;
    CHECK(build->configurePlugin(dinBf, 4, bfStateOut, 2) != 0);
    CHECK(logger.saw("'state_out' is bfloat16, expected float32"));
  }

  // Workspace: hla::cuda_workspace_size for the profile's largest shapes (the AOT prefill's
  // workspace when this device has kernels for the configuration, else 0; its carve-up is checked
  // against a mocked driver in hla_trt_plugin_aot_test).
  {
    hla::Params p;
    p.variant = hla::Variant::kAHLA;
    p.B = 4; p.T = 64; p.H = (int32_t)H; p.d = (int32_t)d; p.dv = (int32_t)dv;
    p.normalize = true;
    p.eps = 1e-5f;
    p.decay = good.decay.data();
    p.num_decay = 4;
    CHECK(build->getWorkspaceSize(din, 4, dout, 2) == hla::cuda_workspace_size(p, hla::DType::kFloat16));
    CHECK(build->getWorkspaceSize(dinBf, 4, doutBf, 2) == hla::cuda_workspace_size(p, hla::DType::kBFloat16));
    // A decode-only profile (largest T = 1) runs the token-serial kernel: no workspace.
    DynamicPluginTensorDesc decodeOnly[4] = {din[0], din[1], din[2], din[3]};
    for (int i = 0; i < 3; ++i) decodeOnly[i].max.d[1] = 1;
    CHECK(build->getWorkspaceSize(decodeOnly, 4, dout, 2) == 0);
  }

  // onShapeChange with concrete shapes.
  {
    PluginTensorDesc in[4] = {desc({2, 7, H, d}, DataType::kHALF), desc({2, 7, H, d}, DataType::kHALF),
                              desc({2, 7, H, dv}, DataType::kHALF), desc({2, H, N}, DataType::kFLOAT)};
    PluginTensorDesc out[2] = {desc({2, 7, H, dv}, DataType::kHALF), desc({2, H, N}, DataType::kFLOAT)};
    CHECK(rt->onShapeChange(in, 4, out, 2) == 0);
    in[1].dims.d[1] = 6;  // k's T differs
    CHECK(rt->onShapeChange(in, 4, out, 2) != 0);
    CHECK(logger.saw("T of input 'k'"));
    // enqueue rejects bad shapes before touching the GPU.
    PluginTensorDesc badq[4] = {desc({2, 7, 32}, DataType::kHALF), in[1], in[2], in[3]};
    void const* inputs[4] = {nullptr, nullptr, nullptr, nullptr};
    void* outputs[2] = {nullptr, nullptr};
    CHECK(rt->enqueue(badq, out, inputs, outputs, nullptr, nullptr) != 0);
    // enqueue checks k, v and state too (a state of the wrong N would be read and written out of
    // bounds): the error names the tensor, no kernel is launched.
    logger.mMessages.clear();
    PluginTensorDesc badState[4] = {in[0], in[0], in[2], desc({2, H, N - 1}, DataType::kFLOAT)};
    CHECK(rt->enqueue(badState, out, inputs, outputs, nullptr, nullptr) != 0);
    CHECK(logger.saw("has last dim N = 271, expected N = 272"));
    PluginTensorDesc badK[4] = {in[0], desc({2, 6, H, d}, DataType::kHALF), in[2], in[3]};
    CHECK(rt->enqueue(badK, out, inputs, outputs, nullptr, nullptr) != 0);
    CHECK(logger.saw("T of input 'k'") && logger.saw("(6 != 7)"));
    PluginTensorDesc badV[4] = {in[0], in[0], desc({1, 7, H, dv}, DataType::kHALF), in[3]};
    CHECK(rt->enqueue(badV, out, inputs, outputs, nullptr, nullptr) != 0);
    CHECK(logger.saw("B of input 'v'"));
  }

  // bfloat16 at runtime: onShapeChange accepts it; onShapeChange and enqueue reject mixed types
  // (enqueue before touching the GPU: the kernel would read k and v as q's type).
  {
    DataType const BF = DataType::kBF16;
    PluginTensorDesc in[4] = {desc({2, 7, H, d}, BF), desc({2, 7, H, d}, BF), desc({2, 7, H, dv}, BF),
                              desc({2, H, N}, DataType::kFLOAT)};
    PluginTensorDesc out[2] = {desc({2, 7, H, dv}, BF), desc({2, H, N}, DataType::kFLOAT)};
    CHECK(rt->onShapeChange(in, 4, out, 2) == 0);
    logger.mMessages.clear();
    PluginTensorDesc halfV[4] = {in[0], in[1], desc({2, 7, H, dv}, DataType::kHALF), in[3]};
    CHECK(rt->onShapeChange(halfV, 4, out, 2) != 0);
    CHECK(logger.saw("input 2 'v' is float16, expected the same type as q (bfloat16)"));
    void const* inputs[4] = {nullptr, nullptr, nullptr, nullptr};
    void* outputs[2] = {nullptr, nullptr};
    logger.mMessages.clear();
    CHECK(rt->enqueue(halfV, out, inputs, outputs, nullptr, nullptr) != 0);
    CHECK(logger.saw("input 2 'v' is float16, expected the same type as q (bfloat16)"));
    PluginTensorDesc floatK[4] = {in[0], desc({2, 7, H, d}, DataType::kFLOAT), in[2], in[3]};
    CHECK(rt->enqueue(floatK, out, inputs, outputs, nullptr, nullptr) != 0);
    CHECK(logger.saw("input 1 'k' is float32, expected the same type as q (bfloat16)"));
    PluginTensorDesc halfO[2] = {desc({2, 7, H, dv}, DataType::kHALF), out[1]};
    CHECK(rt->onShapeChange(in, 4, halfO, 2) != 0);
    CHECK(rt->enqueue(in, halfO, inputs, outputs, nullptr, nullptr) != 0);
    CHECK(logger.saw("output 0 'o' is float16, expected the same type as q (bfloat16)"));
    PluginTensorDesc bfState[4] = {in[0], in[1], in[2], desc({2, H, N}, BF)};
    CHECK(rt->enqueue(bfState, out, inputs, outputs, nullptr, nullptr) != 0);
    CHECK(logger.saw("input 3 'state' is bfloat16, expected float32"));
    CHECK(rt->enqueue(in, nullptr, inputs, outputs, nullptr, nullptr) != 0);
  }

  // Serialization round trip (build -> plan -> runtime) and clones.
  {
    PluginFieldCollection const* ser = rt->getFieldsToSerialize();
    CHECK(ser != nullptr && ser->nbFields == 5);
    PluginField const* fv = findField(ser, "variant");
    CHECK(fv && fv->type == PluginFieldType::kCHAR && std::strcmp((char const*)fv->data, "ahla") == 0);
    PluginField const* fd = findField(ser, "decay");
    CHECK(fd && fd->type == PluginFieldType::kFLOAT32 && fd->length == 4 && ((float const*)fd->data)[3] == 0.95f);
    PluginField const* fn = findField(ser, "normalize");
    CHECK(fn && fn->type == PluginFieldType::kINT32 && *(int32_t const*)fn->data == 1);
    IPluginV3* restored = creator->createPlugin("layer0", ser, TensorRTPhase::kRUNTIME);
    CHECK(restored != nullptr);
    if (restored) {
      auto* rrt = static_cast<IPluginV3OneRuntime*>(restored->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
      CHECK(sameFields(rt->getFieldsToSerialize(), rrt->getFieldsToSerialize()));
      delete restored;
    }
    IPluginV3* cl = plugin->clone();
    IPluginV3* attached = rt->attachToContext(nullptr);
    CHECK(cl != nullptr && attached != nullptr);
    if (cl && attached) {
      auto* crt = static_cast<IPluginV3OneRuntime*>(cl->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
      auto* art = static_cast<IPluginV3OneRuntime*>(attached->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
      CHECK(sameFields(rt->getFieldsToSerialize(), crt->getFieldsToSerialize()));
      CHECK(sameFields(rt->getFieldsToSerialize(), art->getFieldsToSerialize()));
    }
    delete cl;
    delete attached;
  }
  delete plugin;

  // ---- enqueue on a GPU, when there is one ----
  int nDev = 0;
  if (cudaGetDeviceCount(&nDev) == cudaSuccess && nDev > 0) {
    struct GpuCase {
      char const* variant;
      hla::Variant v;
      int32_t normalize;
      std::vector<float> decay;
      DataType type;
    } const cases[] = {{"hla2", hla::Variant::kHLA2, 0, {0.9f, 0.97f}, DataType::kFLOAT},
                       {"ahla", hla::Variant::kAHLA, 1, {0.95f}, DataType::kFLOAT},
                       {"hla3", hla::Variant::kHLA3, 0, {1.0f}, DataType::kFLOAT},
                       {"hla2", hla::Variant::kHLA2, 0, {0.9f, 0.97f}, DataType::kHALF},
                       {"hla2", hla::Variant::kHLA2, 0, {0.9f, 0.97f}, DataType::kBF16},
                       {"ahla", hla::Variant::kAHLA, 1, {0.95f}, DataType::kBF16}};
    // Prefills the AOT kernels serve when the kernel directory has d = dv = 64 cubins
    // (tests/gpu/test_aot_prefill.py runs this binary with HLA_DEPLOY_KERNEL_DIR set).
    struct AotCase {
      char const* variant;
      hla::Variant v;
      int32_t normalize;
      std::vector<float> decay;
      DataType type;
    } const aot_cases[] = {{"hla2", hla::Variant::kHLA2, 1, {0.9f, 0.97f}, DataType::kBF16},
                           {"hla2", hla::Variant::kHLA2, 0, {0.95f}, DataType::kHALF},
                           {"ahla", hla::Variant::kAHLA, 1, {0.95f}, DataType::kBF16}};
    for (auto const& c : aot_cases) {
      Fields f(c.variant, c.decay, c.normalize, 1e-6f, 0.f);
      IPluginV3* gp = creator->createPlugin("gpu_aot", &f.fc, TensorRTPhase::kRUNTIME);
      CHECK(gp != nullptr);
      if (!gp) continue;
      test_enqueue_on_gpu(static_cast<IPluginV3OneRuntime*>(gp->getCapabilityInterface(PluginCapabilityType::kRUNTIME)),
                          static_cast<IPluginV3OneBuild*>(gp->getCapabilityInterface(PluginCapabilityType::kBUILD)),
                          c.v, c.normalize != 0, c.decay, c.type, 2, 130, 2, 64, 64);
      delete gp;
    }
    for (auto const& c : cases) {
      Fields f(c.variant, c.decay, c.normalize, 1e-6f, 0.f);
      IPluginV3* gp = creator->createPlugin("gpu", &f.fc, TensorRTPhase::kRUNTIME);
      CHECK(gp != nullptr);
      if (!gp) continue;
      test_enqueue_on_gpu(static_cast<IPluginV3OneRuntime*>(gp->getCapabilityInterface(PluginCapabilityType::kRUNTIME)),
                          static_cast<IPluginV3OneBuild*>(gp->getCapabilityInterface(PluginCapabilityType::kBUILD)),
                          c.v, c.normalize != 0, c.decay, c.type);
      delete gp;
    }
  } else {
    std::printf("SKIP enqueue: no CUDA device\n");
  }

  setLoggerFinder(nullptr);
  return HLA_CHECK_SUMMARY("hla_trt_plugin_test");
}
