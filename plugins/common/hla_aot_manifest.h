// manifest.json of an AOT kernel directory (docs/AOT_KERNELS.md section 2), read and checked:
// every field the launcher uses has the right type and value, every parameter name is in the
// vocabulary of section 3 with the type its binding needs, every grid / workspace symbol is
// known. Plain C++ (no CUDA).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hla_kernels.h"

namespace hla {
namespace aot {

// A configuration (section 1); name() is the canonical `hla2-n1-c0-d64-dv64-bf16`.
struct Config {
  Variant variant = Variant::kHLA2;
  bool normalize = false;
  bool has_c = false;  // hla2 with ridge != 0
  int32_t d = 0, dv = 0;
  DType dtype = DType::kFloat32;
  std::string name() const;
  bool operator==(const Config& o) const {
    return variant == o.variant && normalize == o.normalize && has_c == o.has_c && d == o.d && dv == o.dv &&
           dtype == o.dtype;
  }
};

const char* dtype_name(DType dtype);  // fp32, fp16, bf16

// One factor of a grid dim or workspace dim: an integer or a symbol.
struct Factor {
  enum class Symbol { kNone, kB, kH, kT, kNT };
  Symbol symbol = Symbol::kNone;
  int64_t value = 1;  // when symbol == kNone
};
using Product = std::vector<Factor>;

// What a kernel parameter is bound to (section 3).
enum class Bind { kQ, kK, kV, kO, kStateIn, kStateOut, kDecay, kWorkspace, kT, kH, kB, kEps, kLam, kHidden };
enum class ParamType { kPtrF32, kPtrF16, kPtrBF16, kI32, kF32, kHidden };
size_t param_bytes(ParamType t);  // 8 for pointers and hidden parameters, 4 for i32 / f32

struct Param {
  std::string name;
  ParamType type = ParamType::kHidden;
  Bind bind = Bind::kHidden;
  int workspace_index = -1;  // bind == kWorkspace: index into Entry::workspace
};

struct Buffer {
  std::string name;
  int32_t elem_bytes = 4;
  ParamType ptr_type = ParamType::kPtrF32;  // the pointer type a parameter bound to it must have
  Product dims;
};

struct Kernel {
  std::string name, function;
  std::string cubin;        // absolute path (directory + the manifest's relative path)
  std::string sha256;       // 64 lowercase hex digits
  int32_t num_warps = 4;
  int64_t shared_bytes = 0;  // dynamic shared memory per block
  Product grid[3];
  std::vector<Param> params;
};

struct Entry {
  Config config;
  std::string arch;          // "sm_90"
  int64_t chunk_size = 0;
  int64_t state_size = 0;
  std::vector<Buffer> workspace;
  std::vector<Kernel> kernels;
  std::string manifest;      // path of the manifest.json it came from
  int index = 0;             // position in its "entries"
  std::string where() const;  // "<manifest> entries[i] (<config> <arch>)" for messages
};

struct Manifest {
  std::string path;
  std::vector<Entry> entries;
};

// Reads `<dir>/manifest.json`. Returns false with `error` naming the file, the position
// (line:column) and the field when it is missing, malformed or inconsistent.
bool read_manifest(const std::string& dir, Manifest* out, std::string* error);

}  // namespace aot
}  // namespace hla
