// HLARecurrentStep TensorRT plugin: attribute parsing and shape rules, free of TensorRT.
//
// The plugin (hlaRecurrentStepPlugin.cpp) translates nvinfer1::PluginField / Dims into the plain
// types below and calls these functions, so that every rule can be unit-tested without TensorRT
// (plugins/trt_hla/tests/hla_trt_attrs_test.cpp). Rules: docs/OP_CONTRACT.md.
//
//   inputs : q [B, T, H, d], k [B, T, H, d], v [B, T, H, dv], state [B, H, N] (float32)
//   outputs: o [B, T, H, dv],                                 state_out [B, H, N] (float32)
//   q, k, v, o: one dtype, float32, float16 or bfloat16.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hla_kernels.h"

namespace hla {
namespace trt {

constexpr char const* kPluginName = "HLARecurrentStep";
constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "";

constexpr int32_t kNbInputs = 4;   // q, k, v, state
constexpr int32_t kNbOutputs = 2;  // o, state_out

// Same numeric values as nvinfer1::PluginFieldType (static_assert'ed in the plugin).
enum class FieldType : int32_t {
  kFLOAT16 = 0,
  kFLOAT32 = 1,
  kFLOAT64 = 2,
  kINT8 = 3,
  kINT16 = 4,
  kINT32 = 5,
  kCHAR = 6,
  kDIMS = 7,
  kUNKNOWN = 8,
  kBF16 = 9,
  kINT64 = 10,
};

// A plugin field as TensorRT passes it (name, data, type, element count).
struct Field {
  char const* name = nullptr;
  void const* data = nullptr;
  FieldType type = FieldType::kUNKNOWN;
  int32_t length = 0;
};

// Same numeric values as nvinfer1::DataType (static_assert'ed in the plugin; equal in the
// TensorRT 10.3, 10.x and 11 headers).
enum class TensorType : int32_t {
  kFLOAT = 0,
  kHALF = 1,
  kINT8 = 2,
  kINT32 = 3,
  kBOOL = 4,
  kUINT8 = 5,
  kFP8 = 6,
  kBF16 = 7,
  kINT64 = 8,
  kINT4 = 9,
};

// "float32", "float16", "bfloat16", "int8", ... ("another type" for values not listed above).
char const* tensor_type_name(TensorType t);

// The kernel dtype of an activation type: kFLOAT -> kFloat32, kHALF -> kFloat16,
// kBF16 -> kBFloat16. False (and *out untouched) for any other type.
bool kernel_dtype(TensorType t, DType* out);

// Input dtype rules (in[0..3] = q, k, v, state): q float32, float16 or bfloat16; k and v q's
// dtype; state float32. "" when valid, otherwise a message naming the tensor.
std::string check_input_types(TensorType const* in, int32_t nb_inputs);

// Output dtype rules given q's dtype (out[0..1] = o, state_out): o q's dtype, state_out float32.
std::string check_output_types(TensorType q, TensorType const* out, int32_t nb_outputs);

// The node attributes, with the contract's defaults.
struct Attrs {
  Variant variant = Variant::kHLA2;
  std::vector<float> decay{1.0f};  // 1 value (all heads) or H values
  bool normalize = false;
  float eps = 1e-6f;
  float ridge = 0.0f;
};

// Parses the fields the ONNX parser passes for the node attributes (STRING -> kCHAR,
// FLOATS -> kFLOAT32, INT -> kINT32, FLOAT -> kFLOAT32) or that getFieldsToSerialize() wrote.
// Absent fields keep their defaults. Returns "" on success, otherwise a message naming the
// field and what was expected (then *out is unspecified).
std::string parse_fields(Field const* fields, int32_t nb_fields, Attrs* out);

// Value rules that need no shapes (decay range, hla3 decay, ridge, eps). "" when valid.
std::string check_attrs(Attrs const& a);

// A tensor shape; -1 marks a dimension not known yet (dynamic at build time).
struct Shape {
  int32_t nb_dims = 0;
  int64_t d[8] = {0, 0, 0, 0, 0, 0, 0, 0};
};

// Checks q, k, v, state (in[0..3]) against the contract and the attributes: ranks, matching
// B/T/H/d, T >= 1, decay count (1 or H), state size N. Unknown (-1) dimensions are skipped
// unless require_static_heads, which demands H, d, dv and N known (they fix the kernel).
// "" when valid, otherwise the message.
std::string check_shapes(Attrs const& a, Shape const* in, int32_t nb_inputs, bool require_static_heads);

// Output shapes from input shapes: o = [q.B, q.T, q.H, v.dv], state_out = state.
void output_shapes(Shape const* in, Shape* out);

// Kernel parameters for concrete shapes (decay points into a).
Params make_params(Attrs const& a, Shape const& q, Shape const& v);

// Runtime (concrete) shapes of q, k, v, state (in[0..3]): check_shapes with H, d, dv, N required,
// then make_params and hla::validate. "" with *p filled when valid, otherwise the message.
std::string check_runtime_shapes(Attrs const& a, Shape const* in, int32_t nb_inputs, Params* p);

}  // namespace trt
}  // namespace hla
