// Tests of the TensorRT-free half of the HLARecurrentStep plugin (hlaRecurrentStepAttrs.h):
// field parsing as the ONNX parser passes node attributes, value rules, shape rules, the
// state size N and the data-type rules (q, k, v, o one of float32 / float16 / bfloat16, states
// float32). Expected N values are written out by hand from docs/OP_CONTRACT.md.
// Exit code 0 = all passed; every failure is printed.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "hla_check.h"
#include "hlaRecurrentStepAttrs.h"

using hla::Variant;
using hla::trt::Attrs;
using hla::trt::Field;
using hla::trt::FieldType;
using hla::trt::Shape;

static bool contains(std::string const& s, std::string const& part) { return s.find(part) != std::string::npos; }

// Fields exactly as onnx-tensorrt's loadFields builds them: STRING -> kCHAR with the NUL counted
// in length, FLOATS -> kFLOAT32 x n, INT -> kINT32 x 1, FLOAT -> kFLOAT32 x 1.
struct OnnxFields {
  std::string variant;
  std::vector<float> decay;
  int32_t normalize = 0;
  float eps = 0.f, ridge = 0.f;
  std::vector<Field> fields;
  OnnxFields(char const* v, std::vector<float> dec, int32_t norm, float e, float r)
      : variant(v), decay(std::move(dec)), normalize(norm), eps(e), ridge(r) {
    fields.push_back({"variant", variant.c_str(), FieldType::kCHAR, static_cast<int32_t>(variant.size() + 1)});
    fields.push_back({"decay", decay.data(), FieldType::kFLOAT32, static_cast<int32_t>(decay.size())});
    fields.push_back({"normalize", &normalize, FieldType::kINT32, 1});
    fields.push_back({"eps", &eps, FieldType::kFLOAT32, 1});
    fields.push_back({"ridge", &ridge, FieldType::kFLOAT32, 1});
  }
  std::string parse(Attrs* a) const { return hla::trt::parse_fields(fields.data(), (int32_t)fields.size(), a); }
};

static std::string parse_one(Field f, Attrs* a) { return hla::trt::parse_fields(&f, 1, a); }

static Shape shape(std::vector<int64_t> d) {
  Shape s;
  s.nb_dims = static_cast<int32_t>(d.size());
  for (size_t i = 0; i < d.size(); ++i) s.d[i] = d[i];
  return s;
}

static std::string shapes_err(Attrs const& a, std::vector<int64_t> q, std::vector<int64_t> k, std::vector<int64_t> v,
                              std::vector<int64_t> s, bool require_static = true) {
  Shape in[4] = {shape(q), shape(k), shape(v), shape(s)};
  return hla::trt::check_shapes(a, in, 4, require_static);
}

static void test_defaults() {
  Attrs a;
  a.variant = Variant::kHLA3;  // overwritten by parse
  CHECK(hla::trt::parse_fields(nullptr, 0, &a).empty());
  CHECK(a.variant == Variant::kHLA2);
  CHECK(a.decay.size() == 1 && a.decay[0] == 1.0f);
  CHECK(!a.normalize);
  CHECK(a.eps == 1e-6f);
  CHECK(a.ridge == 0.0f);
}

static void test_onnx_style_fields() {
  Attrs a;
  OnnxFields f("ahla", {0.9f, 0.8f, 0.7f, 0.6f}, 1, 1e-5f, 0.0f);
  std::string err = f.parse(&a);
  CHECK(err.empty());
  CHECK(a.variant == Variant::kAHLA);
  CHECK(a.decay.size() == 4 && a.decay[1] == 0.8f && a.decay[3] == 0.6f);
  CHECK(a.normalize);
  CHECK(a.eps == 1e-5f);
  CHECK(a.ridge == 0.0f);

  OnnxFields g("hla2", {0.95f}, 0, 1e-6f, 0.25f);
  CHECK(g.parse(&a).empty());
  CHECK(a.variant == Variant::kHLA2 && a.ridge == 0.25f && !a.normalize);

  OnnxFields h("hla3", {1.0f}, 1, 0.0f, 0.0f);
  CHECK(h.parse(&a).empty());
  CHECK(a.variant == Variant::kHLA3 && a.eps == 0.0f);

  // A string without the NUL in its length, a subset of fields (others keep defaults).
  char const v[4] = {'h', 'l', 'a', '3'};
  CHECK(parse_one({"variant", v, FieldType::kCHAR, 4}, &a).empty());
  CHECK(a.variant == Variant::kHLA3 && a.decay.size() == 1 && a.decay[0] == 1.0f && !a.normalize);

  // FLOAT64 decay and INT64 normalize (Python users) are accepted.
  double dd[2] = {0.5, 0.25};
  CHECK(parse_one({"decay", dd, FieldType::kFLOAT64, 2}, &a).empty());
  CHECK(a.decay.size() == 2 && a.decay[0] == 0.5f && a.decay[1] == 0.25f);
  int64_t n64 = 1;
  CHECK(parse_one({"normalize", &n64, FieldType::kINT64, 1}, &a).empty());
  CHECK(a.normalize);
}

static void test_bad_fields() {
  Attrs a;
  std::string err;
  err = OnnxFields("hla4", {1.0f}, 0, 1e-6f, 0.f).parse(&a);
  CHECK(contains(err, "'variant'") && contains(err, "hla4") && contains(err, "hla2, ahla, hla3"));

  int32_t i32 = 1;
  err = parse_one({"variant", &i32, FieldType::kINT32, 1}, &a);
  CHECK(contains(err, "'variant'") && contains(err, "CHAR") && contains(err, "INT32"));

  err = OnnxFields("hla2", {0.0f}, 0, 1e-6f, 0.f).parse(&a);
  CHECK(contains(err, "'decay'") && contains(err, "(0, 1]"));
  err = OnnxFields("hla2", {0.9f, 1.5f}, 0, 1e-6f, 0.f).parse(&a);
  CHECK(contains(err, "'decay'") && contains(err, "value 1"));
  // The value rules and their wording come from plugins/common (the ORT op reports the same).
  CHECK(err == "HLARecurrentStep: attribute 'decay' value 1.5 (index 1) is outside (0, 1]");
  err = OnnxFields("hla2", {1.0f}, 0, -1.f, 0.f).parse(&a);
  CHECK(err == "HLARecurrentStep: attribute 'eps' is -1, expected a finite value >= 0");
  err = OnnxFields("hla2", {std::numeric_limits<float>::quiet_NaN()}, 0, 1e-6f, 0.f).parse(&a);
  CHECK(contains(err, "'decay'"));
  err = OnnxFields("hla2", {-0.5f}, 0, 1e-6f, 0.f).parse(&a);
  CHECK(contains(err, "'decay'"));
  err = OnnxFields("hla3", {0.9f}, 0, 1e-6f, 0.f).parse(&a);
  CHECK(contains(err, "'decay'") && contains(err, "hla3"));
  err = parse_one({"decay", &i32, FieldType::kINT32, 1}, &a);
  CHECK(contains(err, "'decay'") && contains(err, "FLOAT32"));
  std::vector<float> too_many(hla::kMaxHeads + 1, 1.0f);
  err = parse_one({"decay", too_many.data(), FieldType::kFLOAT32, (int32_t)too_many.size()}, &a);
  CHECK(contains(err, "'decay'") && contains(err, std::to_string(hla::kMaxHeads + 1).c_str()));

  err = OnnxFields("hla2", {1.0f}, 2, 1e-6f, 0.f).parse(&a);
  CHECK(contains(err, "'normalize'") && contains(err, "0 or 1"));
  float f1 = 1.0f;
  err = parse_one({"normalize", &f1, FieldType::kFLOAT32, 1}, &a);
  CHECK(contains(err, "'normalize'") && contains(err, "INT32"));

  err = OnnxFields("hla2", {1.0f}, 0, -1e-3f, 0.f).parse(&a);
  CHECK(contains(err, "'eps'") && contains(err, ">= 0"));
  err = OnnxFields("hla2", {1.0f}, 0, std::numeric_limits<float>::infinity(), 0.f).parse(&a);
  CHECK(contains(err, "'eps'"));
  float two[2] = {1e-6f, 1e-6f};
  err = parse_one({"eps", two, FieldType::kFLOAT32, 2}, &a);
  CHECK(contains(err, "'eps'") && contains(err, "one float"));

  err = OnnxFields("hla2", {1.0f}, 0, 1e-6f, -0.1f).parse(&a);
  CHECK(contains(err, "'ridge'") && contains(err, ">= 0"));
  err = OnnxFields("ahla", {1.0f}, 0, 1e-6f, 0.1f).parse(&a);
  CHECK(contains(err, "'ridge'") && contains(err, "ahla"));
  err = OnnxFields("hla3", {1.0f}, 0, 1e-6f, 0.1f).parse(&a);
  CHECK(contains(err, "'ridge'") && contains(err, "hla3"));

  err = parse_one({"plugin_version", "1", FieldType::kCHAR, 2}, &a);
  CHECK(contains(err, "unknown attribute 'plugin_version'"));
  err = parse_one({"variant", nullptr, FieldType::kCHAR, 5}, &a);
  CHECK(contains(err, "'variant'") && contains(err, "empty"));
  err = parse_one({"decay", &f1, FieldType::kFLOAT32, 0}, &a);
  CHECK(contains(err, "'decay'") && contains(err, "empty"));
}

// N from docs/OP_CONTRACT.md, written out for d = 8, dv = 16.
static void test_state_size_rules() {
  struct Case {
    char const* variant;
    int32_t normalize;
    float ridge;
    int64_t N;
  } const cases[] = {
      {"hla2", 0, 0.f, 8 * 8 + 8 * 16},                           // 192
      {"hla2", 1, 0.f, 8 * 8 + 8 * 16 + 8},                       // 200
      {"hla2", 0, 0.5f, 8 * 8 + 8 * 16 + 8 * 16},                 // 320
      {"hla2", 1, 0.5f, 8 * 8 + 8 * 16 + 8 + 8 * 16 + 8},         // 336
      {"ahla", 0, 0.f, 2 * 8 * 16},                               // 256
      {"ahla", 1, 0.f, 2 * 8 * 16 + 2 * 8},                       // 272
      {"hla3", 0, 0.f, 8 * 8 + 2 * 8 * 16},                       // 320
      {"hla3", 1, 0.f, 8 * 8 + 2 * 8 * 16 + 2 * 8},               // 336
  };
  for (Case const& c : cases) {
    Attrs a;
    CHECK(OnnxFields(c.variant, {1.0f}, c.normalize, 1e-6f, c.ridge).parse(&a).empty());
    CHECK(shapes_err(a, {2, 5, 4, 8}, {2, 5, 4, 8}, {2, 5, 4, 16}, {2, 4, c.N}).empty());
    std::string err = shapes_err(a, {2, 5, 4, 8}, {2, 5, 4, 8}, {2, 5, 4, 16}, {2, 4, c.N + 1});
    std::string expected = "expected N = " + std::to_string(c.N);
    CHECK(contains(err, "'state'") && contains(err, expected.c_str()) && contains(err, c.variant));
    err = shapes_err(a, {2, 5, 4, 8}, {2, 5, 4, 8}, {2, 5, 4, 16}, {2, 4, c.N - 8});
    CHECK(contains(err, expected.c_str()));
  }
}

static void test_shape_rules() {
  Attrs a;  // hla2, d = 8, dv = 16 -> N = 192
  int64_t const N = 192;
  CHECK(shapes_err(a, {1, 1, 4, 8}, {1, 1, 4, 8}, {1, 1, 4, 16}, {1, 4, N}).empty());
  // Dynamic B and T at build time.
  CHECK(shapes_err(a, {-1, -1, 4, 8}, {-1, -1, 4, 8}, {-1, -1, 4, 16}, {-1, 4, N}).empty());
  // Dynamic H is fine for shape inference but not for configure (require_static_heads).
  CHECK(shapes_err(a, {-1, -1, -1, 8}, {-1, -1, -1, 8}, {-1, -1, -1, 16}, {-1, -1, N}, false).empty());
  CHECK(contains(shapes_err(a, {-1, -1, -1, 8}, {-1, -1, -1, 8}, {-1, -1, -1, 16}, {-1, -1, N}, true),
                 "must be static"));

  std::string err;
  err = shapes_err(a, {2, 5, 4, 8}, {2, 5, 4, 8}, {2, 5, 4, 16}, {2, 4, 1, N});
  CHECK(contains(err, "input 3 'state' must have rank 3") && contains(err, "got rank 4"));
  err = shapes_err(a, {2, 5, 32}, {2, 5, 4, 8}, {2, 5, 4, 16}, {2, 4, N});
  CHECK(contains(err, "input 0 'q' must have rank 4"));
  err = shapes_err(a, {2, 5, 4, 8}, {3, 5, 4, 8}, {2, 5, 4, 16}, {2, 4, N});
  CHECK(contains(err, "B of input 'k'"));
  err = shapes_err(a, {2, 5, 4, 8}, {2, 5, 4, 8}, {2, 6, 4, 16}, {2, 4, N});
  CHECK(contains(err, "T of input 'v'"));
  err = shapes_err(a, {2, 5, 4, 8}, {2, 5, 4, 8}, {2, 5, 4, 16}, {3, 4, N});
  CHECK(contains(err, "B of input 'state'"));
  err = shapes_err(a, {2, 5, 4, 8}, {2, 5, 4, 8}, {2, 5, 4, 16}, {2, 2, N});
  CHECK(contains(err, "H of input 'state'"));
  err = shapes_err(a, {2, 5, 4, 8}, {2, 5, 4, 4}, {2, 5, 4, 16}, {2, 4, N});
  CHECK(contains(err, "d of input 'k'"));
  err = shapes_err(a, {2, 0, 4, 8}, {2, 0, 4, 8}, {2, 0, 4, 16}, {2, 4, N});
  CHECK(contains(err, "T must be >= 1"));

  Attrs per_head;
  CHECK(OnnxFields("hla2", {0.9f, 0.8f, 0.7f}, 0, 1e-6f, 0.f).parse(&per_head).empty());
  err = shapes_err(per_head, {2, 5, 4, 8}, {2, 5, 4, 8}, {2, 5, 4, 16}, {2, 4, N});
  CHECK(contains(err, "'decay' has 3 values") && contains(err, "H = 4"));
  CHECK(shapes_err(per_head, {2, 5, 3, 8}, {2, 5, 3, 8}, {2, 5, 3, 16}, {2, 3, N}).empty());

  Shape in[4] = {shape({2, 5, 4, 8}), shape({2, 5, 4, 8}), shape({2, 5, 4, 16}), shape({2, 4, N})};
  CHECK(contains(hla::trt::check_shapes(a, in, 3, true), "expected 4 inputs"));
}

static void test_outputs_and_params() {
  Shape in[4] = {shape({-1, -1, 4, 8}), shape({-1, -1, 4, 8}), shape({-1, -1, 4, 16}), shape({-1, 4, 192})};
  Shape out[2];
  hla::trt::output_shapes(in, out);
  CHECK(out[0].nb_dims == 4 && out[0].d[0] == -1 && out[0].d[1] == -1 && out[0].d[2] == 4 && out[0].d[3] == 16);
  CHECK(out[1].nb_dims == 3 && out[1].d[0] == -1 && out[1].d[1] == 4 && out[1].d[2] == 192);

  Attrs a;
  CHECK(OnnxFields("hla2", {0.9f, 0.8f, 0.7f}, 1, 1e-4f, 0.5f).parse(&a).empty());
  hla::Params p = hla::trt::make_params(a, shape({2, 7, 3, 8}), shape({2, 7, 3, 16}));
  CHECK(p.variant == Variant::kHLA2 && p.B == 2 && p.T == 7 && p.H == 3 && p.d == 8 && p.dv == 16);
  CHECK(p.normalize && p.eps == 1e-4f && p.ridge == 0.5f);
  CHECK(p.num_decay == 3 && p.decay == a.decay.data() && p.decay[2] == 0.7f);
  CHECK(hla::head_decay(p, 1) == 0.8f);
  CHECK(hla::validate(p) == nullptr);

  // Runtime shapes (onShapeChange, enqueue): shape rules, then the kernel parameters.
  int64_t const N = hla::state_size(Variant::kHLA2, 8, 16, true, 0.5f);
  Shape rt[4] = {shape({2, 7, 3, 8}), shape({2, 7, 3, 8}), shape({2, 7, 3, 16}), shape({2, 3, N})};
  hla::Params q;
  CHECK(hla::trt::check_runtime_shapes(a, rt, 4, &q).empty());
  CHECK(q.B == 2 && q.T == 7 && q.H == 3 && q.d == 8 && q.dv == 16 && q.num_decay == 3);
  rt[3] = shape({2, 3, N + 4});
  CHECK(contains(hla::trt::check_runtime_shapes(a, rt, 4, &q), "expected N = " + std::to_string(N)));
  rt[3] = shape({2, 4, N});
  CHECK(contains(hla::trt::check_runtime_shapes(a, rt, 4, &q), "H of input 'state'"));
  // validate() after the shape rules: B*T*H*d beyond 64-bit indexing
  Shape huge[4] = {shape({INT32_MAX, INT32_MAX, 3, 8}), shape({INT32_MAX, INT32_MAX, 3, 8}),
                   shape({INT32_MAX, INT32_MAX, 3, 16}), shape({INT32_MAX, 3, N})};
  CHECK(contains(hla::trt::check_runtime_shapes(a, huge, 4, &q), "overflow 64-bit indexing"));
}

// Data types: q, k, v, o share one of float32 / float16 / bfloat16; states are float32.
static void test_type_rules() {
  using hla::DType;
  using hla::trt::TensorType;
  using hla::trt::check_input_types;
  using hla::trt::check_output_types;
  // Activation types and the kernel dtype each one maps to (enqueue passes it to forward_cuda).
  struct Map {
    TensorType t;
    DType k;
  } const maps[] = {{TensorType::kFLOAT, DType::kFloat32},
                    {TensorType::kHALF, DType::kFloat16},
                    {TensorType::kBF16, DType::kBFloat16}};
  for (Map const& m : maps) {
    DType k = m.t == TensorType::kFLOAT ? DType::kBFloat16 : DType::kFloat32;  // != m.k: must be written
    CHECK(hla::trt::kernel_dtype(m.t, &k) && k == m.k);
    TensorType const in[4] = {m.t, m.t, m.t, TensorType::kFLOAT};
    CHECK(check_input_types(in, 4).empty());
    TensorType const out[2] = {m.t, TensorType::kFLOAT};
    CHECK(check_output_types(m.t, out, 2).empty());
  }
  CHECK(std::strcmp(hla::trt::tensor_type_name(TensorType::kBF16), "bfloat16") == 0);
  CHECK(std::strcmp(hla::trt::tensor_type_name(static_cast<TensorType>(10)), "another type") == 0);
  // No kernel for any other type (10 = kFP4 in TensorRT >= 10.8 headers); *out is left alone.
  for (int32_t t : {2, 3, 4, 5, 6, 8, 9, 10, 11, -1}) {
    DType k = DType::kBFloat16;
    CHECK(!hla::trt::kernel_dtype(static_cast<TensorType>(t), &k) && k == DType::kBFloat16);
  }

  TensorType const F = TensorType::kFLOAT, H = TensorType::kHALF, BF = TensorType::kBF16;
  // Mixed activation dtypes: the error names the tensor, its type and q's type.
  {
    TensorType const in[4] = {BF, H, BF, F};
    std::string const e = check_input_types(in, 4);
    CHECK(contains(e, "input 1 'k' is float16, expected the same type as q (bfloat16)"));
  }
  {
    TensorType const in[4] = {BF, BF, F, F};
    std::string const e = check_input_types(in, 4);
    CHECK(contains(e, "input 2 'v' is float32, expected the same type as q (bfloat16)"));
  }
  {
    TensorType const in[4] = {H, BF, H, F};
    CHECK(contains(check_input_types(in, 4), "'k' is bfloat16, expected the same type as q (float16)"));
  }
  {
    TensorType const in[4] = {F, F, BF, F};
    CHECK(contains(check_input_types(in, 4), "'v' is bfloat16, expected the same type as q (float32)"));
  }
  // The state is float32 whatever the activation dtype.
  for (TensorType s : {H, BF, TensorType::kINT8}) {
    TensorType const in[4] = {BF, BF, BF, s};
    std::string const e = check_input_types(in, 4);
    CHECK(contains(e, "input 3 'state' is ") && contains(e, "expected float32"));
  }
  {
    TensorType const in[4] = {TensorType::kINT8, TensorType::kINT8, TensorType::kINT8, F};
    CHECK(contains(check_input_types(in, 4), "input 0 'q' is int8, expected float32, float16 or bfloat16"));
    TensorType const fp8[4] = {TensorType::kFP8, TensorType::kFP8, TensorType::kFP8, F};
    CHECK(contains(check_input_types(fp8, 4), "'q' is fp8"));
    CHECK(contains(check_input_types(in, 3), "expected 4 input types"));
    CHECK(!check_input_types(nullptr, 4).empty());
  }
  // Outputs: o in q's type, state_out float32.
  {
    TensorType const o16[2] = {H, F};
    CHECK(contains(check_output_types(BF, o16, 2), "output 0 'o' is float16, expected the same type as q (bfloat16)"));
    TensorType const sbf[2] = {BF, BF};
    CHECK(contains(check_output_types(BF, sbf, 2), "output 1 'state_out' is bfloat16, expected float32"));
    TensorType const ok[2] = {BF, F};
    CHECK(contains(check_output_types(BF, ok, 1), "expected 2 output types"));
  }
}

int main() {
  test_defaults();
  test_onnx_style_fields();
  test_bad_fields();
  test_state_size_rules();
  test_shape_rules();
  test_outputs_and_params();
  test_type_rules();
  return HLA_CHECK_SUMMARY("hla_trt_attrs_test");
}
