// Tile sizes, shared-memory carve-outs and workspace size of the chunked CUDA prefill
// (hla_cuda_chunk.cuh). Plain C++ (no CUDA needed): the host (hla_cuda.cu: launch configuration,
// cuda_workspace_size) and the kernels (the same carve-out offsets) include it, and so can a
// CPU-only build (hla_capi.cpp: hla_capi_chunk_plan, tested in tests/test_native_kernels.py).
//
// Per (batch row, head) the prompt is cut into chunks of BT tokens (the last may be shorter):
// BT = 64, or 32 / 16 when the 64-token tiles exceed kChunkSmemLimit (large heads, fp32).
// Head dims are padded to multiples of 16 for the tensor-core tiles: Dp = round16(d),
// Vw = round16(dvx) with dvx = dv + 1 when normalize (the normaliser rides along as a value
// column of ones, as in the Triton kernels), else dv. Padding is zero-filled.
//
// Workspace: the state before every chunk and the final state, in the contract layout
// (docs/OP_CONTRACT.md): float32 [B*H, NT + 1, N], NT = ceil(T / BT), i.e.
//     workspace bytes = 4 * B * H * (ceil(T / BT) + 1) * N.
#pragma once

#include <cstddef>
#include <cstdint>

#include "hla_kernels.h"
#include "hla_layout.h"

#if defined(__CUDACC__)
#define HLA_HD __host__ __device__
#else
#define HLA_HD
#endif

namespace hla {

constexpr int kChunkTokens = 64;        // longest chunk (BT)
constexpr int kChunkThreads = 256;      // threads per block of every chunk kernel (8 warps)
// Largest dynamic shared memory per block a chunk kernel may ask for: sm_87's opt-in limit
// (163 KB; sm_90: 227 KB). One limit for both archs keeps the workspace size device-independent.
constexpr size_t kChunkSmemLimit = 163 * 1024;
constexpr int kChunkMaxGridY = 65535;   // gridDim.y limit (output kernels loop over more chunks)

struct ChunkDims {
  int32_t BT = kChunkTokens;
  int32_t Dp = 0, Vw = 0;  // padded d and dvx
  int32_t BK = 0, BV = 0;  // rows of S / value columns per block of the state kernels
  int32_t hp = 0, fp = 0;  // row padding (elements) of activation-type and float tiles
  int32_t esz = 4;         // bytes per activation element
};

enum class ChunkKind : int32_t { kHLA2State = 0, kHLA2Out = 1, kAHLAState = 2, kAHLAOut = 3 };

// Byte offsets of the tiles in one block's dynamic shared memory (-1: unused) and the total.
// Row strides (elements) follow from ChunkDims: activation tiles [rows][cols + hp], float tiles
// [rows][cols + fp].
struct ChunkSmem {
  int64_t q = -1, k = -1, kd = -1, v = -1, p = -1, w = -1, wg = -1, x = -1, z = -1, zt = -1;
  int64_t S = -1, M = -1, C = -1, st = -1, g = -1, r = -1, rt = -1, o = -1, P = -1, E = -1;
  int64_t wlo = -1, wglo = -1, rtlo = -1;  // low halves of split 16-bit operands (esz == 2 only)
  int64_t dec = -1;
  int64_t bytes = 0;
};

HLA_HD inline int32_t round16(int32_t x) { return (x + 15) / 16 * 16; }

HLA_HD inline ChunkDims chunk_dims(int32_t d, int32_t dvx, int32_t esz) {
  ChunkDims m;
  m.Dp = round16(d);
  m.Vw = round16(dvx);
  m.BK = m.Dp % 32 == 0 ? 32 : 16;
  m.BV = m.Vw % 32 == 0 ? 32 : 16;
  m.esz = esz;
  // 16-bit tiles feed WMMA: strides multiple of 8 elements (16 B) keep every 16-row tile 32-byte
  // aligned; +8 / +4 also spreads rows over the banks. fp32 tiles are read by CUDA-core loops
  // only: +1 makes column walks conflict-free.
  m.hp = esz == 4 ? 1 : 8;
  m.fp = esz == 4 ? 1 : 4;
  return m;
}

HLA_HD inline ChunkSmem chunk_smem(ChunkKind kind, const ChunkDims& m, bool has_c) {
  ChunkSmem L;
  int64_t off = 0;
  auto take = [&off](int64_t& slot, int64_t bytes) {
    slot = off;
    off = (off + bytes + 127) / 128 * 128;
  };
  const int64_t BT = m.BT, Dp = m.Dp, Vw = m.Vw, BK = m.BK, BV = m.BV, e = m.esz;
  auto act = [&](int64_t rows, int64_t cols) { return rows * (cols + m.hp) * e; };
  auto flt = [&](int64_t rows, int64_t cols) { return rows * (cols + m.fp) * 4; };
  switch (kind) {
    case ChunkKind::kHLA2State:
      take(L.q, act(BT, Dp)); take(L.k, act(BT, Dp)); take(L.kd, act(BT, Dp));
      take(L.v, act(BT, BV));
      take(L.p, flt(BT, BT)); take(L.w, act(BT, BT));
      take(L.x, flt(Dp, BV)); take(L.z, flt(BT, BV)); take(L.zt, act(BT, BV));
      take(L.S, flt(BK, Dp)); take(L.M, flt(BK, BV));
      if (has_c) take(L.C, flt(BK, BV));
      break;
    case ChunkKind::kHLA2Out:
      take(L.q, act(BT, Dp)); take(L.k, act(BT, Dp)); take(L.v, act(BT, Vw));
      take(L.p, flt(BT, BT)); take(L.w, act(BT, BT)); take(L.wg, act(BT, BT));
      if (e == 2) { take(L.wlo, act(BT, BT)); take(L.wglo, act(BT, BT)); }
      take(L.st, flt(Dp, Dp > Vw ? Dp : Vw)); take(L.g, flt(BT, Dp)); take(L.o, flt(BT, Vw));
      break;
    case ChunkKind::kAHLAState:
      take(L.q, act(BT, Dp)); take(L.k, act(BT, Dp)); take(L.kd, act(BT, Dp));
      take(L.v, act(BT, BV));
      take(L.p, flt(BT, BT)); take(L.wg, act(BT, BT));
      take(L.r, flt(BT, BV)); take(L.rt, act(BT, BV));
      take(L.P, flt(Dp, BV)); take(L.E, flt(Dp, BV));
      break;
    case ChunkKind::kAHLAOut:
      take(L.q, act(BT, Dp)); take(L.k, act(BT, Dp)); take(L.v, act(BT, Vw));
      take(L.p, flt(BT, BT)); take(L.wg, act(BT, BT));
      if (e == 2) { take(L.wglo, act(BT, BT)); take(L.rtlo, act(BT, Vw)); }
      take(L.st, flt(Dp, Vw)); take(L.r, flt(BT, Vw)); take(L.rt, act(BT, Vw)); take(L.o, flt(BT, Vw));
      break;
  }
  take(L.dec, 2 * BT * 4);  // per-row decay factors
  L.bytes = off;
  return L;
}

// What the chunked prefill needs for these Params (host side).
struct ChunkPlan {
  bool ok = false;           // chunked path applies (else forward_cuda runs the token-serial kernel)
  ChunkDims dims;            // output kernel (activation-type tiles)
  ChunkDims dims_state;      // state kernel: float32 tiles whatever the activation type
  int32_t dvx = 0, NT = 0;   // value columns incl. the normaliser, number of chunks
  int32_t nK = 0, nV = 0;    // state-kernel blocks per head: row blocks of S (hla2), value blocks
  int64_t smem_state = 0, smem_out = 0;  // dynamic shared memory bytes of the two kernels
  size_t workspace = 0;      // bytes (0 when !ok)
};

inline int32_t activation_bytes(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }

// Chunked when T > 1, variant hla2 or ahla (hla3 stays token-serial: plugins/common/README.md),
// d, dv <= 256 and both kernels fit kChunkSmemLimit. Whether it applies does not depend on B or T
// (beyond T > 1), and the workspace grows with both, so the size for a TensorRT profile's largest
// shapes covers every smaller shape. Device-independent; forward_cuda also needs a device whose
// opt-in limit reaches the plan's shared memory, and a non-null workspace.
inline ChunkPlan chunk_plan(const Params& p, DType dtype) {
  ChunkPlan c;
  if (p.T <= 1 || p.B < 1 || p.H < 1 || p.d < 1 || p.dv < 1) return c;
  if (p.variant != Variant::kHLA2 && p.variant != Variant::kAHLA) return c;
  if (p.d > 256 || p.dv > 256) return c;
  const StateLayout L = state_layout(p.variant, p.d, p.dv, p.normalize, p.ridge);
  if (L.N <= 0) return c;
  c.dvx = p.dv + (p.normalize ? 1 : 0);
  const bool hla2 = p.variant == Variant::kHLA2;
  const bool has_c = hla2 && L.C >= 0;
  // The longest chunk (64, else 32, else 16 tokens) whose tiles fit kChunkSmemLimit.
  for (int32_t bt = kChunkTokens; bt >= 16; bt /= 2) {
    c.dims = chunk_dims(p.d, c.dvx, activation_bytes(dtype));
    c.dims_state = chunk_dims(p.d, c.dvx, 4);
    c.dims.BT = c.dims_state.BT = bt;
    c.smem_state = chunk_smem(hla2 ? ChunkKind::kHLA2State : ChunkKind::kAHLAState, c.dims_state, has_c).bytes;
    c.smem_out = chunk_smem(hla2 ? ChunkKind::kHLA2Out : ChunkKind::kAHLAOut, c.dims, has_c).bytes;
    if (size_t(c.smem_state) <= kChunkSmemLimit && size_t(c.smem_out) <= kChunkSmemLimit) break;
  }
  if (size_t(c.smem_state) > kChunkSmemLimit || size_t(c.smem_out) > kChunkSmemLimit) return c;
  // ahla's fp16 output kernel keeps one scale per value column in the [BT, BT + fp] float tile P
  // (always true for d, dv <= 256: BT >= 16 gives 320 floats >= Vw <= 272).
  if (!hla2 && int64_t(c.dims.BT) * (c.dims.BT + c.dims.fp) < c.dims.Vw) return c;
  c.NT = (p.T + c.dims.BT - 1) / c.dims.BT;
  c.nK = hla2 ? c.dims.Dp / c.dims.BK : 1;
  c.nV = (c.dvx + c.dims.BV - 1) / c.dims.BV;
  c.workspace = size_t(p.B) * size_t(p.H) * size_t(c.NT + 1) * size_t(L.N) * sizeof(float);
  c.ok = true;
  return c;
}

}  // namespace hla
