// The shared command line and session set-up of hla_runner and hla_golden_check (hla_ort_program.h).
#include "hla_ort_program.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

namespace hla_ort {

const char* const kInputNames[2] = {"input_ids", "state"};
const char* const kOutputNames[2] = {"logits", "state_out"};

void Usage(const CommandLine& cl, const char* msg) {
  if (msg) std::fprintf(stderr, "%s: error: %s\n", cl.program, msg);
  std::fprintf(stderr, "%s", cl.usage);
  std::exit(2);
}

void ParseCommandLine(const CommandLine& cl, int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = cl.values.find(k);
    auto flag = cl.switches.find(k);
    if (value != cl.values.end()) {
      if (i + 1 >= argc) Usage(cl, (k + " needs a value").c_str());
      *value->second = argv[++i];
    } else if (flag != cl.switches.end()) {
      *flag->second = true;
    } else if (k == "-h" || k == "--help") {
      Usage(cl, nullptr);
    } else {
      Usage(cl, ("unknown argument " + k).c_str());
    }
  }
}

Ort::Session OpenSession(const Ort::Env& env, const std::string& model, const std::string& library, int threads,
                         LoadErrors errors) {
  const bool name = errors == LoadErrors::kNameTheFile;
  Ort::SessionOptions so;
  if (threads > 0) so.SetIntraOpNumThreads(threads);
  try {
    so.RegisterCustomOpsLibrary(library.c_str());
  } catch (const Ort::Exception& e) {
    if (!name) throw;
    throw std::runtime_error("could not load the custom-op library " + library + ": " + e.what());
  }
  try {
    return Ort::Session(env, model.c_str(), so);
  } catch (const Ort::Exception& e) {
    if (!name) throw;
    throw std::runtime_error("ONNX Runtime could not load " + model + ": " + e.what());
  }
}

bool Metadata(const Ort::Session& session, const char* key, std::string* value) {
  Ort::AllocatorWithDefaultOptions alloc;
  Ort::ModelMetadata meta = session.GetModelMetadata();
  auto found = meta.LookupCustomMetadataMapAllocated(key, alloc);
  if (!found) return false;
  *value = found.get();
  return true;
}

std::string ListStr(const std::vector<int64_t>& xs) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < xs.size(); ++i) os << (i ? ", " : "") << xs[i];
  os << ']';
  return os.str();
}

int64_t Argmax(const float* row, int64_t V) {
  int64_t best = 0;
  for (int64_t j = 1; j < V; ++j)
    if (row[j] > row[best]) best = j;
  return best;
}

}  // namespace hla_ort
