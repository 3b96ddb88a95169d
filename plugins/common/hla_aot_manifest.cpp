// Reads and checks manifest.json (hla_aot_manifest.h, docs/AOT_KERNELS.md section 2).
#include "hla_aot_manifest.h"

#include <fstream>
#include <sstream>

#include "hla_json.h"

namespace hla {
namespace aot {
namespace {

using json::Value;

// Error with the manifest path, the value's position and the field path.
struct Ctx {
  const std::string& path;
  std::string* error;
  bool fail(const Value& at, const std::string& field, const std::string& what) const {
    *error = path + ":" + std::to_string(at.line) + ":" + std::to_string(at.column) + ": " + field + ": " + what;
    return false;
  }
};

bool member(const Ctx& c, const Value& obj, const std::string& field, const char* key, Value::Kind kind,
            const Value** out) {
  const Value* v = obj.find(key);
  if (v == nullptr) return c.fail(obj, field, std::string("missing key \"") + key + "\"");
  if (v->kind != kind) {
    return c.fail(*v, field + "." + key, std::string("expected ") + json::kind_name(kind) + ", got " +
                                            json::kind_name(v->kind));
  }
  *out = v;
  return true;
}

bool int_member(const Ctx& c, const Value& obj, const std::string& field, const char* key, int64_t lo, int64_t hi,
                int64_t* out) {
  const Value* v = nullptr;
  if (!member(c, obj, field, key, Value::Kind::kNumber, &v)) return false;
  if (!v->integral || v->integer < lo || v->integer > hi) {
    std::ostringstream os;
    os << "expected an integer in [" << lo << ", " << hi << "], got " << v->number;
    return c.fail(*v, field + "." + key, os.str());
  }
  *out = v->integer;
  return true;
}

bool str_member(const Ctx& c, const Value& obj, const std::string& field, const char* key, std::string* out) {
  const Value* v = nullptr;
  if (!member(c, obj, field, key, Value::Kind::kString, &v)) return false;
  if (v->string.empty()) return c.fail(*v, field + "." + key, "empty string");
  *out = v->string;
  return true;
}

bool parse_dtype(const std::string& s, DType* out) {
  if (s == "fp32") *out = DType::kFloat32;
  else if (s == "fp16") *out = DType::kFloat16;
  else if (s == "bf16") *out = DType::kBFloat16;
  else return false;
  return true;
}

ParamType ptr_type_of(DType t) {
  return t == DType::kFloat32 ? ParamType::kPtrF32 : (t == DType::kFloat16 ? ParamType::kPtrF16 : ParamType::kPtrBF16);
}

const char* param_type_name(ParamType t) {
  switch (t) {
    case ParamType::kPtrF32: return "ptr_fp32";
    case ParamType::kPtrF16: return "ptr_fp16";
    case ParamType::kPtrBF16: return "ptr_bf16";
    case ParamType::kI32: return "i32";
    case ParamType::kF32: return "f32";
    case ParamType::kHidden: return "hidden";
  }
  return "?";
}

bool parse_param_type(const std::string& s, ParamType* out) {
  const ParamType all[] = {ParamType::kPtrF32, ParamType::kPtrF16, ParamType::kPtrBF16,
                           ParamType::kI32, ParamType::kF32, ParamType::kHidden};
  for (ParamType t : all) {
    if (s == param_type_name(t)) {
      *out = t;
      return true;
    }
  }
  return false;
}

// A product: an array of integers >= 1 and the symbols B, H, T, NT.
bool parse_product(const Ctx& c, const Value& v, const std::string& field, Product* out) {
  if (v.kind != Value::Kind::kArray || v.items.empty()) {
    return c.fail(v, field, "expected a non-empty array of factors (integers >= 1 or \"B\", \"H\", \"T\", \"NT\")");
  }
  out->clear();
  for (size_t i = 0; i < v.items.size(); ++i) {
    const Value& f = v.items[i];
    const std::string fi = field + "[" + std::to_string(i) + "]";
    Factor x;
    if (f.kind == Value::Kind::kNumber) {
      if (!f.integral || f.integer < 1 || f.integer > (int64_t(1) << 40)) {
        return c.fail(f, fi, "expected an integer factor >= 1");
      }
      x.value = f.integer;
    } else if (f.kind == Value::Kind::kString) {
      if (f.string == "B") x.symbol = Factor::Symbol::kB;
      else if (f.string == "H") x.symbol = Factor::Symbol::kH;
      else if (f.string == "T") x.symbol = Factor::Symbol::kT;
      else if (f.string == "NT") x.symbol = Factor::Symbol::kNT;
      else return c.fail(f, fi, "unknown symbol \"" + f.string + "\" (expected B, H, T or NT)");
    } else {
      return c.fail(f, fi, std::string("expected an integer or a symbol, got ") + json::kind_name(f.kind));
    }
    out->push_back(x);
  }
  return true;
}

bool parse_config(const Ctx& c, const Value& e, const std::string& field, Config* out) {
  const Value* cfg = nullptr;
  if (!member(c, e, field, "config", Value::Kind::kObject, &cfg)) return false;
  const std::string f = field + ".config";
  std::string variant, dtype;
  const Value* b = nullptr;
  int64_t d = 0, dv = 0;
  if (!str_member(c, *cfg, f, "variant", &variant)) return false;
  if (variant == "hla2") out->variant = Variant::kHLA2;
  else if (variant == "ahla") out->variant = Variant::kAHLA;
  else return c.fail(*cfg->find("variant"), f + ".variant", "expected \"hla2\" or \"ahla\", got \"" + variant + "\"");
  if (!member(c, *cfg, f, "normalize", Value::Kind::kBool, &b)) return false;
  out->normalize = b->boolean;
  if (!member(c, *cfg, f, "has_c", Value::Kind::kBool, &b)) return false;
  out->has_c = b->boolean;
  if (out->has_c && out->variant != Variant::kHLA2) return c.fail(*b, f + ".has_c", "true is only valid for hla2");
  if (!int_member(c, *cfg, f, "d", 1, 1 << 16, &d) || !int_member(c, *cfg, f, "dv", 1, 1 << 16, &dv)) return false;
  out->d = int32_t(d);
  out->dv = int32_t(dv);
  if (!str_member(c, *cfg, f, "dtype", &dtype)) return false;
  if (!parse_dtype(dtype, &out->dtype)) {
    return c.fail(*cfg->find("dtype"), f + ".dtype", "expected \"fp32\", \"fp16\" or \"bf16\", got \"" + dtype + "\"");
  }
  return true;
}

bool parse_workspace(const Ctx& c, const Value& e, const std::string& field, std::vector<Buffer>* out) {
  const Value* ws = nullptr;
  if (!member(c, e, field, "workspace", Value::Kind::kArray, &ws)) return false;
  for (size_t i = 0; i < ws->items.size(); ++i) {
    const Value& w = ws->items[i];
    const std::string f = field + ".workspace[" + std::to_string(i) + "]";
    if (w.kind != Value::Kind::kObject) return c.fail(w, f, "expected an object {name, dtype, dims}");
    Buffer b;
    std::string dtype;
    const Value* dims = nullptr;
    if (!str_member(c, w, f, "name", &b.name) || !str_member(c, w, f, "dtype", &dtype)) return false;
    for (const Buffer& other : *out) {
      if (other.name == b.name) return c.fail(w, f + ".name", "duplicate workspace buffer \"" + b.name + "\"");
    }
    DType t = DType::kFloat32;
    if (!parse_dtype(dtype, &t)) {
      return c.fail(*w.find("dtype"), f + ".dtype", "expected \"fp32\", \"fp16\" or \"bf16\", got \"" + dtype + "\"");
    }
    b.elem_bytes = t == DType::kFloat32 ? 4 : 2;
    b.ptr_type = ptr_type_of(t);
    if (!member(c, w, f, "dims", Value::Kind::kArray, &dims) || !parse_product(c, *dims, f + ".dims", &b.dims)) return false;
    out->push_back(std::move(b));
  }
  return true;
}

// The binding of a parameter name and the type that binding requires.
bool bind_param(const Entry& e, Param* p, ParamType* want) {
  const ParamType act = ptr_type_of(e.config.dtype);
  struct Fixed { const char* name; Bind bind; ParamType type; };
  const Fixed fixed[] = {
      {"q", Bind::kQ, act}, {"k", Bind::kK, act}, {"v", Bind::kV, act}, {"o", Bind::kO, act},
      {"state_in", Bind::kStateIn, ParamType::kPtrF32}, {"state_out", Bind::kStateOut, ParamType::kPtrF32},
      {"decay", Bind::kDecay, ParamType::kPtrF32}, {"T", Bind::kT, ParamType::kI32}, {"H", Bind::kH, ParamType::kI32},
      {"B", Bind::kB, ParamType::kI32}, {"eps", Bind::kEps, ParamType::kF32}, {"lam", Bind::kLam, ParamType::kF32}};
  if (p->type == ParamType::kHidden) {  // Triton's trailing scratch pointers (any name): passed as 0
    p->bind = Bind::kHidden;
    *want = ParamType::kHidden;
    return true;
  }
  for (const Fixed& f : fixed) {
    if (p->name == f.name) {
      p->bind = f.bind;
      *want = f.type;
      return true;
    }
  }
  for (size_t i = 0; i < e.workspace.size(); ++i) {
    if (p->name == e.workspace[i].name) {
      p->bind = Bind::kWorkspace;
      p->workspace_index = int(i);
      *want = e.workspace[i].ptr_type;
      return true;
    }
  }
  return false;
}

bool is_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char ch : s)
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
  return true;
}

bool parse_kernel(const Ctx& c, const Value& k, const std::string& field, const std::string& dir, const Entry& e,
                  Kernel* out) {
  if (k.kind != Value::Kind::kObject) return c.fail(k, field, "expected an object");
  std::string rel;
  int64_t warps = 0, stages = 0, shared = 0;
  if (!str_member(c, k, field, "name", &out->name) || !str_member(c, k, field, "cubin", &rel) ||
      !str_member(c, k, field, "sha256", &out->sha256) || !str_member(c, k, field, "function", &out->function)) {
    return false;
  }
  if (rel[0] == '/' || rel.find("..") != std::string::npos) {
    return c.fail(*k.find("cubin"), field + ".cubin", "expected a path relative to the kernel directory, got \"" + rel + "\"");
  }
  out->cubin = dir + "/" + rel;
  if (!is_hex64(out->sha256)) return c.fail(*k.find("sha256"), field + ".sha256", "expected 64 lowercase hex digits");
  if (!int_member(c, k, field, "num_warps", 1, 32, &warps) || !int_member(c, k, field, "num_stages", 1, 16, &stages) ||
      !int_member(c, k, field, "shared_bytes", 0, int64_t(1) << 30, &shared)) {
    return false;
  }
  out->num_warps = int32_t(warps);
  out->shared_bytes = shared;
  const Value* grid = nullptr;
  if (!member(c, k, field, "grid", Value::Kind::kArray, &grid)) return false;
  if (grid->items.size() != 3) return c.fail(*grid, field + ".grid", "expected 3 dims, got " + std::to_string(grid->items.size()));
  for (int i = 0; i < 3; ++i) {
    if (!parse_product(c, grid->items[i], field + ".grid[" + std::to_string(i) + "]", &out->grid[i])) return false;
  }
  const Value* params = nullptr;
  if (!member(c, k, field, "params", Value::Kind::kArray, &params)) return false;
  for (size_t i = 0; i < params->items.size(); ++i) {
    const Value& pv = params->items[i];
    const std::string f = field + ".params[" + std::to_string(i) + "]";
    if (pv.kind != Value::Kind::kObject) return c.fail(pv, f, "expected an object {name, type}");
    Param p;
    std::string type;
    if (!str_member(c, pv, f, "name", &p.name) || !str_member(c, pv, f, "type", &type)) return false;
    if (!parse_param_type(type, &p.type)) {
      return c.fail(*pv.find("type"), f + ".type",
                    "expected ptr_fp32, ptr_fp16, ptr_bf16, i32, f32 or hidden, got \"" + type + "\"");
    }
    ParamType want = ParamType::kHidden;
    if (!bind_param(e, &p, &want)) {
      return c.fail(pv, f + ".name", "\"" + p.name + "\" is not in the parameter vocabulary (q, k, v, o, state_in, "
                                     "state_out, decay, T, H, B, eps, lam, a workspace buffer; docs/AOT_KERNELS.md "
                                     "section 3)");
    }
    if (p.type != want) {
      return c.fail(*pv.find("type"), f + ".type", "\"" + p.name + "\" must have type " + param_type_name(want) +
                                                       " for " + e.config.name() + ", got " + type);
    }
    out->params.push_back(std::move(p));
  }
  return true;
}

bool parse_entry(const Ctx& c, const Value& e, int index, const std::string& dir, Entry* out) {
  const std::string field = "entries[" + std::to_string(index) + "]";
  if (e.kind != Value::Kind::kObject) return c.fail(e, field, "expected an object");
  out->manifest = c.path;
  out->index = index;
  if (!parse_config(c, e, field, &out->config)) return false;
  if (!str_member(c, e, field, "arch", &out->arch)) return false;
  const std::string& a = out->arch;
  if (a.size() < 5 || a.compare(0, 3, "sm_") != 0 || a.find_first_not_of("0123456789", 3) != std::string::npos) {
    return c.fail(*e.find("arch"), field + ".arch", "expected \"sm_<major><minor>\" (e.g. \"sm_90\"), got \"" + a + "\"");
  }
  if (!int_member(c, e, field, "chunk_size", 1, 1 << 16, &out->chunk_size)) return false;
  if (!int_member(c, e, field, "state_size", 1, int64_t(1) << 40, &out->state_size)) return false;
  const Config& cf = out->config;
  const int64_t n = hla::state_size(cf.variant, cf.d, cf.dv, cf.normalize, cf.has_c ? 1.0f : 0.0f);
  if (out->state_size != n) {
    return c.fail(*e.find("state_size"), field + ".state_size",
                  std::to_string(out->state_size) + " but the op contract's N for " + cf.name() + " is " +
                      std::to_string(n) + " (docs/OP_CONTRACT.md; a stale manifest?)");
  }
  if (!parse_workspace(c, e, field, &out->workspace)) return false;
  const Value* kernels = nullptr;
  if (!member(c, e, field, "kernels", Value::Kind::kArray, &kernels)) return false;
  if (kernels->items.empty()) return c.fail(*kernels, field + ".kernels", "expected at least one kernel");
  for (size_t i = 0; i < kernels->items.size(); ++i) {
    Kernel k;
    if (!parse_kernel(c, kernels->items[i], field + ".kernels[" + std::to_string(i) + "]", dir, *out, &k)) return false;
    out->kernels.push_back(std::move(k));
  }
  return true;
}

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "fp32";
    case DType::kFloat16: return "fp16";
    case DType::kBFloat16: return "bf16";
  }
  return "?";
}

std::string Config::name() const {
  std::ostringstream os;
  os << variant_name(variant) << "-n" << (normalize ? 1 : 0) << "-c" << (has_c ? 1 : 0) << "-d" << d << "-dv" << dv
     << "-" << dtype_name(dtype);
  return os.str();
}

size_t param_bytes(ParamType t) { return (t == ParamType::kI32 || t == ParamType::kF32) ? 4 : 8; }

std::string Entry::where() const {
  return manifest + " entries[" + std::to_string(index) + "] (" + config.name() + " " + arch + ")";
}

bool read_manifest(const std::string& dir, Manifest* out, std::string* error) {
  const std::string path = dir + "/manifest.json";
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    *error = path + ": cannot be read (missing?)";
    return false;
  }
  std::ostringstream ss;
  ss << f.rdbuf();
  Value root;
  if (!json::parse(ss.str(), path, &root, error)) return false;
  const Ctx c{path, error};
  if (root.kind != Value::Kind::kObject) return c.fail(root, "manifest", "expected an object {schema, entries}");
  int64_t schema = 0;
  const Value* sv = root.find("schema");
  if (sv == nullptr) return c.fail(root, "manifest", "missing key \"schema\"");
  if (sv->kind != Value::Kind::kNumber || !sv->integral) return c.fail(*sv, "schema", "expected the integer 1");
  schema = sv->integer;
  if (schema != 1) {
    return c.fail(*sv, "schema", "version " + std::to_string(schema) + " is not supported by this launcher (expected 1)");
  }
  const Value* entries = nullptr;
  if (!member(c, root, "manifest", "entries", Value::Kind::kArray, &entries)) return false;
  Manifest m;
  m.path = path;
  for (size_t i = 0; i < entries->items.size(); ++i) {
    Entry e;
    if (!parse_entry(c, entries->items[i], int(i), dir, &e)) return false;
    m.entries.push_back(std::move(e));
  }
  *out = std::move(m);
  return true;
}

}  // namespace aot
}  // namespace hla
