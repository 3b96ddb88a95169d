// hla_golden_check: checks an exported hla-deploy ONNX model (ONNX Runtime CPU + the HLARecurrentStep
// custom-op library) against golden outputs recorded from the reference model, without Python.
// It is the check of a device bundle (`hla-deploy bundle`) where there is no Python.
//
//   hla_golden_check --model MODEL.onnx --library LIBHLA_ORT_OP.so --golden golden/index.txt
//                    [--threads N] [--json] [--label NAME]
//
// golden/index.txt (written by hla_deploy/exporters/bundle/golden.py), one record per line:
//   hla_golden 1
//   model_id <hex>                      the model the golden outputs come from (ONNX metadata
//                                       hla_deploy.model_id must be the same)
//   vocab <V>
//   state <L> <H> <N>
//   tol <key> <value>                   max_abs_err rel_rms_err min_cosine token_agreement state_rel_err
//   case <i> <T> <D> <prefix>           files <prefix>.ids.i64 [T], <prefix>.tokens.i64 [D] (the
//                                       reference's greedy tokens), <prefix>.logits.f32 [T + D, V],
//                                       <prefix>.state.f32 [L, 1, H, N]; little-endian raw arrays,
//                                       paths relative to the index's directory
// Each case: prefill the T ids from a zero state, then D teacher-forced decode steps feeding the
// golden tokens (positions stay aligned whatever the model predicts), state_out fed back.
// Metrics over all cases (as hla_deploy.parity.metrics): max |logits - ref|, relative RMS error,
// worst cosine per position, greedy-token agreement, max over layers of the final state's relative
// error. Prints a table; --json prints one JSON line with the metrics and the argmax tokens.
// Exit 0 within tolerance, 1 out of tolerance or any error (naming the file), 2 bad arguments.
#include "hla_ort_program.h"

#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using hla_ort::Argmax;
using hla_ort::kKnownContractVersion;
using hla_ort::ListStr;

const char* kTolKeys[] = {"max_abs_err", "rel_rms_err", "min_cosine", "token_agreement", "state_rel_err"};

struct Args {
  std::string model, library, golden, label = "ort-cpu (C++)";
  int threads = 0;
  bool json = false;
};

Args ParseArgs(int argc, char** argv) {
  Args a;
  std::string threads = std::to_string(a.threads);
  const hla_ort::CommandLine cl{
      "hla_golden_check",
      "usage: hla_golden_check --model MODEL.onnx --library LIBHLA_ORT_OP.so --golden INDEX.txt\n"
      "                        [--threads N] [--json] [--label NAME]\n",
      {{"--model", &a.model}, {"--library", &a.library}, {"--golden", &a.golden}, {"--threads", &threads},
       {"--label", &a.label}},
      {{"--json", &a.json}}};
  hla_ort::ParseCommandLine(cl, argc, argv);
  a.threads = std::atoi(threads.c_str());
  if (a.model.empty() || a.library.empty() || a.golden.empty())
    hla_ort::Usage(cl, "--model, --library and --golden are required");
  return a;
}

struct Case {
  int index = 0;
  int64_t T = 0, D = 0;
  std::string prefix;
};

struct Golden {
  std::string dir, model_id;
  int64_t V = 0, L = 0, H = 0, N = 0;
  std::map<std::string, double> tol;
  std::vector<Case> cases;
};

[[noreturn]] void Fail(const std::string& msg) { throw std::runtime_error(msg); }

Golden ReadIndex(const std::string& path) {
  std::ifstream in(path);
  if (!in) Fail("golden index not found: " + path);
  Golden g;
  auto slash = path.find_last_of('/');
  g.dir = slash == std::string::npos ? "." : path.substr(0, slash);
  std::string line, key;
  int lineno = 0;
  bool header = false;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    ls >> key;
    bool ok = true;
    if (key == "hla_golden") { int v = 0; ok = static_cast<bool>(ls >> v) && v == 1; header = ok; }
    else if (key == "model_id") ok = static_cast<bool>(ls >> g.model_id);
    else if (key == "vocab") ok = static_cast<bool>(ls >> g.V) && g.V > 0;
    else if (key == "state") ok = static_cast<bool>(ls >> g.L >> g.H >> g.N) && g.L > 0 && g.H > 0 && g.N > 0;
    else if (key == "tol") { std::string k; double v; ok = static_cast<bool>(ls >> k >> v); if (ok) g.tol[k] = v; }
    else if (key == "case") {
      Case c;
      ok = static_cast<bool>(ls >> c.index >> c.T >> c.D >> c.prefix) && c.T > 0 && c.D >= 0;
      if (ok) g.cases.push_back(c);
    } else if (key == "dtype" || key == "reference" || key == "decode") {
      // informational
    } else ok = false;
    if (!ok) Fail(path + ":" + std::to_string(lineno) + ": cannot parse '" + line + "'");
  }
  if (!header) Fail(path + ": not a golden index (first record must be 'hla_golden 1')");
  if (g.model_id.empty() || g.V == 0 || g.L == 0 || g.cases.empty())
    Fail(path + ": incomplete golden index (needs model_id, vocab, state and at least one case)");
  for (const char* k : kTolKeys)
    if (!g.tol.count(k)) Fail(path + ": tolerance '" + std::string(k) + "' missing");
  return g;
}

template <typename T>
std::vector<T> ReadRaw(const std::string& path, size_t count) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) Fail("golden file not found: " + path);
  const std::streamoff size = in.tellg();
  if (size != static_cast<std::streamoff>(count * sizeof(T)))
    Fail("golden file " + path + " has " + std::to_string(size) + " bytes, expected " +
         std::to_string(count * sizeof(T)) + " (" + std::to_string(count) + " values; a golden file of another model?)");
  std::vector<T> v(count);
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(size));
  return v;
}

struct Metrics {
  double max_abs = 0, err_sq = 0, ref_sq = 0, min_cos = 1, state_rel = 0;
  int64_t agree = 0, positions = 0;
  bool finite = true;
};

}  // namespace

int main(int argc, char** argv) {
  Args args = ParseArgs(argc, argv);
  try {
    Golden g = ReadIndex(args.golden);
    if (!std::ifstream(args.model)) Fail("model file not found: " + args.model);
    if (!std::ifstream(args.library)) Fail("custom-op library not found: " + args.library + " (run ./build.sh)");

    Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "hla_golden_check");
    Ort::Session session =
        hla_ort::OpenSession(env, args.model, args.library, args.threads, hla_ort::LoadErrors::kNameTheFile);
    std::string version, model_id;
    const bool has_version = hla_ort::Metadata(session, "hla_deploy.op_contract_version", &version);
    if (!has_version || version != kKnownContractVersion)
      Fail(args.model + ": op contract version " + (has_version ? version : "missing") +
           ", this checker knows " + kKnownContractVersion);
    if (!hla_ort::Metadata(session, "hla_deploy.model_id", &model_id))
      Fail(args.model + " has no 'hla_deploy.model_id' metadata (not a bundle's model)");
    if (g.model_id != model_id)
      Fail(args.golden + " was recorded from model " + g.model_id + ", but " + args.model + " is model " +
           model_id + " (golden files of another model)");

    const int64_t V = g.V, L = g.L, H = g.H, N = g.N;
    Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    const char* const* in_names = hla_ort::kInputNames;
    const char* const* out_names = hla_ort::kOutputNames;
    std::vector<int64_t> state_shape = {L, 1, H, N};
    Metrics m;
    std::vector<std::vector<int64_t>> all_tokens;

    for (const Case& c : g.cases) {
      const std::string base = g.dir + "/" + c.prefix;
      std::vector<int64_t> ids = ReadRaw<int64_t>(base + ".ids.i64", c.T);
      std::vector<int64_t> fed = ReadRaw<int64_t>(base + ".tokens.i64", c.D);
      std::vector<float> ref = ReadRaw<float>(base + ".logits.f32", (c.T + c.D) * V);
      std::vector<float> ref_state = ReadRaw<float>(base + ".state.f32", L * H * N);

      std::vector<float> logits;  // [T + D, V]
      logits.reserve((c.T + c.D) * V);
      std::vector<float> zeros(L * H * N, 0.0f);
      std::vector<Ort::Value> inputs;
      std::vector<int64_t> ids_shape = {1, c.T};
      inputs.push_back(Ort::Value::CreateTensor<int64_t>(cpu, ids.data(), ids.size(), ids_shape.data(), 2));
      inputs.push_back(Ort::Value::CreateTensor<float>(cpu, zeros.data(), zeros.size(), state_shape.data(), 4));
      auto out = session.Run(Ort::RunOptions{nullptr}, in_names, inputs.data(), 2, out_names, 2);
      auto check_logits = [&](const Ort::Value& v, int64_t T) {
        auto info = v.GetTensorTypeAndShapeInfo();
        auto s = info.GetShape();
        if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || s.size() != 3 || s[0] != 1 ||
            s[1] != T || s[2] != V)
          Fail(args.model + ": output 'logits' has shape " + ListStr(s) + ", expected [1, " + std::to_string(T) +
               ", " + std::to_string(V) + "] float32 (golden vocab " + std::to_string(V) + ")");
        const float* p = v.GetTensorData<float>();
        logits.insert(logits.end(), p, p + T * V);
      };
      check_logits(out[0], c.T);
      Ort::Value state = std::move(out[1]);
      for (int64_t i = 0; i < c.D; ++i) {
        inputs.clear();
        std::vector<int64_t> step_shape = {1, 1};
        inputs.push_back(Ort::Value::CreateTensor<int64_t>(cpu, &fed[i], 1, step_shape.data(), 2));
        inputs.push_back(std::move(state));
        out = session.Run(Ort::RunOptions{nullptr}, in_names, inputs.data(), 2, out_names, 2);
        check_logits(out[0], 1);
        state = std::move(out[1]);
      }
      auto sinfo = state.GetTensorTypeAndShapeInfo();
      if (sinfo.GetShape() != state_shape)
        Fail(args.model + ": state_out has shape " + ListStr(sinfo.GetShape()) + ", golden state is " + ListStr(state_shape));
      const float* st = state.GetTensorData<float>();

      std::vector<int64_t> tokens;
      for (int64_t p = 0; p < c.T + c.D; ++p) {
        const float* o = &logits[p * V];
        const float* r = &ref[p * V];
        double dot = 0, no = 0, nr = 0;
        for (int64_t j = 0; j < V; ++j) {
          const double a = o[j], b = r[j];
          if (!std::isfinite(a)) m.finite = false;
          m.max_abs = std::max(m.max_abs, std::fabs(a - b));
          m.err_sq += (a - b) * (a - b);
          m.ref_sq += b * b;
          dot += a * b; no += a * a; nr += b * b;
        }
        const double cos = (no == 0 && nr == 0) ? 1.0 : (no == 0 || nr == 0) ? 0.0 : dot / std::sqrt(no * nr);
        m.min_cos = std::min(m.min_cos, cos);
        const int64_t t = Argmax(o, V);
        tokens.push_back(t);
        m.agree += (t == Argmax(r, V));
        ++m.positions;
      }
      all_tokens.push_back(tokens);
      for (int64_t l = 0; l < L; ++l) {
        double e = 0, n = 0;
        for (int64_t k = l * H * N; k < (l + 1) * H * N; ++k) {
          if (!std::isfinite(st[k])) m.finite = false;
          e += (double(st[k]) - ref_state[k]) * (double(st[k]) - ref_state[k]);
          n += double(ref_state[k]) * ref_state[k];
        }
        const double rel = n == 0 ? (e == 0 ? 0.0 : INFINITY) : std::sqrt(e / n);
        m.state_rel = std::max(m.state_rel, rel);
      }
    }

    const double rel_rms = m.ref_sq == 0 ? (m.err_sq == 0 ? 0.0 : INFINITY) : std::sqrt(m.err_sq / m.ref_sq);
    const double agreement = m.positions ? double(m.agree) / m.positions : 1.0;
    std::vector<std::string> violations;
    auto check_max = [&](const char* k, double v) {
      if (!(v <= g.tol[k])) violations.push_back(std::string(k) + " " + std::to_string(v) + " > " + std::to_string(g.tol[k]));
    };
    auto check_min = [&](const char* k, double v) {
      if (!(v >= g.tol[k])) violations.push_back(std::string(k) + " " + std::to_string(v) + " < " + std::to_string(g.tol[k]));
    };
    if (!m.finite) violations.push_back("non-finite values in logits or state");
    check_max("max_abs_err", m.max_abs);
    check_max("rel_rms_err", rel_rms);
    check_min("min_cosine", m.min_cos);
    check_min("token_agreement", agreement);
    check_max("state_rel_err", m.state_rel);
    const bool ok = violations.empty();

    if (args.json) {
      std::cout << "{\"backend\": \"" << args.label << "\", \"ok\": " << (ok ? "true" : "false")
                << ", \"max_abs_err\": " << m.max_abs << ", \"rel_rms_err\": " << rel_rms
                << ", \"min_cosine\": " << m.min_cos << ", \"token_agreement\": " << agreement
                << ", \"state_rel_err\": " << m.state_rel << ", \"tokens\": [";
      for (size_t i = 0; i < all_tokens.size(); ++i) std::cout << (i ? ", " : "") << ListStr(all_tokens[i]);
      std::cout << "]}" << std::endl;
    } else {
      std::printf("%-22s %12s %12s %12s %12s %13s  %s\n", "backend", "max_abs_err", "rel_rms_err", "min_cosine",
                  "token_agree", "state_rel_err", "result");
      std::printf("%-22s %12.3g %12.3g %12.7f %12.4f %13.3g  %s\n", args.label.c_str(), m.max_abs, rel_rms, m.min_cos,
                  agreement, m.state_rel, ok ? "PASS" : "FAIL");
      std::printf("%-22s %12.3g %12.3g %12.7f %12.4f %13.3g\n", "tolerance", g.tol["max_abs_err"], g.tol["rel_rms_err"],
                  g.tol["min_cosine"], g.tol["token_agreement"], g.tol["state_rel_err"]);
      for (const auto& v : violations) std::printf("  out of tolerance: %s\n", v.c_str());
      std::printf("%zu golden case(s), %lld positions\n", g.cases.size(), static_cast<long long>(m.positions));
    }
    return ok ? 0 : 1;
  } catch (const std::exception& e) {  // Ort::Exception and the checks above
    std::fprintf(stderr, "hla_golden_check: error: %s\n", e.what());
    return 1;
  }
}
