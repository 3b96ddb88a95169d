// hla_trt_runner: greedy text generation from a TensorRT engine built from an hla-deploy ONNX
// export (exporters/tensorrt/engine.py or trtexec), with the HLARecurrentStep plugin library.
//
//   hla_trt_runner --engine MODEL.plan --plugin libhla_trt_plugin.so [--prompt TEXT]
//                  [--max-new-tokens N]
//
// Engine I/O (the exported graph): input_ids [B, T] int64 (or int32), state [L, B, H, N] float32
// -> logits [B, T, V] float32, state_out [L, B, H, N] float32. Batch 1 here. The prompt is fed
// as one prefill (in chunks of the profile's largest T when longer), then one token per step;
// the state stays on the device between calls in two buffers used in turn (TensorRT does not
// let an output alias an input). The tokenizer is byte-level: token = byte value.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "NvInferRuntime.h"

namespace {

class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, char const* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::fprintf(stderr, "[TensorRT] %s\n", msg);
  }
};

#define CUDA_CHECK(call)                                                                         \
  do {                                                                                           \
    cudaError_t e_ = (call);                                                                     \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "error: %s failed: %s\n", #call, cudaGetErrorString(e_));             \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

[[noreturn]] void fail(std::string const& msg) {
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  std::exit(1);
}

struct Args {
  std::string engine, plugin, prompt = "def ";
  int max_new_tokens = 64;
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail("missing value after " + k);
      return argv[++i];
    };
    if (k == "--engine") a.engine = value();
    else if (k == "--plugin") a.plugin = value();
    else if (k == "--prompt") a.prompt = value();
    else if (k == "--max-new-tokens") a.max_new_tokens = std::atoi(value().c_str());
    else if (k == "-h" || k == "--help") {
      std::printf("usage: hla_trt_runner --engine MODEL.plan --plugin libhla_trt_plugin.so "
                  "[--prompt TEXT] [--max-new-tokens N]\n");
      std::exit(0);
    } else {
      fail("unknown argument " + k);
    }
  }
  if (a.engine.empty() || a.plugin.empty()) fail("--engine and --plugin are required (see --help)");
  if (a.max_new_tokens < 0) fail("--max-new-tokens must be >= 0");
  return a;
}

std::vector<char> read_file(std::string const& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("cannot open engine file " + path);
  return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

int64_t volume(nvinfer1::Dims const& d) {
  int64_t v = 1;
  for (int32_t i = 0; i < d.nbDims; ++i) v *= d.d[i];
  return v;
}

std::string dims_str(nvinfer1::Dims const& d) {
  std::string s = "[";
  for (int32_t i = 0; i < d.nbDims; ++i) s += (i ? ", " : "") + std::to_string(d.d[i]);
  return s + "]";
}

// One engine + context with device buffers for batch 1.
class Session {
 public:
  Session(nvinfer1::ICudaEngine* engine, nvinfer1::IExecutionContext* ctx) : mEngine(engine), mCtx(ctx) {
    for (char const* name : {"input_ids", "state", "logits", "state_out"}) {
      if (mEngine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kNONE) {
        fail(std::string("engine has no tensor '") + name + "' (expected an hla-deploy export)");
      }
    }
    mIdsType = mEngine->getTensorDataType("input_ids");
    if (mIdsType != nvinfer1::DataType::kINT64 && mIdsType != nvinfer1::DataType::kINT32) {
      fail("input_ids must be int64 or int32");
    }
    if (mEngine->getTensorDataType("state") != nvinfer1::DataType::kFLOAT ||
        mEngine->getTensorDataType("logits") != nvinfer1::DataType::kFLOAT) {
      fail("state and logits must be float32");
    }
    nvinfer1::Dims s = mEngine->getTensorShape("state");  // [L, -1, H, N]
    if (s.nbDims != 4 || s.d[0] < 1 || s.d[2] < 1 || s.d[3] < 1) fail("state shape " + dims_str(s) + " is not [L, B, H, N]");
    mStateShape = s;
    mStateShape.d[1] = 1;
    nvinfer1::Dims lg = mEngine->getTensorShape("logits");  // [-1, -1, V]
    if (lg.nbDims != 3 || lg.d[2] < 1) fail("logits shape " + dims_str(lg) + " is not [B, T, V]");
    mVocab = lg.d[2];
    nvinfer1::Dims mx = mEngine->getProfileShape("input_ids", 0, nvinfer1::OptProfileSelector::kMAX);
    nvinfer1::Dims mn = mEngine->getProfileShape("input_ids", 0, nvinfer1::OptProfileSelector::kMIN);
    if (mx.nbDims != 2 || mn.nbDims != 2 || mn.d[0] > 1 || mn.d[1] > 1) {
      fail("the engine's profile must allow input_ids [1, 1] (min " + dims_str(mn) + ")");
    }
    mMaxT = mx.d[1];
    size_t const stateBytes = static_cast<size_t>(volume(mStateShape)) * sizeof(float);
    CUDA_CHECK(cudaMalloc(&mState[0], stateBytes));
    CUDA_CHECK(cudaMalloc(&mState[1], stateBytes));
    CUDA_CHECK(cudaMemset(mState[0], 0, stateBytes));
    CUDA_CHECK(cudaMalloc(&mIds, static_cast<size_t>(mMaxT) * sizeof(int64_t)));
    CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&mLogits), static_cast<size_t>(mMaxT * mVocab) * sizeof(float)));
    CUDA_CHECK(cudaStreamCreate(&mStream));
  }
  ~Session() {
    cudaFree(mState[0]);
    cudaFree(mState[1]);
    cudaFree(mIds);
    cudaFree(mLogits);
    cudaStreamDestroy(mStream);
  }

  int64_t maxT() const { return mMaxT; }

  // Runs tokens through the model (T <= maxT) and returns the logits of the last position.
  std::vector<float> run(std::vector<int64_t> const& tokens) {
    int64_t const T = static_cast<int64_t>(tokens.size());
    if (mIdsType == nvinfer1::DataType::kINT64) {
      CUDA_CHECK(cudaMemcpyAsync(mIds, tokens.data(), T * sizeof(int64_t), cudaMemcpyHostToDevice, mStream));
    } else {
      mIds32.assign(tokens.begin(), tokens.end());
      CUDA_CHECK(cudaMemcpyAsync(mIds, mIds32.data(), T * sizeof(int32_t), cudaMemcpyHostToDevice, mStream));
    }
    nvinfer1::Dims ids{};
    ids.nbDims = 2;
    ids.d[0] = 1;
    ids.d[1] = T;
    if (!mCtx->setInputShape("input_ids", ids) || !mCtx->setInputShape("state", mStateShape)) {
      fail("setInputShape failed (T = " + std::to_string(T) + ")");
    }
    bool ok = mCtx->setTensorAddress("input_ids", mIds) && mCtx->setTensorAddress("state", mState[mCur]) &&
              mCtx->setTensorAddress("state_out", mState[1 - mCur]) && mCtx->setTensorAddress("logits", mLogits);
    if (!ok) fail("setTensorAddress failed");
    if (!mCtx->enqueueV3(mStream)) fail("enqueueV3 failed");
    mCur = 1 - mCur;  // state_out becomes the next call's state
    std::vector<float> last(static_cast<size_t>(mVocab));
    CUDA_CHECK(cudaMemcpyAsync(last.data(), mLogits + (T - 1) * mVocab, mVocab * sizeof(float),
                               cudaMemcpyDeviceToHost, mStream));
    CUDA_CHECK(cudaStreamSynchronize(mStream));
    return last;
  }

 private:
  nvinfer1::ICudaEngine* mEngine;
  nvinfer1::IExecutionContext* mCtx;
  nvinfer1::DataType mIdsType;
  nvinfer1::Dims mStateShape{};
  int64_t mVocab = 0, mMaxT = 0;
  void* mState[2] = {nullptr, nullptr};
  int mCur = 0;
  void* mIds = nullptr;
  float* mLogits = nullptr;
  std::vector<int32_t> mIds32;
  cudaStream_t mStream = nullptr;
};

int64_t argmax(std::vector<float> const& x) {
  return static_cast<int64_t>(std::max_element(x.begin(), x.end()) - x.begin());
}

}  // namespace

int main(int argc, char** argv) {
  Args args = parse_args(argc, argv);
  Logger logger;
  std::unique_ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger));
  if (!runtime) fail("createInferRuntime failed");
  if (runtime->getPluginRegistry().loadLibrary(args.plugin.c_str()) == nullptr) {
    fail("could not load the plugin library " + args.plugin);
  }
  std::vector<char> plan = read_file(args.engine);
  std::unique_ptr<nvinfer1::ICudaEngine> engine(runtime->deserializeCudaEngine(plan.data(), plan.size()));
  if (!engine) fail("could not deserialize " + args.engine + " (built with another TensorRT version or GPU?)");
  std::unique_ptr<nvinfer1::IExecutionContext> ctx(engine->createExecutionContext());
  if (!ctx) fail("createExecutionContext failed");
  Session session(engine.get(), ctx.get());

  std::vector<int64_t> prompt(args.prompt.begin(), args.prompt.end());
  for (auto& t : prompt) t &= 0xFF;  // byte-level tokens
  if (prompt.empty()) fail("--prompt must not be empty");

  auto t0 = std::chrono::steady_clock::now();
  std::vector<float> logits;
  for (size_t i = 0; i < prompt.size(); i += static_cast<size_t>(session.maxT())) {
    size_t n = std::min(prompt.size() - i, static_cast<size_t>(session.maxT()));
    logits = session.run(std::vector<int64_t>(prompt.begin() + i, prompt.begin() + i + n));
  }
  auto t1 = std::chrono::steady_clock::now();
  std::string text = args.prompt;
  std::vector<int64_t> generated;
  for (int i = 0; i < args.max_new_tokens; ++i) {
    int64_t tok = argmax(logits);
    generated.push_back(tok);
    text.push_back(static_cast<char>(tok));
    logits = session.run({tok});  // one step per generated token
  }
  auto t2 = std::chrono::steady_clock::now();
  double prefill_s = std::chrono::duration<double>(t1 - t0).count();
  double decode_s = std::chrono::duration<double>(t2 - t1).count();
  std::printf("%s\n", text.c_str());
  std::printf("prefill: %zu tokens in %.3f ms (%.1f tokens/s)\n", prompt.size(), prefill_s * 1e3,
              prompt.size() / std::max(prefill_s, 1e-9));
  std::printf("decode: %zu tokens in %.3f ms (%.1f tokens/s)\n", generated.size(), decode_s * 1e3,
              generated.size() / std::max(decode_s, 1e-9));
  return 0;
}
