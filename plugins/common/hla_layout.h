// Where each part of one head's state lives inside its float32 vector of length N
// (docs/OP_CONTRACT.md, "State layout"): the one definition used by state_size (hla_validate.cpp),
// the CPU kernels (hla_cpu.cpp) and the CUDA kernels (hla_cuda.cu). Parts are row-major and
// concatenated in this order:
//   hla2: S (d,d), M (d,dv), [n (d) if normalize], [C (d,dv), [m (d) if normalize] if ridge != 0]
//   ahla: P (d,dv), E (d,dv), [mK (d), n (d) if normalize]
//   hla3: S (d,d), P (d,dv), F (d,dv), [mK (d), n (d) if normalize]
#pragma once

#include <cstdint>

#include "hla_kernels.h"

namespace hla {

struct StateLayout {
  int64_t S = -1, M = -1, n = -1, C = -1, m = -1, P = -1, E = -1, F = -1, mK = -1;  // offsets; -1: absent
  int64_t N = -1;  // the state length; -1 for an unknown variant
};

inline StateLayout state_layout(Variant variant, int64_t d, int64_t dv, bool normalize, float ridge) {
  StateLayout L;
  int64_t off = 0;
  switch (variant) {
    case Variant::kHLA2:
      L.S = off; off += d * d;
      L.M = off; off += d * dv;
      if (normalize) { L.n = off; off += d; }
      if (ridge != 0.0f) {
        L.C = off; off += d * dv;
        if (normalize) { L.m = off; off += d; }
      }
      break;
    case Variant::kAHLA:
      L.P = off; off += d * dv;
      L.E = off; off += d * dv;
      if (normalize) { L.mK = off; off += d; L.n = off; off += d; }
      break;
    case Variant::kHLA3:
      L.S = off; off += d * d;
      L.P = off; off += d * dv;
      L.F = off; off += d * dv;
      if (normalize) { L.mK = off; off += d; L.n = off; off += d; }
      break;
    default:
      return L;
  }
  L.N = off;
  return L;
}

}  // namespace hla
