// State size, variant names and attribute/shape validation for HLARecurrentStep.
// The rules are docs/OP_CONTRACT.md ("Attributes", "State layout", "Bad input").
#include <cmath>
#include <cstring>
#include <sstream>

#include "hla_attrs.h"
#include "hla_kernels.h"
#include "hla_layout.h"

namespace hla {

int64_t state_size(Variant variant, int d, int dv, bool normalize, float ridge) {
  if (d < 1 || dv < 1) return -1;
  return state_layout(variant, d, dv, normalize, ridge).N;
}

bool parse_variant(const char* name, Variant* out) {
  if (name == nullptr) return false;
  Variant v;
  if (std::strcmp(name, "hla2") == 0) {
    v = Variant::kHLA2;
  } else if (std::strcmp(name, "ahla") == 0) {
    v = Variant::kAHLA;
  } else if (std::strcmp(name, "hla3") == 0) {
    v = Variant::kHLA3;
  } else {
    return false;
  }
  if (out != nullptr) *out = v;
  return true;
}

const char* variant_name(Variant v) {
  switch (v) {
    case Variant::kHLA2: return "hla2";
    case Variant::kAHLA: return "ahla";
    case Variant::kHLA3: return "hla3";
  }
  return "unknown";
}

const char* validate(const Params& p) {
  if (p.variant != Variant::kHLA2 && p.variant != Variant::kAHLA && p.variant != Variant::kHLA3)
    return "attribute 'variant': unknown variant; expected one of hla2, ahla, hla3";
  if (p.B < 1) return "batch size B (dim 0 of q, k, v, state) must be >= 1";
  if (p.T < 1) return "sequence length T (dim 1 of q, k, v) must be >= 1";
  if (p.H < 1) return "number of heads H (dim 2 of q, k, v; dim 1 of state) must be >= 1";
  if (p.d < 1) return "head dim d (last dim of q and k) must be >= 1";
  if (p.dv < 1) return "value head dim dv (last dim of v) must be >= 1";
  // The state of one (batch, head) pair and the whole tensors must be indexable.
  const int64_t n = state_size(p.variant, p.d, p.dv, p.normalize, p.ridge);
  const int64_t big = int64_t(1) << 62;
  // Products compared through divisions so that the check itself cannot overflow (B*T < 2^62).
  const int64_t widest = p.d > p.dv ? p.d : p.dv;
  if (n <= 0 || n > (int64_t(1) << 40) ||
      int64_t(p.B) * p.H > big / n ||
      int64_t(p.B) * p.T > big / p.H / widest)
    return "tensor sizes overflow 64-bit indexing (B, T, H, d, dv too large)";
  if (p.num_decay != 0 && p.num_decay != 1 && p.num_decay != p.H)
    return "attribute 'decay': expected 1 value or exactly H values (one per head)";
  if (p.num_decay > 0 && p.decay == nullptr)
    return "attribute 'decay': num_decay > 0 but no values were given (null pointer)";
  for (int i = 0; i < p.num_decay; ++i) {
    const float g = p.decay[i];
    if (!std::isfinite(g) || !(g > 0.0f) || !(g <= 1.0f))
      return "attribute 'decay': every value must be finite and in (0, 1]";
  }
  if (p.variant == Variant::kHLA3) {
    for (int i = 0; i < p.num_decay; ++i)
      if (p.decay[i] != 1.0f)
        return "attribute 'decay': variant hla3 requires decay == 1.0 (decay for third order is "
               "not defined in contract version 1)";
  }
  if (!std::isfinite(p.ridge) || p.ridge < 0.0f)
    return "attribute 'ridge': must be finite and >= 0";
  if (p.ridge != 0.0f && p.variant != Variant::kHLA2)
    return "attribute 'ridge': must be 0 for variants ahla and hla3 (ridge is hla2 only)";
  if (!std::isfinite(p.eps) || p.eps < 0.0f) return "attribute 'eps': must be finite and >= 0";
  return nullptr;
}

std::string check_attribute_values(Variant variant, const float* decay, size_t num_decay, float eps, float ridge) {
  std::ostringstream os;
  if (num_decay == 0 || decay == nullptr) return "attribute 'decay' is empty; expected 1 value or one per head";
  for (size_t i = 0; i < num_decay; ++i) {
    const float g = decay[i];
    if (!std::isfinite(g) || !(g > 0.0f) || g > 1.0f) {
      os << "attribute 'decay' value " << g << " (index " << i << ") is outside (0, 1]";
      return os.str();
    }
    if (variant == Variant::kHLA3 && g != 1.0f) {
      os << "attribute 'decay' must be 1.0 for variant hla3 (decay is not defined for third order in op "
            "contract version 1), got "
         << g << " at index " << i;
      return os.str();
    }
  }
  if (!std::isfinite(eps) || eps < 0.0f) {
    os << "attribute 'eps' is " << eps << ", expected a finite value >= 0";
    return os.str();
  }
  if (!std::isfinite(ridge) || ridge < 0.0f) {
    os << "attribute 'ridge' is " << ridge << ", expected a finite value >= 0";
    return os.str();
  }
  if (ridge != 0.0f && variant != Variant::kHLA2) {
    return std::string("attribute 'ridge' must be 0 for variant ") + variant_name(variant) +
           " (ridge is defined for hla2 only)";
  }
  return "";
}

}  // namespace hla
