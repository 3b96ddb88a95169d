// The TensorRT plugin's prefill path through the AOT launcher, against the MOCKED CUDA driver
// (plugins/common/tests/fake_cuda_driver.cpp), no GPU and no libnvinfer: this process writes a
// kernel directory (manifest.json + fake cubins), points HLA_DEPLOY_CUDA_DRIVER and
// HLA_DEPLOY_KERNEL_DIR at them before the plugin library is loaded, and drives
// getWorkspaceSize / enqueue with mocked TensorRT objects. The mock records every driver call;
// the launches (grid, block, shared memory, every argument: pointers into the workspace slots,
// T / H / B / eps / lam, hidden zeros) and the decay memsets are compared with values computed
// here from the manifest. Also: the one warning for a configuration without kernels (through
// TensorRT's logger), a missing cubin as an enqueue error with a message.
//
// Usage: hla_trt_plugin_aot_test [plugin.so [fake_driver.so]]   (exit code 0 = all passed)
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "hla_check.h"
#include "hla_sha256.h"
#include "hla_trt_mocks.h"

namespace {

constexpr int kB = 2, kT = 130, kH = 4, kD = 64, kN = 64 * 64 + 64 * 64 + 64;  // hla2, normalize, no ridge
constexpr uint64_t kQ = 0x7f0000100000, kK = 0x7f0000200000, kV = 0x7f0000300000, kS = 0x7f0000400000,
                   kO = 0x7f0000500000, kSO = 0x7f0000600000, kWs = 0x7f0010000080;  // ws not 256-aligned

uint64_t align(uint64_t x) { return (x + 255) / 256 * 256; }

struct Kernel {
  std::string name, function, cubin;
  int warps;
  int64_t smem;
  std::string grid;  // JSON
  std::vector<std::pair<std::string, std::string>> params;  // name, type
};

std::string cubin_text(Kernel const& k) {
  std::string sizes;
  for (auto const& p : k.params) sizes += std::string(sizes.empty() ? "" : ",") + (p.second == "i32" || p.second == "f32" ? "4" : "8");
  return "FAKECUBIN\nfunction " + k.function + " " + sizes + "\n";
}

std::vector<Kernel> kernels(std::string const& dtype) {
  std::string const act = "ptr_" + dtype;
  Kernel h{"chunk_hla2_fwd_h_kernel", "fwd_h_" + dtype, "sm_90/" + dtype + ".fwd_h.cubin", 4, 49152,
           "[[2], [3], [\"B\", \"H\"]]",
           {{"q", act}, {"k", act}, {"v", act}, {"decay", "ptr_fp32"}, {"state_in", "ptr_fp32"}, {"ws_s", "ptr_fp32"},
            {"ws_m", "ptr_fp32"}, {"T", "i32"}, {"H", "i32"}, {"global_scratch", "hidden"},
            {"profile_scratch", "hidden"}}};
  Kernel o{"chunk_hla2_fwd_o_kernel", "fwd_o_" + dtype, "sm_90/" + dtype + ".fwd_o.cubin", 8, 73728,
           "[[1], [\"NT\"], [\"B\", \"H\"]]",
           {{"q", act}, {"k", act}, {"v", act}, {"o", act}, {"decay", "ptr_fp32"}, {"ws_s", "ptr_fp32"},
            {"ws_m", "ptr_fp32"}, {"state_out", "ptr_fp32"}, {"T", "i32"}, {"H", "i32"}, {"B", "i32"},
            {"eps", "f32"}, {"lam", "f32"}, {"global_scratch", "hidden"}, {"profile_scratch", "hidden"}}};
  return {h, o};
}

// One entry for hla2-n1-c0-d64-dv64-<dtype> on sm_90; writes its cubins (unless skip_cubin).
std::string entry_json(std::string const& dir, std::string const& dtype, bool write_cubins) {
  std::ostringstream os;
  os << "{\"config\": {\"variant\": \"hla2\", \"normalize\": true, \"has_c\": false, \"d\": 64, \"dv\": 64, "
     << "\"dtype\": \"" << dtype << "\"}, \"arch\": \"sm_90\", \"chunk_size\": 64, \"state_size\": " << kN
     << ", \"workspace\": [{\"name\": \"ws_s\", \"dtype\": \"fp32\", \"dims\": [\"B\", \"H\", \"NT\", 4096]}, "
     << "{\"name\": \"ws_m\", \"dtype\": \"fp32\", \"dims\": [\"B\", \"H\", \"NT\", 4160]}], \"kernels\": [";
  bool first = true;
  for (Kernel const& k : kernels(dtype)) {
    std::string const text = cubin_text(k);
    if (write_cubins) std::ofstream(dir + "/" + k.cubin, std::ios::binary) << text;
    os << (first ? "" : ", ") << "{\"name\": \"" << k.name << "\", \"cubin\": \"" << k.cubin << "\", \"sha256\": \""
       << hla::sha256_hex(text.data(), text.size()) << "\", \"function\": \"" << k.function
       << "\", \"num_warps\": " << k.warps << ", \"num_stages\": 2, \"shared_bytes\": " << k.smem
       << ", \"grid\": " << k.grid << ", \"params\": [";
    for (size_t i = 0; i < k.params.size(); ++i)
      os << (i ? ", " : "") << "{\"name\": \"" << k.params[i].first << "\", \"type\": \"" << k.params[i].second << "\"}";
    os << "]}";
    first = false;
  }
  os << "]}";
  return os.str();
}

uint32_t f32_bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  char const* plugin_path = argc > 1 ? argv[1] : HLA_TRT_PLUGIN_PATH;
  char const* fake_path = argc > 2 ? argv[2] : HLA_FAKE_CUDA_DRIVER_PATH;
  char tmpl[] = "/tmp/hla-trt-aot-XXXXXX";
  char* dir_c = mkdtemp(tmpl);
  if (dir_c == nullptr) {
    std::printf("FAIL: mkdtemp\n");
    return 1;
  }
  std::string const dir = dir_c;
  mkdir((dir + "/sm_90").c_str(), 0755);
  // fp16: complete; bf16: its cubins are missing (an enqueue error with a message)
  std::ofstream(dir + "/manifest.json") << "{\"schema\": 1, \"entries\": [" << entry_json(dir, "fp16", true) << ", "
                                        << entry_json(dir, "bf16", false) << "]}\n";
  // read by the launcher at its first call, inside the plugin library loaded below
  setenv("HLA_DEPLOY_CUDA_DRIVER", fake_path, 1);
  setenv("HLA_DEPLOY_KERNEL_DIR", dir.c_str(), 1);
  setenv("HLA_DEPLOY_CACHE", (dir + "/cache").c_str(), 1);

  void* fake = dlopen(fake_path, RTLD_NOW | RTLD_LOCAL);
  void* lib = dlopen(plugin_path, RTLD_NOW | RTLD_LOCAL);
  if (fake == nullptr || lib == nullptr) {
    std::printf("FAIL: dlopen: %s\n", dlerror());
    return 1;
  }
  auto take_log = reinterpret_cast<char const* (*)()>(dlsym(fake, "fake_cuda_take_log"));
  auto getCreators = reinterpret_cast<IPluginCreatorInterface* const* (*)(int32_t&)>(dlsym(lib, "getCreators"));
  auto setLoggerFinder = reinterpret_cast<void (*)(ILoggerFinder*)>(dlsym(lib, "setLoggerFinder"));
  CHECK(take_log != nullptr && getCreators != nullptr && setLoggerFinder != nullptr);
  if (!take_log || !getCreators || !setLoggerFinder) return 1;
  CaptureLogger logger;
  Finder finder(&logger);
  setLoggerFinder(&finder);
  int32_t nb = 0;
  auto* creator = static_cast<IPluginCreatorV3One*>(getCreators(nb)[0]);

  std::vector<float> const decay = {0.9f, 0.95f, 0.9f, 0.9f};
  float const eps = 1e-5f;
  Fields f("hla2", decay, 1, eps, 0.0f);
  IPluginV3* plugin = creator->createPlugin("layer0", &f.fc, TensorRTPhase::kRUNTIME);
  CHECK(plugin != nullptr);
  if (plugin == nullptr) return HLA_CHECK_SUMMARY("hla_trt_plugin_aot_test");
  auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
  auto* rt = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));

  // The workspace of the profile's largest shapes (B 2, T 200): manifest buffers, decay, state copy.
  auto expected_ws = [](uint64_t B, uint64_t T, uint64_t H) {
    uint64_t const NT = (T + 63) / 64;
    return 256 + align(B * H * NT * 4096 * 4) + align(B * H * NT * 4160 * 4) + align(H * 4) + align(B * H * kN * 4);
  };
  DynamicPluginTensorDesc din[4] = {
      ddesc({-1, -1, kH, kD}, {1, 1, kH, kD}, {2, 200, kH, kD}, DataType::kHALF),
      ddesc({-1, -1, kH, kD}, {1, 1, kH, kD}, {2, 200, kH, kD}, DataType::kHALF),
      ddesc({-1, -1, kH, kD}, {1, 1, kH, kD}, {2, 200, kH, kD}, DataType::kHALF),
      ddesc({-1, kH, kN}, {1, kH, kN}, {2, kH, kN}, DataType::kFLOAT)};
  DynamicPluginTensorDesc dout[2] = {ddesc({-1, -1, kH, kD}, {1, 1, kH, kD}, {2, 200, kH, kD}, DataType::kHALF),
                                     ddesc({-1, kH, kN}, {1, kH, kN}, {2, kH, kN}, DataType::kFLOAT)};
  CHECK(build->getWorkspaceSize(din, 4, dout, 2) == expected_ws(2, 200, kH));

  // enqueue of a prefill B 2, T 130: the two AOT kernels on the given stream
  PluginTensorDesc in[4] = {desc({kB, kT, kH, kD}, DataType::kHALF), desc({kB, kT, kH, kD}, DataType::kHALF),
                            desc({kB, kT, kH, kD}, DataType::kHALF), desc({kB, kH, kN}, DataType::kFLOAT)};
  PluginTensorDesc out[2] = {desc({kB, kT, kH, kD}, DataType::kHALF), desc({kB, kH, kN}, DataType::kFLOAT)};
  void const* inputs[4] = {reinterpret_cast<void const*>(kQ), reinterpret_cast<void const*>(kK),
                           reinterpret_cast<void const*>(kV), reinterpret_cast<void const*>(kS)};
  void* outputs[2] = {reinterpret_cast<void*>(kO), reinterpret_cast<void*>(kSO)};
  take_log();
  logger.mMessages.clear();
  CHECK(rt->enqueue(in, out, inputs, outputs, reinterpret_cast<void*>(kWs), nullptr) == 0);
  std::string const log = take_log();
  uint64_t const NT = (kT + 63) / 64, base = align(kWs);
  uint64_t const ws_s = base, ws_m = ws_s + align(kB * kH * NT * 4096 * 4), dec = ws_m + align(kB * kH * NT * 4160 * 4);
  std::ostringstream h, o, m;
  h << "{\"call\": \"cuLaunchKernel\", \"function\": \"fwd_h_fp16\", \"ctx\": 1000, \"grid\": [2, 3, " << kB * kH
    << "], \"block\": [128, 1, 1], \"smem\": 49152, \"stream\": 0, \"args\": [" << kQ << ", " << kK << ", " << kV
    << ", " << dec << ", " << kS << ", " << ws_s << ", " << ws_m << ", " << kT << ", " << kH << ", 0, 0]}";
  o << "{\"call\": \"cuLaunchKernel\", \"function\": \"fwd_o_fp16\", \"ctx\": 1000, \"grid\": [1, " << NT << ", "
    << kB * kH << "], \"block\": [256, 1, 1], \"smem\": 73728, \"stream\": 0, \"args\": [" << kQ << ", " << kK
    << ", " << kV << ", " << kO << ", " << dec << ", " << ws_s << ", " << ws_m << ", " << kSO << ", " << kT << ", "
    << kH << ", " << kB << ", " << f32_bits(eps) << ", 0, 0, 0]}";
  m << "{\"call\": \"cuMemsetD32Async\", \"dst\": " << dec << ", \"value\": " << f32_bits(0.9f)
    << ", \"count\": 1, \"stream\": 0}\n{\"call\": \"cuMemsetD32Async\", \"dst\": " << dec + 4 << ", \"value\": "
    << f32_bits(0.95f) << ", \"count\": 1, \"stream\": 0}\n{\"call\": \"cuMemsetD32Async\", \"dst\": " << dec + 8
    << ", \"value\": " << f32_bits(0.9f) << ", \"count\": 2, \"stream\": 0}\n";
  size_t const ph = log.find(h.str()), po = log.find(o.str()), pm = log.find(m.str());
  CHECK(ph != std::string::npos);
  CHECK(po != std::string::npos);
  CHECK(pm != std::string::npos);
  CHECK(pm < ph && ph < po);  // decay filled, then the kernels in manifest order
  CHECK(log.find("cuMemcpyDtoDAsync") == std::string::npos);  // TensorRT never aliases the states
  CHECK(log.find("\"call\": \"cuFuncSetAttribute\", \"function\": \"fwd_o_fp16\", \"attr\": 8, \"value\": 73728") !=
        std::string::npos);
  if (ph == std::string::npos || po == std::string::npos || pm == std::string::npos) {
    std::printf("driver log:\n%s\nexpected:\n%s\n%s\n%s", log.c_str(), h.str().c_str(), o.str().c_str(), m.str().c_str());
  }
  CHECK(logger.mMessages.empty());
  // a second enqueue loads nothing again
  CHECK(rt->enqueue(in, out, inputs, outputs, reinterpret_cast<void*>(kWs), nullptr) == 0);
  CHECK(std::string(take_log()).find("cuModuleLoadData") == std::string::npos);

  // bf16: the manifest's cubins are missing: enqueue fails with a message naming the file
  {
    PluginTensorDesc inb[4] = {in[0], in[1], in[2], in[3]};
    PluginTensorDesc outb[2] = {out[0], out[1]};
    for (int i = 0; i < 3; ++i) inb[i].type = DataType::kBF16;
    outb[0].type = DataType::kBF16;
    CHECK(rt->enqueue(inb, outb, inputs, outputs, reinterpret_cast<void*>(kWs), nullptr) != 0);
    CHECK(logger.saw("bf16.fwd_h.cubin") && logger.saw("cannot be read"));
    CHECK(std::string(take_log()).find("cuLaunchKernel") == std::string::npos);
  }

  // ahla has no kernels here: one warning through TensorRT's logger, no workspace
  {
    logger.mMessages.clear();
    Fields fa("ahla", {0.9f}, 1, eps, 0.0f);
    IPluginV3* pa = creator->createPlugin("layer1", &fa.fc, TensorRTPhase::kBUILD);
    CHECK(pa != nullptr);
    if (pa != nullptr) {
      auto* ba = static_cast<IPluginV3OneBuild*>(pa->getCapabilityInterface(PluginCapabilityType::kBUILD));
      int64_t const Na = 2 * kD * kD + 2 * kD;
      DynamicPluginTensorDesc dina[4] = {din[0], din[1], din[2], ddesc({-1, kH, Na}, {1, kH, Na}, {2, kH, Na}, DataType::kFLOAT)};
      DynamicPluginTensorDesc douta[2] = {dout[0], dina[3]};
      CHECK(ba->getWorkspaceSize(dina, 4, douta, 2) == 0);
      CHECK(ba->getWorkspaceSize(dina, 4, douta, 2) == 0);
      int warnings = 0;
      for (auto const& msg : logger.mMessages)
        if (msg.find("no AOT prefill kernels for configuration ahla-n1-c0-d64-dv64-fp16 on sm_90") != std::string::npos)
          ++warnings;
      CHECK(warnings == 1);
      CHECK(logger.saw("hla-deploy build-plugins --arch 90 --config ahla-n1-c0-d64-dv64-fp16"));
      delete pa;
    }
  }
  delete plugin;
  setLoggerFinder(nullptr);
  return HLA_CHECK_SUMMARY("hla_trt_plugin_aot_test");
}
