// KParams: what the token-serial CUDA kernel of hla_cuda.cu gets by value (shapes, options, the
// state layout's offsets, per-head decay), and make_kparams. Plain C++.
#pragma once

#include <cstdint>

#include "hla_kernels.h"
#include "hla_layout.h"

namespace hla {

struct KParams {
  int32_t variant, T, H, d, dv, normalize;
  int64_t N;
  float eps, ridge;
  int64_t offS, offM, offn, offC, offm, offP, offE, offF, offmK;  // -1: part absent
  int32_t num_decay;
  float decay[kMaxHeads];
};

#ifndef __CUDACC_RTC__
inline KParams make_kparams(const Params& p) {
  KParams k{};
  k.variant = int32_t(p.variant);
  k.T = p.T;
  k.H = p.H;
  k.d = p.d;
  k.dv = p.dv;
  k.normalize = p.normalize ? 1 : 0;
  const StateLayout L = state_layout(p.variant, p.d, p.dv, p.normalize, p.ridge);
  k.N = L.N;
  k.eps = p.eps;
  k.ridge = p.ridge;
  k.offS = L.S; k.offM = L.M; k.offn = L.n; k.offC = L.C; k.offm = L.m;
  k.offP = L.P; k.offE = L.E; k.offF = L.F; k.offmK = L.mK;
  k.num_decay = p.decay == nullptr ? 0 : p.num_decay;
  for (int i = 0; i < k.num_decay; ++i) k.decay[i] = p.decay[i];
  return k;
}
#endif

}  // namespace hla
