// HLARecurrentStep TensorRT plugin: attribute parsing and shape rules (no TensorRT here).
#include "hlaRecurrentStepAttrs.h"

#include "hla_attrs.h"

#include <cstdint>
#include <cstring>
#include <sstream>

namespace hla {
namespace trt {
namespace {

char const* type_name(FieldType t) {
  switch (t) {
    case FieldType::kFLOAT16: return "FLOAT16";
    case FieldType::kFLOAT32: return "FLOAT32";
    case FieldType::kFLOAT64: return "FLOAT64";
    case FieldType::kINT8: return "INT8";
    case FieldType::kINT16: return "INT16";
    case FieldType::kINT32: return "INT32";
    case FieldType::kCHAR: return "CHAR";
    case FieldType::kDIMS: return "DIMS";
    case FieldType::kUNKNOWN: return "UNKNOWN";
    case FieldType::kBF16: return "BF16";
    case FieldType::kINT64: return "INT64";
  }
  return "?";
}

std::string field_error(char const* name, std::string const& what) {
  return std::string(kPluginName) + ": attribute '" + name + "' " + what;
}

// Reads a float list (FLOAT32 or FLOAT64 fields).
bool read_floats(Field const& f, std::vector<float>* out) {
  out->clear();
  if (f.type == FieldType::kFLOAT32) {
    auto const* p = static_cast<float const*>(f.data);
    out->assign(p, p + f.length);
    return true;
  }
  if (f.type == FieldType::kFLOAT64) {
    auto const* p = static_cast<double const*>(f.data);
    for (int32_t i = 0; i < f.length; ++i) out->push_back(static_cast<float>(p[i]));
    return true;
  }
  return false;
}

// Reads one integer (INT32, INT64, INT16 or INT8 fields).
bool read_int(Field const& f, int64_t* out) {
  switch (f.type) {
    case FieldType::kINT32: *out = *static_cast<int32_t const*>(f.data); return true;
    case FieldType::kINT64: *out = *static_cast<int64_t const*>(f.data); return true;
    case FieldType::kINT16: *out = *static_cast<int16_t const*>(f.data); return true;
    case FieldType::kINT8: *out = *static_cast<int8_t const*>(f.data); return true;
    default: return false;
  }
}

std::string dims_str(Shape const& s) {
  std::ostringstream os;
  os << "[";
  for (int32_t i = 0; i < s.nb_dims; ++i) os << (i ? ", " : "") << s.d[i];
  os << "]";
  return os.str();
}

bool known(int64_t x) { return x >= 0; }

}  // namespace

std::string parse_fields(Field const* fields, int32_t nb_fields, Attrs* out) {
  *out = Attrs{};
  if (nb_fields < 0 || (nb_fields > 0 && fields == nullptr)) {
    return std::string(kPluginName) + ": invalid plugin field collection";
  }
  for (int32_t i = 0; i < nb_fields; ++i) {
    Field const& f = fields[i];
    if (f.name == nullptr) return std::string(kPluginName) + ": plugin field without a name";
    char const* name = f.name;
    if (f.length < 1 || f.data == nullptr) return field_error(name, "is empty");

    if (std::strcmp(name, "variant") == 0) {
      if (f.type != FieldType::kCHAR) {
        return field_error(name, std::string("must be a string (CHAR), got ") + type_name(f.type));
      }
      auto const* s = static_cast<char const*>(f.data);
      std::string value(s, strnlen(s, static_cast<size_t>(f.length)));
      if (!parse_variant(value.c_str(), &out->variant)) {
        return field_error(name, "is '" + value + "'; expected one of hla2, ahla, hla3");
      }
    } else if (std::strcmp(name, "decay") == 0) {
      if (!read_floats(f, &out->decay)) {
        return field_error(name, std::string("must be floats (FLOAT32), got ") + type_name(f.type));
      }
      if (static_cast<int32_t>(out->decay.size()) > kMaxHeads) {
        return field_error(name, "has " + std::to_string(out->decay.size()) + " values; at most " +
                                     std::to_string(kMaxHeads) + " (one per head) are supported");
      }
    } else if (std::strcmp(name, "normalize") == 0) {
      int64_t v = 0;
      if (f.length != 1 || !read_int(f, &v)) {
        return field_error(name, std::string("must be one int (INT32), got ") + std::to_string(f.length) +
                                     " value(s) of type " + type_name(f.type));
      }
      if (v != 0 && v != 1) return field_error(name, "is " + std::to_string(v) + "; expected 0 or 1");
      out->normalize = (v == 1);
    } else if (std::strcmp(name, "eps") == 0 || std::strcmp(name, "ridge") == 0) {
      std::vector<float> v;
      if (f.length != 1 || !read_floats(f, &v)) {
        return field_error(name, std::string("must be one float (FLOAT32), got ") + std::to_string(f.length) +
                                     " value(s) of type " + type_name(f.type));
      }
      (name[0] == 'e' ? out->eps : out->ridge) = v[0];
    } else {
      return std::string(kPluginName) + ": unknown attribute '" + name +
             "'; expected variant, decay, normalize, eps, ridge";
    }
  }
  return check_attrs(*out);
}

std::string check_attrs(Attrs const& a) {
  // The value rules are the contract's, shared with the ONNX Runtime op (plugins/common).
  std::string const err = check_attribute_values(a.variant, a.decay.data(), a.decay.size(), a.eps, a.ridge);
  return err.empty() ? err : std::string(kPluginName) + ": " + err;
}

std::string check_shapes(Attrs const& a, Shape const* in, int32_t nb_inputs, bool require_static_heads) {
  std::string const op = kPluginName;
  if (nb_inputs != kNbInputs || in == nullptr) {
    return op + ": expected 4 inputs (q, k, v, state), got " + std::to_string(nb_inputs);
  }
  static char const* const kNames[kNbInputs] = {"q", "k", "v", "state"};
  static char const* const kLayouts[kNbInputs] = {"[B, T, H, d]", "[B, T, H, d]", "[B, T, H, dv]", "[B, H, N]"};
  static int32_t const kRanks[kNbInputs] = {4, 4, 4, 3};
  for (int32_t i = 0; i < kNbInputs; ++i) {
    if (in[i].nb_dims != kRanks[i]) {
      return op + ": input " + std::to_string(i) + " '" + kNames[i] + "' must have rank " +
             std::to_string(kRanks[i]) + " " + kLayouts[i] + ", got rank " + std::to_string(in[i].nb_dims);
    }
    for (int32_t j = 0; j < in[i].nb_dims; ++j) {
      if (in[i].d[j] == 0) {
        return op + ": input '" + kNames[i] + "' has a zero dimension " + dims_str(in[i]) +
               (i < 3 && j == 1 ? " (T must be >= 1)" : "");
      }
      if (in[i].d[j] < -1 || in[i].d[j] > INT32_MAX) {
        return op + ": input '" + kNames[i] + "' has an invalid shape " + dims_str(in[i]);
      }
    }
  }
  Shape const& q = in[0];
  Shape const& k = in[1];
  Shape const& v = in[2];
  Shape const& s = in[3];
  // (what, tensor index, dim index) triples that must agree with q's.
  struct Match {
    char const* what;
    int32_t tensor;
    int32_t dim;
    int32_t q_dim;
  };
  static Match const kMatches[] = {
      {"B", 1, 0, 0}, {"B", 2, 0, 0}, {"B", 3, 0, 0}, {"T", 1, 1, 1}, {"T", 2, 1, 1},
      {"H", 1, 2, 2}, {"H", 2, 2, 2}, {"H", 3, 1, 2}, {"d", 1, 3, 3},
  };
  for (Match const& m : kMatches) {
    int64_t x = in[m.tensor].d[m.dim];
    int64_t y = q.d[m.q_dim];
    if (known(x) && known(y) && x != y) {
      return op + ": " + m.what + " of input '" + kNames[m.tensor] + "' " + dims_str(in[m.tensor]) +
             " differs from q " + dims_str(q) + " (" + std::to_string(x) + " != " + std::to_string(y) + ")";
    }
  }
  int64_t H = known(q.d[2]) ? q.d[2] : (known(s.d[1]) ? s.d[1] : -1);
  int64_t d = known(q.d[3]) ? q.d[3] : k.d[3];
  int64_t dv = v.d[3];
  int64_t N = s.d[2];
  if (require_static_heads && (!known(H) || !known(d) || !known(dv) || !known(N))) {
    return op + ": H, d, dv and N must be static (q " + dims_str(q) + ", v " + dims_str(v) + ", state " +
           dims_str(s) + "); only B and T may be dynamic";
  }
  if (known(H)) {
    int64_t nd = static_cast<int64_t>(a.decay.size());
    if (nd != 1 && nd != H) {
      return op + ": attribute 'decay' has " + std::to_string(nd) + " values; expected 1 or H = " +
             std::to_string(H);
    }
  }
  if (known(d) && known(dv) && known(N)) {
    int64_t expected = state_size(a.variant, static_cast<int>(d), static_cast<int>(dv), a.normalize, a.ridge);
    if (N != expected) {
      std::ostringstream os;
      os << op << ": input 'state' " << dims_str(s) << " has last dim N = " << N << ", expected N = " << expected
         << " for variant=" << variant_name(a.variant) << ", d=" << d << ", dv=" << dv
         << ", normalize=" << (a.normalize ? 1 : 0) << ", ridge=" << a.ridge;
      return os.str();
    }
  }
  return "";
}

void output_shapes(Shape const* in, Shape* out) {
  out[0].nb_dims = 4;
  out[0].d[0] = in[0].d[0];
  out[0].d[1] = in[0].d[1];
  out[0].d[2] = in[0].d[2];
  out[0].d[3] = in[2].d[3];
  out[1] = in[3];
}

char const* tensor_type_name(TensorType t) {
  switch (t) {
    case TensorType::kFLOAT: return "float32";
    case TensorType::kHALF: return "float16";
    case TensorType::kINT8: return "int8";
    case TensorType::kINT32: return "int32";
    case TensorType::kBOOL: return "bool";
    case TensorType::kUINT8: return "uint8";
    case TensorType::kFP8: return "fp8";
    case TensorType::kBF16: return "bfloat16";
    case TensorType::kINT64: return "int64";
    case TensorType::kINT4: return "int4";
  }
  return "another type";
}

bool kernel_dtype(TensorType t, DType* out) {
  switch (t) {
    case TensorType::kFLOAT: *out = DType::kFloat32; return true;
    case TensorType::kHALF: *out = DType::kFloat16; return true;
    case TensorType::kBF16: *out = DType::kBFloat16; return true;
    default: return false;
  }
}

namespace {

std::string type_error(char const* kind, int32_t index, char const* name, TensorType got,
                       std::string const& expected) {
  return std::string(kPluginName) + ": " + kind + " " + std::to_string(index) + " '" + name + "' is " +
         tensor_type_name(got) + ", expected " + expected;
}

std::string same_as_q(TensorType q) { return std::string("the same type as q (") + tensor_type_name(q) + ")"; }

}  // namespace

std::string check_input_types(TensorType const* in, int32_t nb_inputs) {
  if (nb_inputs != kNbInputs || in == nullptr) {
    return std::string(kPluginName) + ": expected 4 input types (q, k, v, state), got " + std::to_string(nb_inputs);
  }
  DType unused = DType::kFloat32;
  if (!kernel_dtype(in[0], &unused)) return type_error("input", 0, "q", in[0], "float32, float16 or bfloat16");
  if (in[1] != in[0]) return type_error("input", 1, "k", in[1], same_as_q(in[0]));
  if (in[2] != in[0]) return type_error("input", 2, "v", in[2], same_as_q(in[0]));
  if (in[3] != TensorType::kFLOAT) return type_error("input", 3, "state", in[3], "float32 (the state is float32 always)");
  return "";
}

std::string check_output_types(TensorType q, TensorType const* out, int32_t nb_outputs) {
  if (nb_outputs != kNbOutputs || out == nullptr) {
    return std::string(kPluginName) + ": expected 2 output types (o, state_out), got " + std::to_string(nb_outputs);
  }
  if (out[0] != q) return type_error("output", 0, "o", out[0], same_as_q(q));
  if (out[1] != TensorType::kFLOAT) {
    return type_error("output", 1, "state_out", out[1], "float32 (the state is float32 always)");
  }
  return "";
}

Params make_params(Attrs const& a, Shape const& q, Shape const& v) {
  Params p;
  p.variant = a.variant;
  p.B = static_cast<int32_t>(q.d[0]);
  p.T = static_cast<int32_t>(q.d[1]);
  p.H = static_cast<int32_t>(q.d[2]);
  p.d = static_cast<int32_t>(q.d[3]);
  p.dv = static_cast<int32_t>(v.d[3]);
  p.normalize = a.normalize;
  p.eps = a.eps;
  p.ridge = a.ridge;
  p.decay = a.decay.data();
  p.num_decay = static_cast<int32_t>(a.decay.size());
  return p;
}

std::string check_runtime_shapes(Attrs const& a, Shape const* in, int32_t nb_inputs, Params* p) {
  std::string err = check_shapes(a, in, nb_inputs, /*require_static_heads=*/true);
  if (!err.empty()) return err;
  *p = make_params(a, in[0], in[2]);
  if (char const* msg = validate(*p)) return std::string(kPluginName) + ": " + msg;
  return "";
}

}  // namespace trt
}  // namespace hla
