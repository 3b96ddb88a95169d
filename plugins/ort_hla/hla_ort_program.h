// What the two ONNX Runtime programs (hla_runner.cc, hla_golden_check.cc) share: the command line
// (--name VALUE options, switches, the usage message and exit status 2), the session set-up (threads,
// the custom-op library, the model), metadata look-up and two small helpers. Not part of the op library.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace hla_ort {

// The graph interface of hla-deploy language-model exports (exporters/onnx/lm_interface.py).
constexpr const char* kKnownContractVersion = "1";
extern const char* const kInputNames[2];    // input_ids, state
extern const char* const kOutputNames[2];   // logits, state_out

struct CommandLine {
  const char* program;                          // messages start "<program>: error: "
  const char* usage;                            // printed after an error, and for -h / --help
  std::map<std::string, std::string*> values;   // "--model" -> where its value goes
  std::map<std::string, bool*> switches;        // "--json" -> set to true when given
};

// Prints "<program>: error: <msg>" (when msg) and the usage, then exits with status 2.
[[noreturn]] void Usage(const CommandLine& cl, const char* msg);

// Fills cl.values and cl.switches from argv; an unknown argument or a missing value is Usage().
void ParseCommandLine(const CommandLine& cl, int argc, char** argv);

// How OpenSession reports ONNX Runtime's errors: as ORT words them, or prefixed with the file that
// failed ("could not load the custom-op library X: ...", "ONNX Runtime could not load X: ...").
enum class LoadErrors { kAsIs, kNameTheFile };

// A session of `model` with the custom-op `library` registered (threads > 0: intra-op threads).
Ort::Session OpenSession(const Ort::Env& env, const std::string& model, const std::string& library, int threads,
                         LoadErrors errors);

// The model's custom metadata value of `key`; false when there is none.
bool Metadata(const Ort::Session& session, const char* key, std::string* value);

// "[a, b, c]": token ids for --json, and shapes in messages.
std::string ListStr(const std::vector<int64_t>& xs);

// The index of the largest of V values (the first on ties).
int64_t Argmax(const float* row, int64_t V);

}  // namespace hla_ort
