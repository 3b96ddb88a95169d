// Attribute value rules of HLARecurrentStep that need no shapes (docs/OP_CONTRACT.md,
// "Attributes" and "Bad input"), shared by the ONNX Runtime op (plugins/ort_hla) and the TensorRT
// plugin (plugins/trt_hla) so that both enforce and word every rule the same way. Reading the
// attributes from the framework stays in each backend; the shape-dependent checks (decay count
// 1 or H, state size N) are the backends' too, and hla::validate() repeats all of them for the
// kernels.
#pragma once

#include <cstddef>
#include <string>

#include "hla_kernels.h"

namespace hla {

// "" when valid, else a message naming the attribute, the offending value (and its index for
// decay) and what was expected:
//   decay: 1 or more values, each finite and in (0, 1]; all 1.0 for hla3;
//   eps: finite, >= 0;  ridge: finite, >= 0, and 0 unless the variant is hla2.
std::string check_attribute_values(Variant variant, const float* decay, size_t num_decay, float eps, float ridge);

}  // namespace hla
