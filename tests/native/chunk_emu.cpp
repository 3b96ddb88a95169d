// CPU emulation of the chunked CUDA prefill kernels (plugins/common/hla_cuda_chunk.cuh), all three
// activation types: every block runs on one host thread with blockDim.x == 1 (each block-wide
// loop then covers all its indices and __syncthreads() is a no-op), blocks in launch order
// (state kernel, then output kernel, as on one stream). WMMA calls are emulated per 16x16 tile
// (below), checking WMMA's alignment and stride rules; fp16 / bf16 are bit-exact host types.
// It checks the kernels' indexing, tile layouts, fragment layouts, split-operand precision,
// decay factors, partial chunks, workspace layout and state hand-off against the float64
// reference (tests/test_chunk_emulation.py); NOT thread races or the hardware's MMA rounding.
// Shared memory and the workspace start as NaN bytes, so a read of anything unwritten shows up.
//
// Usage: chunk_emu variant B T H d dv normalize eps ridge dtype num_decay [decay...] in.bin out.bin
//   dtype: 0 float32, 1 float16, 2 bfloat16 (q, k, v are rounded to it here).
//   in.bin:  float32 q [B,T,H,d], k, v [B,T,H,dv], state [B,H,N];  out.bin: o, state_out.
//   The state is updated in place (state_in == state_out), as the op allows.
// Exit code 0; 2 when the chunked path does not apply (chunk_plan().ok false); 1 on bad usage.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <type_traits>
#include <vector>

#include "hla_dtype.h"

#include "hla_chunk_plan.h"
#include "hla_cuda_params.h"

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)

// Host stand-ins for CUDA's 16-bit types (bits only; conversions round to nearest even like
// __float2half_rn / __float2bfloat16_rn, via hla_dtype.h).
struct __half { uint16_t bits; };
struct __nv_bfloat16 { uint16_t bits; };
inline float emu_f32(float x) { return x; }
inline float emu_f32(__half x) { return hla::detail::half_to_float(x.bits); }
inline float emu_f32(__nv_bfloat16 x) { return hla::detail::bf16_to_float(x.bits); }
extern unsigned char* g_emu_smem_base;

// WMMA on the CPU: one call does the whole warp's 16x16 tile (fragment x[] = the logical tile,
// row-major). Loads check WMMA's rules: 32-byte aligned pointers (relative to the 128-byte
// aligned dynamic shared memory) and ldm a multiple of 16 bytes.
namespace nvcuda {
namespace wmma {
struct row_major {}; struct col_major {}; struct accumulator {}; struct matrix_a {}; struct matrix_b {};
enum layout_t { mem_row_major, mem_col_major };
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment { static const int num_elements = 256; float x[256]; };

template <typename P> void check_ptr(const P* p, unsigned ldm) {
  const long off = long(reinterpret_cast<const unsigned char*>(p) - g_emu_smem_base);
  if (off % 32 != 0 || (ldm * sizeof(P)) % 16 != 0) {
    std::fprintf(stderr, "WMMA rule broken: smem offset %ld, ldm %u x %zu bytes\n", off, ldm, sizeof(P));
    std::abort();
  }
}
template <typename Use, typename T, typename L>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
  check_ptr(p, ldm);
  constexpr bool col = std::is_same<L, col_major>::value;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = emu_f32(col ? p[r + size_t(c) * ldm] : p[size_t(r) * ldm + c]);
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t) {
  check_ptr(p, ldm);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = p[size_t(r) * ldm + c];
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t) {
  check_ptr(p, ldm);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) p[size_t(r) * ldm + c] = f.x[r * 16 + c];
}
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) {
  for (float& x : f.x) x = v;
}
template <typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[256];
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 16; ++n) {
      float s = c.x[r * 16 + n];
      for (int k = 0; k < 16; ++k) s += a.x[r * 16 + k] * b.x[k * 16 + n];  // exact 16-bit products
      out[r * 16 + n] = s;
    }
  for (int i = 0; i < 256; ++i) d.x[i] = out[i];
}
}  // namespace wmma
}  // namespace nvcuda

namespace hla {
namespace {

struct Dim3 { unsigned x = 0, y = 0, z = 0; };
Dim3 threadIdx, blockIdx, blockDim, gridDim;
unsigned char* g_smem = nullptr;
inline void __syncthreads() {}
using std::min;
inline float to_f32(float x) { return x; }
inline float to_f32(__half x) { return emu_f32(x); }
inline float to_f32(__nv_bfloat16 x) { return emu_f32(x); }
template <typename T> T from_f32(float x);
template <> inline float from_f32<float>(float x) { return x; }
template <> inline __half from_f32<__half>(float x) { return __half{detail::float_to_half(x)}; }
template <> inline __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __nv_bfloat16{detail::float_to_bf16(x)}; }
template <bool C, typename A, typename B> struct Select { using type = A; };
template <typename A, typename B> struct Select<false, A, B> { using type = B; };
#define HLA_DYNAMIC_SMEM(name) unsigned char* name = g_smem

#include "hla_cuda_chunk.cuh"

}  // namespace
}  // namespace hla

unsigned char* g_emu_smem_base = nullptr;

namespace {

// Runs the two kernels of the plan for activation type T; q, k, v rounded to T here, o back to float.
template <typename T>
void run(const hla::Params& p, const hla::ChunkPlan& plan, const std::vector<float>& q32,
         const std::vector<float>& k32, const std::vector<float>& v32, std::vector<float>& state,
         std::vector<float>& o32) {
  using namespace hla;
  auto to_t = [](const std::vector<float>& x) {
    std::vector<T> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = from_f32<T>(x[i]);
    return y;
  };
  const std::vector<T> q = to_t(q32), k = to_t(k32), v = to_t(v32);
  std::vector<T> o(o32.size(), from_f32<T>(NAN));
  const ChunkKParams ck = make_chunk_kparams(p, plan);
  std::vector<float> ws(plan.workspace / sizeof(float));
  std::memset(ws.data(), 0xff, plan.workspace);  // NaN everywhere
  const bool hla2 = p.variant == Variant::kHLA2;
  const unsigned BH = unsigned(p.B * p.H);
  blockDim.x = 1;
  threadIdx.x = 0;
  {
    std::vector<unsigned char> smem(size_t(plan.smem_state));  // exactly the launch's bytes
    g_smem = g_emu_smem_base = smem.data();
    for (unsigned z = 0; z < unsigned(plan.nV); ++z)
      for (unsigned y = 0; y < unsigned(plan.nK); ++y)
        for (unsigned x = 0; x < BH; ++x) {
          std::memset(smem.data(), 0xff, smem.size());
          blockIdx.x = x; blockIdx.y = y; blockIdx.z = z;
          if (hla2) hla2_chunk_state_kernel<T>(ck, q.data(), k.data(), v.data(), state.data(), ws.data());
          else ahla_chunk_state_kernel<T>(ck, q.data(), k.data(), v.data(), state.data(), ws.data());
        }
  }
  {
    std::vector<unsigned char> smem(size_t(plan.smem_out));
    g_smem = g_emu_smem_base = smem.data();
    // grid-stride over the chunks: gridDim.y = 2 makes each block loop when NT > 2
    gridDim.y = plan.NT < 2 ? unsigned(plan.NT) : 2u;
    for (unsigned y = 0; y < gridDim.y; ++y)
      for (unsigned x = 0; x < BH; ++x) {
        std::memset(smem.data(), 0xff, smem.size());
        blockIdx.x = x; blockIdx.y = y; blockIdx.z = 0;
        if (hla2) hla2_chunk_out_kernel<T>(ck, q.data(), k.data(), v.data(), ws.data(), o.data(), state.data());
        else ahla_chunk_out_kernel<T>(ck, q.data(), k.data(), v.data(), ws.data(), o.data(), state.data());
      }
  }
  for (size_t i = 0; i < o.size(); ++i) o32[i] = to_f32(o[i]);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 13) {
    std::fprintf(stderr, "usage: chunk_emu variant B T H d dv normalize eps ridge dtype num_decay [decay...] in out\n");
    return 1;
  }
  using namespace hla;
  Params p;
  p.variant = Variant(std::atoi(argv[1]));
  p.B = std::atoi(argv[2]); p.T = std::atoi(argv[3]); p.H = std::atoi(argv[4]);
  p.d = std::atoi(argv[5]); p.dv = std::atoi(argv[6]);
  p.normalize = std::atoi(argv[7]) != 0;
  p.eps = float(std::atof(argv[8])); p.ridge = float(std::atof(argv[9]));
  const int dtype = std::atoi(argv[10]);
  const int nd = std::atoi(argv[11]);
  if (argc != 14 + nd || dtype < 0 || dtype > 2) { std::fprintf(stderr, "chunk_emu: bad arguments\n"); return 1; }
  std::vector<float> decay(size_t(nd > 0 ? nd : 1));
  for (int i = 0; i < nd; ++i) decay[size_t(i)] = float(std::atof(argv[12 + i]));
  p.decay = nd > 0 ? decay.data() : nullptr;
  p.num_decay = nd;
  if (validate(p) != nullptr) { std::fprintf(stderr, "chunk_emu: %s\n", validate(p)); return 1; }
  const ChunkPlan plan = chunk_plan(p, DType(dtype));
  if (!plan.ok) return 2;
  const int64_t N = state_size(p.variant, p.d, p.dv, p.normalize, p.ridge);
  const size_t nq = size_t(p.B) * p.T * p.H * p.d, nv = size_t(p.B) * p.T * p.H * p.dv;
  const size_t ns = size_t(p.B) * p.H * size_t(N);
  std::vector<float> q(nq), k(nq), v(nv), state(ns), o(nv, NAN);
  FILE* f = std::fopen(argv[12 + nd], "rb");
  if (!f) return 1;
  bool ok = std::fread(q.data(), 4, nq, f) == nq && std::fread(k.data(), 4, nq, f) == nq &&
            std::fread(v.data(), 4, nv, f) == nv && std::fread(state.data(), 4, ns, f) == ns;
  std::fclose(f);
  if (!ok) { std::fprintf(stderr, "chunk_emu: short input file\n"); return 1; }
  if (dtype == 0) run<float>(p, plan, q, k, v, state, o);
  else if (dtype == 1) run<__half>(p, plan, q, k, v, state, o);
  else run<__nv_bfloat16>(p, plan, q, k, v, state, o);
  f = std::fopen(argv[13 + nd], "wb");
  if (!f) return 1;
  ok = std::fwrite(o.data(), 4, nv, f) == nv && std::fwrite(state.data(), 4, ns, f) == ns;
  std::fclose(f);
  return ok ? 0 : 1;
}
