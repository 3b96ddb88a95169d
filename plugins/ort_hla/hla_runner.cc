// hla_runner: greedy text generation from an exported hla-deploy ONNX model with ONNX Runtime (CPU)
// and the HLARecurrentStep custom-op library, without Python.
//
//   hla_runner --model model.onnx --library libhla_ort_op.so [--prompt TEXT] [--max-new-tokens N]
//              [--threads N] [--json]
//
// Graph interface (exporters): inputs input_ids [B, T] int64, state [L, B, H, N] float32;
// outputs logits [B, T, V] float32, state_out [L, B, H, N] float32. The runner byte-tokenises the
// prompt (token id = byte value), prefills it in one call from a zero state, then decodes
// N tokens greedily (argmax, first index on ties), one T = 1 call per token with state_out fed back
// as the next state. It prints the generated text and the decode speed; --json prints one JSON
// object with the prompt and generated token ids (tests compare them with Python's
// OrtHLASession.generate).
#include "hla_ort_program.h"

#include <onnxruntime_cxx_api.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <sstream>
#include <string>
#include <vector>

namespace {

using hla_ort::Argmax;
using hla_ort::ListStr;

struct Args {
  std::string model, library, prompt = "def ";
  int max_new_tokens = 32;
  int threads = 0;
  bool json = false;
};

Args ParseArgs(int argc, char** argv) {
  Args a;
  std::string max_new_tokens = std::to_string(a.max_new_tokens), threads = std::to_string(a.threads);
  const hla_ort::CommandLine cl{
      "hla_runner",
      "usage: hla_runner --model MODEL.onnx --library LIBHLA_ORT_OP.so [--prompt TEXT]\n"
      "                  [--max-new-tokens N] [--threads N] [--json]\n",
      {{"--model", &a.model}, {"--library", &a.library}, {"--prompt", &a.prompt},
       {"--max-new-tokens", &max_new_tokens}, {"--threads", &threads}},
      {{"--json", &a.json}}};
  hla_ort::ParseCommandLine(cl, argc, argv);
  a.max_new_tokens = std::atoi(max_new_tokens.c_str());
  a.threads = std::atoi(threads.c_str());
  if (a.model.empty()) hla_ort::Usage(cl, "--model is required");
  if (a.library.empty()) hla_ort::Usage(cl, "--library is required");
  if (a.max_new_tokens < 1) hla_ort::Usage(cl, "--max-new-tokens must be >= 1");
  if (a.prompt.empty()) hla_ort::Usage(cl, "--prompt must not be empty (the model needs at least one token)");
  return a;
}

bool FileExists(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f) std::fclose(f);
  return f != nullptr;
}

std::string JsonString(const std::string& s) {
  std::ostringstream os;
  os << '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') os << '\\' << c;
    else if (c < 0x20 || c >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);  // byte-level text: one code point per byte
      os << buf;
    } else os << c;
  }
  os << '"';
  return os.str();
}

// The logits of the last of T positions, after checking that `logits` is [1, T, V] float32
// (V = *vocab when > 0, which is then kept equal across calls). Throws std::runtime_error.
const float* LastLogits(const Ort::Value& logits, int64_t T, int64_t* vocab) {
  auto info = logits.GetTensorTypeAndShapeInfo();
  const std::vector<int64_t> shape = info.GetShape();
  if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
    throw std::runtime_error("output 'logits' is not float32 (hla-deploy exports return float32 logits)");
  }
  if (shape.size() != 3 || shape[0] != 1 || shape[1] != T || shape[2] < 1 || (*vocab > 0 && shape[2] != *vocab)) {
    throw std::runtime_error("output 'logits' has shape " + ListStr(shape) + ", expected [B, T, V] = [1, " +
                             std::to_string(T) + ", " + (*vocab > 0 ? std::to_string(*vocab) : std::string("V")) + "]");
  }
  *vocab = shape[2];
  return logits.GetTensorData<float>() + (T - 1) * shape[2];
}

}  // namespace

int main(int argc, char** argv) {
  Args args = ParseArgs(argc, argv);
  if (!FileExists(args.model)) {
    std::fprintf(stderr, "hla_runner: error: model file not found: %s\n", args.model.c_str());
    return 1;
  }
  if (!FileExists(args.library)) {
    std::fprintf(stderr, "hla_runner: error: custom-op library not found: %s\n", args.library.c_str());
    return 1;
  }
  try {
    Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "hla_runner");
    Ort::Session session =
        hla_ort::OpenSession(env, args.model, args.library, args.threads, hla_ort::LoadErrors::kAsIs);
    Ort::AllocatorWithDefaultOptions alloc;

    // Contract version recorded by the exporter.
    std::string version;
    if (!hla_ort::Metadata(session, "hla_deploy.op_contract_version", &version)) {
      std::fprintf(stderr, "hla_runner: error: %s has no 'hla_deploy.op_contract_version' metadata "
                           "(not an hla-deploy export?)\n", args.model.c_str());
      return 1;
    }
    if (version != hla_ort::kKnownContractVersion) {
      std::fprintf(stderr, "hla_runner: error: %s uses op contract version %s; this runner knows version %s\n",
                   args.model.c_str(), version.c_str(), hla_ort::kKnownContractVersion);
      return 1;
    }

    // State shape [L, B, H, N] from the graph input (L, H, N static).
    int state_index = -1, ids_index = -1;
    for (size_t i = 0; i < session.GetInputCount(); ++i) {
      std::string name = session.GetInputNameAllocated(i, alloc).get();
      if (name == "state") state_index = static_cast<int>(i);
      if (name == "input_ids") ids_index = static_cast<int>(i);
    }
    if (state_index < 0 || ids_index < 0 || session.GetInputCount() != 2 || session.GetOutputCount() != 2) {
      std::fprintf(stderr, "hla_runner: error: expected inputs (input_ids, state) and outputs (logits, state_out)\n");
      return 1;
    }
    std::vector<int64_t> sshape =
        session.GetInputTypeInfo(state_index).GetTensorTypeAndShapeInfo().GetShape();
    if (sshape.size() != 4 || sshape[0] <= 0 || sshape[2] <= 0 || sshape[3] <= 0) {
      std::fprintf(stderr, "hla_runner: error: input 'state' must be [L, B, H, N] with static L, H, N\n");
      return 1;
    }
    const int64_t L = sshape[0], H = sshape[2], N = sshape[3];

    Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    const char* const* in_names = hla_ort::kInputNames;
    const char* const* out_names = hla_ort::kOutputNames;

    std::vector<int64_t> prompt_ids;
    for (unsigned char c : args.prompt) prompt_ids.push_back(static_cast<int64_t>(c));
    std::vector<float> zeros(static_cast<size_t>(L * H * N), 0.0f);
    std::vector<int64_t> state_shape = {L, 1, H, N};

    // Prefill: all prompt tokens in one call from the zero state.
    std::vector<int64_t> ids_shape = {1, static_cast<int64_t>(prompt_ids.size())};
    std::vector<Ort::Value> inputs;
    inputs.push_back(Ort::Value::CreateTensor<int64_t>(cpu, prompt_ids.data(), prompt_ids.size(),
                                                       ids_shape.data(), ids_shape.size()));
    inputs.push_back(Ort::Value::CreateTensor<float>(cpu, zeros.data(), zeros.size(), state_shape.data(),
                                                     state_shape.size()));
    auto t0 = std::chrono::steady_clock::now();
    auto outputs = session.Run(Ort::RunOptions{nullptr}, in_names, inputs.data(), 2, out_names, 2);
    auto t1 = std::chrono::steady_clock::now();
    int64_t V = 0;  // vocabulary size, from the first logits [1, T, V]
    const float* last = LastLogits(outputs[0], static_cast<int64_t>(prompt_ids.size()), &V);
    std::vector<int64_t> generated;
    generated.push_back(Argmax(last, V));
    Ort::Value state = std::move(outputs[1]);

    // Decode: one token per call, state_out fed back.
    int64_t token = generated.back();
    std::vector<int64_t> step_shape = {1, 1};
    for (int i = 1; i < args.max_new_tokens; ++i) {
      inputs.clear();
      inputs.push_back(Ort::Value::CreateTensor<int64_t>(cpu, &token, 1, step_shape.data(), step_shape.size()));
      inputs.push_back(std::move(state));
      outputs = session.Run(Ort::RunOptions{nullptr}, in_names, inputs.data(), 2, out_names, 2);
      token = Argmax(LastLogits(outputs[0], 1, &V), V);
      generated.push_back(token);
      state = std::move(outputs[1]);
    }
    auto t2 = std::chrono::steady_clock::now();
    const double prefill_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
    const double decode_s = std::chrono::duration<double>(t2 - t1).count();
    const int decode_steps = args.max_new_tokens - 1;
    const double tok_s = decode_steps > 0 && decode_s > 0 ? decode_steps / decode_s : 0.0;

    std::string text;
    for (int64_t id : generated) text.push_back(static_cast<char>(id >= 0 && id < 256 ? id : '?'));
    if (args.json) {
      std::cout << "{\"prompt_ids\": " << ListStr(prompt_ids) << ", \"generated_ids\": " << ListStr(generated)
                << ", \"text\": " << JsonString(text) << ", \"prefill_tokens\": " << prompt_ids.size()
                << ", \"prefill_ms\": " << prefill_ms << ", \"decode_steps\": " << decode_steps
                << ", \"decode_tokens_per_s\": " << tok_s << "}" << std::endl;
    } else {
      std::cout << args.prompt << text << "\n";
      std::fprintf(stderr, "[hla_runner] prefill %zu tokens: %.2f ms; decode %d tokens: %.1f tokens/s\n",
                   prompt_ids.size(), prefill_ms, decode_steps, tok_s);
    }
  } catch (const std::exception& e) {  // Ort::Exception and the checks above
    std::fprintf(stderr, "hla_runner: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
