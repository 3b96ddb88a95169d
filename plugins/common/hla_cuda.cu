// CUDA forward of HLARecurrentStep (docs/OP_CONTRACT.md, "Semantics: the recurrent step").
//
// One thread block per (batch row, head), 256 threads; the block runs the T tokens of its head
// serially. Each token is the same short sequence of two primitives as the CPU kernel
// (hla_cpu.cpp, which lists the per-variant sequences):
//
//   mat_pass:  X <- a X + r c^T ; out += w_scale * X^T w     (X [R, C] row-major)
//   vec_pass:  x <- a x + s r   ; returns w . x
//
// mat_pass layout: a thread owns VEC (=4 when aligned: float4) consecutive columns of a group of
// rows (rows g, g + G, g + 2G, ...), so a warp reads whole contiguous rows (coalesced 16-byte
// loads) and several rows are loaded before the first use. The column sums X^T w are reduced over
// the G row groups through shared memory in a fixed order (deterministic). Every state element is
// read once and written once per token by the same thread, so state_in == state_out is safe.
//   S^T q is used for u = S q: S is symmetric by construction (contract: "S is symmetric").
//
// Decode (T == 1) streams the state from/to global memory once. Prefill (T > 1) copies the head's
// state into shared memory when it fits (d = dv = 64: hla2 32 KB, hla3 48 KB), runs the tokens
// there and writes it back once; otherwise it runs in global memory (L2-resident per token).
// Parallelism is B*H blocks. This token-serial kernel serves decode (T == 1), hla3 and the
// prefills the AOT Triton kernels do not cover; forward_cuda sends every other prefill (hla2 /
// ahla, T > 1, with a workspace) to the AOT launcher (hla_aot_launcher.h). Builds with CUDA 12.x
// and 13 (no 13-only APIs), sm_87/sm_90.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#ifndef __CUDACC_RTC__  // NVRTC (tests/test_cuda12_build.py) compiles the device code only
#include <cuda_runtime.h>

#include <atomic>
#include <mutex>
#include <string>

#include "hla_aot_launcher.h"
#include "hla_log.h"
#endif

#include <cstdint>

#include "hla_cuda_params.h"
#include "hla_kernels.h"
#include "hla_layout.h"

namespace hla {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // rows loaded ahead per thread in mat_pass

// KParams (hla_cuda_params.h): everything a block needs, passed by value (per-head decay included).

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

template <int VEC> __device__ __forceinline__ void load_vec(const float* p, float (&x)[VEC]);
template <> __device__ __forceinline__ void load_vec<1>(const float* p, float (&x)[1]) { x[0] = *p; }
template <> __device__ __forceinline__ void load_vec<4>(const float* p, float (&x)[4]) {
  const float4 t = *reinterpret_cast<const float4*>(p);
  x[0] = t.x; x[1] = t.y; x[2] = t.z; x[3] = t.w;
}
template <int VEC> __device__ __forceinline__ void store_vec(float* p, const float (&x)[VEC]);
template <> __device__ __forceinline__ void store_vec<1>(float* p, const float (&x)[1]) { *p = x[0]; }
template <> __device__ __forceinline__ void store_vec<4>(float* p, const float (&x)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
}

// Sum over the block; every thread gets the result. `red` holds >= 33 floats.
__device__ float block_sum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < int(blockDim.x >> 5) ? red[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) red[32] = s;
  }
  __syncthreads();
  const float r = red[32];
  __syncthreads();  // red may be reused right away
  return r;
}

// X <- a X + r c^T (X [R, C], C % VEC == 0); out[j] += w_scale * sum_i w[i] X[i, j].
// src may equal dst. r, c, w, out, part in shared memory; part holds VEC * blockDim floats.
template <int VEC>
__device__ void mat_pass(const float* src, float* dst, int R, int C, float a, const float* r,
                         const float* c, const float* w, float w_scale, float* out, float* part) {
  const int nt = blockDim.x, tid = threadIdx.x;
  const int max_w = VEC * nt;
  for (int cb = 0; cb < C; cb += max_w) {
    const int W = min(C - cb, max_w);
    const int cols = W / VEC;  // threads per row
    const int G = nt / cols;   // row groups
    const int g = tid / cols, cv = tid - g * cols;
    const int j0 = cb + cv * VEC;
    float acc[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[e] = 0.0f;
    if (g < G) {
      float cc[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) cc[e] = c[j0 + e];
      for (int i0 = g; i0 < R; i0 += G * kUnroll) {
        float x[kUnroll][VEC];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int i = i0 + u * G;
          if (i < R) load_vec<VEC>(src + int64_t(i) * C + j0, x[u]);
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int i = i0 + u * G;
          if (i < R) {
            const float ri = r[i], wi = w[i];
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
              const float y = fmaf(a, x[u][e], ri * cc[e]);
              x[u][e] = y;
              acc[e] = fmaf(wi, y, acc[e]);
            }
            store_vec<VEC>(dst + int64_t(i) * C + j0, x[u]);
          }
        }
      }
#pragma unroll
      for (int e = 0; e < VEC; ++e) part[g * W + cv * VEC + e] = acc[e];
    }
    __syncthreads();
    for (int j = tid; j < W; j += nt) {
      float s = 0.0f;
      for (int gg = 0; gg < G; ++gg) s += part[gg * W + j];
      out[cb + j] += w_scale * s;
    }
    __syncthreads();
  }
}

// x <- a x + s r (x [R]); returns w . x (block-wide).
__device__ float vec_pass(const float* src, float* dst, int R, float a, const float* r, float s,
                          const float* w, float* red) {
  float acc = 0.0f;
  for (int i = threadIdx.x; i < R; i += blockDim.x) {
    const float y = fmaf(a, src[i], s * r[i]);
    dst[i] = y;
    acc = fmaf(w[i], y, acc);
  }
  return block_sum(acc, red);
}

// Shared memory: [state N floats if kSmemState] q[d] k[d] u[d] v[dv] w[dv] num[dv] part red[64]
// (sizes: smem_floats below).
template <int VEC, typename TIn, bool kSmemState>
__global__ void __launch_bounds__(kThreads)
hla_forward_kernel(const KParams p, const TIn* __restrict__ q, const TIn* __restrict__ k,
                   const TIn* __restrict__ v, const float* state_in, TIn* __restrict__ o,
                   float* state_out) {
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  const int d = p.d, dv = p.dv, H = p.H, T = p.T;
  const int64_t N = p.N;
  const int64_t bh = blockIdx.x;
  const int64_t b = bh / H;
  const int h = int(bh - b * H);
  const float g = p.num_decay == 0 ? 1.0f : (p.num_decay == 1 ? p.decay[0] : p.decay[h]);
  const int tid = threadIdx.x, nt = blockDim.x;

  float* sst = smem;
  float* sq = smem + (kSmemState ? (N + 3) / 4 * 4 : 0);
  float* sk = sq + d;
  float* su = sk + d;
  float* sv = su + d;
  float* sw = sv + dv;
  float* snum = sw + dv;
  float* part = snum + dv;
  float* red = part + VEC * kThreads;

  const float* gsrc = state_in + bh * N;
  float* gdst = state_out + bh * N;
  if (kSmemState) {
    for (int64_t i = tid; i < N / VEC; i += nt) {
      float x[VEC];
      load_vec<VEC>(gsrc + i * VEC, x);
      store_vec<VEC>(sst + i * VEC, x);
    }
    // (visibility: the first __syncthreads below orders these stores before any use)
  }

  for (int t = 0; t < T; ++t) {
    const float* src;
    float* dst;
    if (kSmemState) {
      src = sst;
      dst = sst;
    } else {
      src = t == 0 ? gsrc : gdst;
      dst = gdst;
    }
    const int64_t row = (b * T + t) * H + h;  // index into [B, T, H]
    for (int i = tid; i < d; i += nt) {
      sq[i] = to_f32(q[row * d + i]);
      sk[i] = to_f32(k[row * d + i]);
      su[i] = 0.0f;
    }
    for (int j = tid; j < dv; j += nt) {
      sv[j] = to_f32(v[row * dv + j]);
      sw[j] = 0.0f;
      snum[j] = 0.0f;
    }
    __syncthreads();

    float den = p.eps;
    if (p.variant == int(Variant::kHLA2)) {
      mat_pass<VEC>(src + p.offS, dst + p.offS, d, d, g, sk, sk, sq, 1.0f, su, part);
      mat_pass<VEC>(src + p.offM, dst + p.offM, d, dv, g * g, su, sv, sq, 1.0f, snum, part);
      if (p.offC >= 0)
        mat_pass<VEC>(src + p.offC, dst + p.offC, d, dv, g, sq, sv, sq, p.ridge, snum, part);
      if (p.normalize) {
        den += vec_pass(src + p.offn, dst + p.offn, d, g * g, su, 1.0f, sq, red);
        if (p.offm >= 0)
          den += p.ridge * vec_pass(src + p.offm, dst + p.offm, d, g, sq, 1.0f, sq, red);
      }
    } else if (p.variant == int(Variant::kAHLA)) {
      mat_pass<VEC>(src + p.offP, dst + p.offP, d, dv, g, sk, sv, sq, 1.0f, sw, part);
      mat_pass<VEC>(src + p.offE, dst + p.offE, d, dv, g, sk, sw, sq, 1.0f, snum, part);
      if (p.normalize) {
        const float s = vec_pass(src + p.offmK, dst + p.offmK, d, g, sk, 1.0f, sq, red);
        den += vec_pass(src + p.offn, dst + p.offn, d, g, sk, s, sq, red);
      }
    } else {  // hla3
      mat_pass<VEC>(src + p.offS, dst + p.offS, d, d, g, sk, sk, sq, 1.0f, su, part);
      mat_pass<VEC>(src + p.offP, dst + p.offP, d, dv, g, sk, sv, sq, 1.0f, sw, part);
      mat_pass<VEC>(src + p.offF, dst + p.offF, d, dv, g, su, sw, sq, 1.0f, snum, part);
      if (p.normalize) {
        const float s = vec_pass(src + p.offmK, dst + p.offmK, d, g, sk, 1.0f, sq, red);
        den += vec_pass(src + p.offn, dst + p.offn, d, g, su, s, sq, red);
      }
    }
    const float inv = p.normalize ? 1.0f / den : 1.0f;
    for (int j = tid; j < dv; j += nt) o[row * dv + j] = from_f32<TIn>(p.normalize ? snum[j] * inv : snum[j]);
    __syncthreads();  // q/k/v/u/w/num are rewritten by the next token
  }

  if (kSmemState) {
    for (int64_t i = tid; i < N / VEC; i += nt) {
      float x[VEC];
      load_vec<VEC>(sst + i * VEC, x);
      store_vec<VEC>(gdst + i * VEC, x);
    }
  }
}

// ---- host code: launch configuration and the public entry points (not seen by NVRTC) ----------
#ifndef __CUDACC_RTC__
// Floats of dynamic shared memory per block of hla_forward_kernel (layout above the kernel).
inline int64_t smem_floats(int d, int dv, int vec, int64_t state_floats) {
  const int64_t s = (state_floats + 3) / 4 * 4;
  return s + 3 * int64_t(d) + 3 * int64_t(dv) + int64_t(vec) * kThreads + 64;
}

// ---- per-device caches: no attribute query and no cudaFuncSetAttribute per call ---------------
constexpr int kMaxDevices = 64;

// cudaDevAttrMaxSharedMemoryPerBlockOptin of `dev`, queried once per device.
cudaError_t device_optin_smem(int dev, int* out) {
  static std::atomic<int> cache[kMaxDevices];  // 0: not queried yet
  if (dev >= 0 && dev < kMaxDevices) {
    const int c = cache[dev].load(std::memory_order_relaxed);
    if (c > 0) {
      *out = c;
      return cudaSuccess;
    }
  }
  int v = 0;
  const cudaError_t e = cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e != cudaSuccess) return e;
  if (dev >= 0 && dev < kMaxDevices) cache[dev].store(v, std::memory_order_relaxed);
  *out = v;
  return cudaSuccess;
}

// Raises `fn`'s dynamic shared-memory limit on `dev` to the device's opt-in maximum, once per
// (kernel, device); calls needing <= 48 KB do nothing.
cudaError_t allow_smem(const void* fn, int dev, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  struct Entry { const void* fn; int dev; };
  static std::mutex mu;
  static Entry done[256];
  static int count = 0;
  std::lock_guard<std::mutex> lock(mu);
  for (int i = 0; i < count; ++i)
    if (done[i].fn == fn && done[i].dev == dev) return cudaSuccess;
  int optin = 0;
  cudaError_t e = device_optin_smem(dev, &optin);
  if (e != cudaSuccess) return e;
  if (bytes > size_t(optin)) return cudaErrorInvalidValue;
  e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
  if (e != cudaSuccess) return e;
  if (count < 256) done[count++] = Entry{fn, dev};
  return cudaSuccess;
}

template <int VEC, typename TIn, bool kSmemState>
int launch(const KParams& kp, int64_t blocks, size_t smem, int dev, const void* q, const void* k,
           const void* v, const float* state_in, void* o, float* state_out, cudaStream_t stream) {
  auto kernel = hla_forward_kernel<VEC, TIn, kSmemState>;
  if (smem > 48 * 1024) {
    const cudaError_t e = allow_smem(reinterpret_cast<const void*>(kernel), dev, smem);
    if (e != cudaSuccess) return int(e);
  }
  kernel<<<dim3(unsigned(blocks)), dim3(kThreads), smem, stream>>>(
      kp, static_cast<const TIn*>(q), static_cast<const TIn*>(k), static_cast<const TIn*>(v),
      state_in, static_cast<TIn*>(o), state_out);
  return int(cudaGetLastError());
}

template <typename TIn>
int dispatch(const KParams& kp, int64_t blocks, int vec, bool smem_state, size_t smem, int dev,
             const void* q, const void* k, const void* v, const float* si, void* o, float* so,
             cudaStream_t st) {
  if (vec == 4) {
    return smem_state ? launch<4, TIn, true>(kp, blocks, smem, dev, q, k, v, si, o, so, st)
                      : launch<4, TIn, false>(kp, blocks, smem, dev, q, k, v, si, o, so, st);
  }
  return smem_state ? launch<1, TIn, true>(kp, blocks, smem, dev, q, k, v, si, o, so, st)
                    : launch<1, TIn, false>(kp, blocks, smem, dev, q, k, v, si, o, so, st);
}

// The token-serial kernel: decode (T == 1), hla3, no workspace, or no AOT kernels for this
// configuration. Returns 0 or a cudaError_t.
int forward_serial(const Params& p, DType dtype, const void* q, const void* k, const void* v,
                   const float* state_in, void* o, float* state_out, void* stream) {
  const int64_t blocks = int64_t(p.B) * p.H;
  if (p.num_decay > kMaxHeads && p.decay != nullptr) {
    return int(cudaErrorInvalidValue);  // per-head decay is passed by value: at most kMaxHeads heads
  }
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  int dev = 0;
  const KParams kp = make_kparams(p);
  const auto aligned = [](const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; };
  const int vec = (p.d % 4 == 0 && p.dv % 4 == 0 && aligned(state_in) && aligned(state_out)) ? 4 : 1;
  // Serial prefill keeps the head's state in shared memory when it fits the device's limit.
  bool smem_state = false;
  size_t smem = size_t(smem_floats(p.d, p.dv, vec, 0)) * sizeof(float);
  if (p.T > 1) {
    int optin = 48 * 1024;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = device_optin_smem(dev, &optin);
    if (e != cudaSuccess) return int(e);
    const size_t with_state = size_t(smem_floats(p.d, p.dv, vec, kp.N)) * sizeof(float);
    if (with_state <= size_t(optin)) {
      smem_state = true;
      smem = with_state;
    }
  }
  if (smem > 48 * 1024 && !smem_state) return int(cudaErrorInvalidValue);  // d, dv too large
  switch (dtype) {
    case DType::kFloat32:
      return dispatch<float>(kp, blocks, vec, smem_state, smem, dev, q, k, v, state_in, o, state_out, st);
    case DType::kFloat16:
      return dispatch<__half>(kp, blocks, vec, smem_state, smem, dev, q, k, v, state_in, o, state_out, st);
    case DType::kBFloat16:
      return dispatch<__nv_bfloat16>(kp, blocks, vec, smem_state, smem, dev, q, k, v, state_in, o,
                                     state_out, st);
  }
  return int(cudaErrorInvalidValue);
}

#endif  // __CUDACC_RTC__
}  // namespace

#ifndef __CUDACC_RTC__
size_t cuda_workspace_size(const Params& p, DType dtype) { return aot::workspace_bytes(p, dtype); }

bool cuda_prefill_aot(const Params& p, DType dtype) { return aot::available(p, dtype); }

int forward_cuda(const Params& p, DType dtype, const void* q, const void* k, const void* v,
                 const float* state_in, void* o, float* state_out, void* workspace,
                 void* stream) {
  set_last_error_message("");
  const int64_t blocks = int64_t(p.B) * p.H;
  if (blocks < 1 || blocks > 0x7fffffff) {
    set_last_error_message("B * H = " + std::to_string(blocks) + " is outside [1, 2^31 - 1]");
    return int(cudaErrorInvalidConfiguration);
  }
  if (p.T > 1) {  // prefill: the AOT Triton kernels when this configuration has them on this device
    aot::Tensors t;
    t.q = q; t.k = k; t.v = v; t.state_in = state_in; t.o = o; t.state_out = state_out;
    std::string msg;
    const aot::Status st = aot::prefill(p, dtype, t, workspace, stream, &msg);
    if (st == aot::Status::kLaunched) return 0;
    if (st == aot::Status::kError) {
      set_last_error_message(msg);
      return int(cudaErrorUnknown);
    }
  }
  if (p.num_decay > kMaxHeads && p.decay != nullptr) {
    set_last_error_message("per-head decay for " + std::to_string(p.num_decay) + " heads: the token-serial CUDA "
                           "kernel takes at most " + std::to_string(kMaxHeads) + " (one decay value: any H)");
    return int(cudaErrorInvalidValue);
  }
  const int rc = forward_serial(p, dtype, q, k, v, state_in, o, state_out, stream);
  if (rc != 0) {
    set_last_error_message(std::string("token-serial CUDA kernel: ") + cudaGetErrorName(cudaError_t(rc)) + " (" +
                           cudaGetErrorString(cudaError_t(rc)) + ")");
  }
  return rc;
}
#endif  // __CUDACC_RTC__

}  // namespace hla

