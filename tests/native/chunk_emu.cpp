// CPU emulation of the chunked CUDA prefill kernels (plugins/common/hla_cuda_chunk.cuh), float32
// instantiation only: every block runs on one host thread with blockDim.x == 1 (each block-wide
// loop then covers all its indices and __syncthreads() is a no-op), blocks in launch order
// (state kernel, then output kernel, as on one stream). It checks the kernels' indexing, tile
// layouts, decay factors, partial chunks, workspace layout and state hand-off against the
// float64 reference (tests/test_chunk_emulation.py); NOT the tensor-core path, not races.
// Shared memory and the workspace start as NaN bytes, so a read of anything unwritten shows up.
//
// Usage: chunk_emu variant B T H d dv normalize eps ridge num_decay [decay...] in.bin out.bin
//   in.bin:  float32 q [B,T,H,d], k, v [B,T,H,dv], state [B,H,N];  out.bin: o, state_out.
//   The state is updated in place (state_in == state_out), as the op allows.
// Exit code 0; 2 when the chunked path does not apply (chunk_plan().ok false); 1 on bad usage.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <vector>

#include "hla_chunk_plan.h"
#include "hla_cuda_params.h"

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)

namespace nvcuda {  // declarations only: mm_act's tensor-core branch is never instantiated here
namespace wmma {
struct row_major {}; struct col_major {}; struct accumulator {}; struct matrix_a {}; struct matrix_b {};
enum layout_t { mem_row_major, mem_col_major };
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment { static const int num_elements = 1; T x[1]; };
template <typename F, typename V> void fill_fragment(F&, V) { std::abort(); }
template <typename F, typename P> void load_matrix_sync(F&, const P*, unsigned) { std::abort(); }
template <typename F, typename P> void load_matrix_sync(F&, const P*, unsigned, layout_t) { std::abort(); }
template <typename P, typename F> void store_matrix_sync(P*, const F&, unsigned, layout_t) { std::abort(); }
template <typename D, typename A, typename B, typename C> void mma_sync(D&, const A&, const B&, const C&) { std::abort(); }
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
template <typename T> T from_f32(float x);
template <> inline float from_f32<float>(float x) { return x; }
template <bool C, typename A, typename B> struct Select { using type = A; };
template <typename A, typename B> struct Select<false, A, B> { using type = B; };
#define HLA_DYNAMIC_SMEM(name) unsigned char* name = g_smem

#include "hla_cuda_chunk.cuh"

}  // namespace
}  // namespace hla

int main(int argc, char** argv) {
  if (argc < 12) {
    std::fprintf(stderr, "usage: chunk_emu variant B T H d dv normalize eps ridge num_decay [decay...] in out\n");
    return 1;
  }
  using namespace hla;
  Params p;
  p.variant = Variant(std::atoi(argv[1]));
  p.B = std::atoi(argv[2]); p.T = std::atoi(argv[3]); p.H = std::atoi(argv[4]);
  p.d = std::atoi(argv[5]); p.dv = std::atoi(argv[6]);
  p.normalize = std::atoi(argv[7]) != 0;
  p.eps = float(std::atof(argv[8])); p.ridge = float(std::atof(argv[9]));
  const int nd = std::atoi(argv[10]);
  if (argc != 13 + nd) { std::fprintf(stderr, "chunk_emu: expected %d decay values\n", nd); return 1; }
  std::vector<float> decay(size_t(nd > 0 ? nd : 1));
  for (int i = 0; i < nd; ++i) decay[size_t(i)] = float(std::atof(argv[11 + i]));
  p.decay = nd > 0 ? decay.data() : nullptr;
  p.num_decay = nd;
  if (validate(p) != nullptr) { std::fprintf(stderr, "chunk_emu: %s\n", validate(p)); return 1; }
  const ChunkPlan plan = chunk_plan(p, DType::kFloat32);
  if (!plan.ok) return 2;
  const int64_t N = state_size(p.variant, p.d, p.dv, p.normalize, p.ridge);
  const size_t nq = size_t(p.B) * p.T * p.H * p.d, nv = size_t(p.B) * p.T * p.H * p.dv;
  const size_t ns = size_t(p.B) * p.H * size_t(N);
  std::vector<float> q(nq), k(nq), v(nv), state(ns), o(nv, NAN);
  FILE* f = std::fopen(argv[11 + nd], "rb");
  if (!f) return 1;
  bool ok = std::fread(q.data(), 4, nq, f) == nq && std::fread(k.data(), 4, nq, f) == nq &&
            std::fread(v.data(), 4, nv, f) == nv && std::fread(state.data(), 4, ns, f) == ns;
  std::fclose(f);
  if (!ok) { std::fprintf(stderr, "chunk_emu: short input file\n"); return 1; }

  ChunkKParams ck{};
  ck.k = make_kparams(p);
  ck.m = plan.dims;
  ck.dvx = plan.dvx;
  ck.NT = plan.NT;
  std::vector<float> ws(plan.workspace / sizeof(float));
  std::memset(ws.data(), 0xff, plan.workspace);  // NaN everywhere
  const bool hla2 = p.variant == Variant::kHLA2;
  const unsigned BH = unsigned(p.B * p.H);
  blockDim.x = 1;
  threadIdx.x = 0;
  {
    std::vector<unsigned char> smem(size_t(plan.smem_state));  // exactly the launch's bytes
    g_smem = smem.data();
    for (unsigned z = 0; z < unsigned(plan.nV); ++z)
      for (unsigned y = 0; y < unsigned(plan.nK); ++y)
        for (unsigned x = 0; x < BH; ++x) {
          std::memset(smem.data(), 0xff, smem.size());
          blockIdx.x = x; blockIdx.y = y; blockIdx.z = z;
          if (hla2) hla2_chunk_state_kernel<float>(ck, q.data(), k.data(), v.data(), state.data(), ws.data());
          else ahla_chunk_state_kernel<float>(ck, q.data(), k.data(), v.data(), state.data(), ws.data());
        }
  }
  {
    std::vector<unsigned char> smem(size_t(plan.smem_out));
    g_smem = smem.data();
    // grid-stride over the chunks: gridDim.y = 2 makes each block loop when NT > 2
    gridDim.y = plan.NT < 2 ? unsigned(plan.NT) : 2u;
    for (unsigned y = 0; y < gridDim.y; ++y)
      for (unsigned x = 0; x < BH; ++x) {
        std::memset(smem.data(), 0xff, smem.size());
        blockIdx.x = x; blockIdx.y = y; blockIdx.z = 0;
        if (hla2) hla2_chunk_out_kernel<float>(ck, q.data(), k.data(), v.data(), ws.data(), o.data(), state.data());
        else ahla_chunk_out_kernel<float>(ck, q.data(), k.data(), v.data(), ws.data(), o.data(), state.data());
      }
  }
  f = std::fopen(argv[12 + nd], "wb");
  if (!f) return 1;
  ok = std::fwrite(o.data(), 4, nv, f) == nv && std::fwrite(state.data(), 4, ns, f) == ns;
  std::fclose(f);
  return ok ? 0 : 1;
}
