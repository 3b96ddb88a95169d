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

// d, dv >= 1 and < 2^31 (int dims). Summed in uint64_t, where no sum of these terms (each < 2^62)
// overflows; N = -1 when it does not fit in int64_t.
inline StateLayout state_layout(Variant variant, int64_t d, int64_t dv, bool normalize, float ridge) {
  StateLayout L;
  const uint64_t D = uint64_t(d), DV = uint64_t(dv);
  uint64_t off = 0;
  auto take = [&off](int64_t& part, uint64_t size) {
    part = int64_t(off);
    off += size;
  };
  switch (variant) {
    case Variant::kHLA2:
      take(L.S, D * D);
      take(L.M, D * DV);
      if (normalize) take(L.n, D);
      if (ridge != 0.0f) {
        take(L.C, D * DV);
        if (normalize) take(L.m, D);
      }
      break;
    case Variant::kAHLA:
      take(L.P, D * DV);
      take(L.E, D * DV);
      if (normalize) { take(L.mK, D); take(L.n, D); }
      break;
    case Variant::kHLA3:
      take(L.S, D * D);
      take(L.P, D * DV);
      take(L.F, D * DV);
      if (normalize) { take(L.mK, D); take(L.n, D); }
      break;
    default:
      return L;
  }
  L.N = off > uint64_t(INT64_MAX) ? -1 : int64_t(off);
  return L;
}

}  // namespace hla
