// CPU forward of HLARecurrentStep (docs/OP_CONTRACT.md, "Semantics: the recurrent step").
//
// One (batch row, head) pair at a time, token by token. Every variant is a short sequence of two
// primitives over the parts of the per-head state, each reading and writing every state element
// exactly once (decode streams the state once):
//
//   mat_pass:  X <- a X + r c^T          (X: [R, C] row-major, r: [R], c: [C])
//              out += X^T w               (out: [C], w: [R]; uses the updated X, same pass)
//   vec_pass:  x <- a x + s r            (x, r: [R]); returns w . x (updated x)
//
//   hla2:  S <- g S + k k^T,   u  = S^T q (= S q, S symmetric)
//          M <- g^2 M + u v^T, num = M^T q
//          C <- g C + q v^T,   num += ridge * C^T q            (ridge != 0)
//          n <- g^2 n + u,     den = q.n (+ ridge * q.m) + eps (normalize; m <- g m + q)
//   ahla:  P <- g P + k v^T,   w  = P^T q
//          E <- g E + k w^T,   num = E^T q
//          mK <- g mK + k, s = q.mK;  n <- g n + s k,  den = q.n + eps  (normalize)
//   hla3:  S <- S + k k^T, u = S^T q;  P <- P + k v^T, w = P^T q;  F <- F + u w^T, num = F^T q
//          mK <- mK + k, s = q.mK;  n <- n + s u,  den = q.n + eps  (normalize)
//
// Prefill (T > 1) runs the same token loop with the head's state hot in L1/L2 (for d = dv = 64
// an hla2 state is 32 KB). The chunk form of HLA_MATH.md has MORE multiply-adds per token
// (~3d^2 + 3d*dv + C*(3d + 2dv) vs 2d^2 + 2d*dv here); it pays on tensor cores, not on a CPU
// without a tuned GEMM. benchmarks/bench_native_decode.py reports the prefill GFLOP/s.
//
// Inner loops run over contiguous columns (d or dv) and are vectorised by the compiler (-O3).
// On x86-64 Linux with GCC/Clang the per-range kernel is compiled three times (x86-64-v4 / v3 /
// baseline) and picked at load time (target_clones), so the default build stays portable.
#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <cstring>
#include <functional>
#include <limits>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "hla_dtype.h"
#include "hla_kernels.h"
#include "hla_layout.h"

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && defined(__has_attribute)
#if __has_attribute(target_clones) && !defined(HLA_NO_MULTIVERSION)
#define HLA_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
#endif
#ifndef HLA_MULTIVERSION
#define HLA_MULTIVERSION
#endif

#if defined(__GNUC__)
#define HLA_INLINE inline __attribute__((always_inline))
#else
#define HLA_INLINE inline
#endif

namespace hla {
namespace {

// X <- a X + r c^T (X [R, C]); out[j] += sum_i w[i] X[i, j]. IP: in place (src unused).
template <bool IP>
HLA_INLINE void mat_pass(const float* __restrict src, float* __restrict dst, int R, int C, float a,
                         const float* __restrict r, const float* __restrict c,
                         const float* __restrict w, float* __restrict out) {
  for (int i = 0; i < R; ++i) {
    const float ri = r[i], wi = w[i];
    float* __restrict xd = dst + int64_t(i) * C;
    const float* __restrict xs = IP ? xd : src + int64_t(i) * C;
    for (int j = 0; j < C; ++j) {
      const float y = a * xs[j] + ri * c[j];
      xd[j] = y;
      out[j] += wi * y;
    }
  }
}

// x <- a x + s r (x [R]); returns w . x.
template <bool IP>
HLA_INLINE float vec_pass(const float* __restrict src, float* __restrict dst, int R, float a,
                          const float* __restrict r, float s, const float* __restrict w) {
  float acc = 0.0f;
  const float* __restrict xs = IP ? dst : src;
  for (int i = 0; i < R; ++i) {
    const float y = a * xs[i] + s * r[i];
    dst[i] = y;
    acc += w[i] * y;
  }
  return acc;
}

// Part `off` of a source state; IP (in-place) steps pass src == nullptr and never read it.
HLA_INLINE const float* at(const float* src, int64_t off) { return src ? src + off : nullptr; }

struct Scratch {
  float* q;    // [d]
  float* k;    // [d]
  float* v;    // [dv]
  float* u;    // [d]
  float* w;    // [dv]
  float* num;  // [dv]
  float* o;    // [dv]
};

// One recurrent step of one head: src -> dst (may be equal when IP), output into out[dv].
// One recurrent step of one head: src -> dst, or in place on dst when IP (src == nullptr).
// Writes the head's output row (float32) to out[dv].
template <bool IP>
HLA_INLINE void head_step(const Params& p, const StateLayout& L, float g, const float* __restrict src,
                          float* __restrict dst, const float* __restrict q,
                          const float* __restrict k, const float* __restrict v, Scratch& s,
                          float* __restrict out) {
  const int d = p.d, dv = p.dv;
  float* __restrict u = s.u;
  float* __restrict w = s.w;
  float* __restrict num = s.num;
  std::memset(num, 0, sizeof(float) * dv);
  float den = p.eps;
  switch (p.variant) {
    case Variant::kHLA2: {
      std::memset(u, 0, sizeof(float) * d);
      mat_pass<IP>(at(src, L.S), dst + L.S, d, d, g, k, k, q, u);
      mat_pass<IP>(at(src, L.M), dst + L.M, d, dv, g * g, u, v, q, num);
      if (L.C >= 0) {
        std::memset(w, 0, sizeof(float) * dv);
        mat_pass<IP>(at(src, L.C), dst + L.C, d, dv, g, q, v, q, w);
        for (int j = 0; j < dv; ++j) num[j] += p.ridge * w[j];
      }
      if (p.normalize) {
        den += vec_pass<IP>(at(src, L.n), dst + L.n, d, g * g, u, 1.0f, q);
        if (L.m >= 0) den += p.ridge * vec_pass<IP>(at(src, L.m), dst + L.m, d, g, q, 1.0f, q);
      }
      break;
    }
    case Variant::kAHLA: {
      std::memset(w, 0, sizeof(float) * dv);
      mat_pass<IP>(at(src, L.P), dst + L.P, d, dv, g, k, v, q, w);
      mat_pass<IP>(at(src, L.E), dst + L.E, d, dv, g, k, w, q, num);
      if (p.normalize) {
        const float sk = vec_pass<IP>(at(src, L.mK), dst + L.mK, d, g, k, 1.0f, q);
        den += vec_pass<IP>(at(src, L.n), dst + L.n, d, g, k, sk, q);
      }
      break;
    }
    case Variant::kHLA3: {
      std::memset(u, 0, sizeof(float) * d);
      std::memset(w, 0, sizeof(float) * dv);
      mat_pass<IP>(at(src, L.S), dst + L.S, d, d, g, k, k, q, u);
      mat_pass<IP>(at(src, L.P), dst + L.P, d, dv, g, k, v, q, w);
      mat_pass<IP>(at(src, L.F), dst + L.F, d, dv, g, u, w, q, num);
      if (p.normalize) {
        const float sk = vec_pass<IP>(at(src, L.mK), dst + L.mK, d, g, k, 1.0f, q);
        den += vec_pass<IP>(at(src, L.n), dst + L.n, d, g, u, sk, q);
      }
      break;
    }
  }
  if (p.normalize) {
    const float inv = 1.0f / den;
    for (int j = 0; j < dv; ++j) out[j] = num[j] * inv;
  } else {
    std::memcpy(out, num, sizeof(float) * dv);
  }
}

// Activation element access by dtype.
HLA_INLINE void load_row(DType dt, const void* base, int64_t off, int n, float* __restrict dst) {
  switch (dt) {
    case DType::kFloat32:
      std::memcpy(dst, static_cast<const float*>(base) + off, sizeof(float) * n);
      break;
    case DType::kFloat16: {
      const uint16_t* s = static_cast<const uint16_t*>(base) + off;
      for (int i = 0; i < n; ++i) dst[i] = detail::half_to_float(s[i]);
      break;
    }
    case DType::kBFloat16: {
      const uint16_t* s = static_cast<const uint16_t*>(base) + off;
      for (int i = 0; i < n; ++i) dst[i] = detail::bf16_to_float(s[i]);
      break;
    }
  }
}

HLA_INLINE void store_row(DType dt, void* base, int64_t off, int n, const float* __restrict src) {
  switch (dt) {
    case DType::kFloat32:
      std::memcpy(static_cast<float*>(base) + off, src, sizeof(float) * n);
      break;
    case DType::kFloat16: {
      uint16_t* d = static_cast<uint16_t*>(base) + off;
      for (int i = 0; i < n; ++i) d[i] = detail::float_to_half(src[i]);
      break;
    }
    case DType::kBFloat16: {
      uint16_t* d = static_cast<uint16_t*>(base) + off;
      for (int i = 0; i < n; ++i) d[i] = detail::float_to_bf16(src[i]);
      break;
    }
  }
}

struct Job {
  const Params* p;
  StateLayout L;
  DType dtype;
  const void *q, *k, *v;
  const float* state_in;
  void* o;
  float* state_out;
};

// Runs the (batch, head) pairs [lo, hi): all T tokens of each pair.
HLA_MULTIVERSION void run_pairs(const Job& job, int64_t lo, int64_t hi) {
  const Params& p = *job.p;
  const int d = p.d, dv = p.dv, T = p.T, H = p.H;
  std::vector<float> buf(size_t(3) * d + size_t(4) * dv);
  Scratch s;
  s.q = buf.data();
  s.k = s.q + d;
  s.u = s.k + d;
  s.v = s.u + d;
  s.w = s.v + dv;
  s.num = s.w + dv;
  s.o = s.num + dv;
  for (int64_t bh = lo; bh < hi; ++bh) {
    const int64_t b = bh / H;
    const int h = int(bh % H);
    const float g = head_decay(p, h);
    const float* src = job.state_in + bh * job.L.N;
    float* dst = job.state_out + bh * job.L.N;
    for (int t = 0; t < T; ++t) {
      const int64_t row = (b * T + t) * H + h;  // index into [B, T, H]
      load_row(job.dtype, job.q, row * d, d, s.q);
      load_row(job.dtype, job.k, row * d, d, s.k);
      load_row(job.dtype, job.v, row * dv, dv, s.v);
      // The first token reads state_in; later tokens continue on state_out.
      if (t == 0 && src != dst) {
        head_step<false>(p, job.L, g, src, dst, s.q, s.k, s.v, s, s.o);
      } else {
        head_step<true>(p, job.L, g, nullptr, dst, s.q, s.k, s.v, s, s.o);
      }
      store_row(job.dtype, job.o, row * dv, dv, s.o);
    }
  }
}

// A small persistent worker pool: forward_cpu runs once per layer per decoded token, so spawning
// threads per call (tens of microseconds each) would cost as much as the step itself.
// One parallel region at a time; a concurrent caller (or a forked child) runs serially instead.
class Pool {
 public:
  static Pool& instance() {
    static Pool pool;
    return pool;
  }

  // Runs f(0) .. f(parts - 1) on threads - 1 workers plus the calling thread; parts are handed out
  // one at a time, so a thread that is descheduled (shared machine) holds up only its current part.
  void run(int64_t parts, int64_t threads, const std::function<void(int64_t)>& f) {
    std::unique_lock<std::mutex> region(region_mu_, std::try_to_lock);
    if (!region.owns_lock() || !same_process()) {
      for (int64_t i = 0; i < parts; ++i) f(i);
      return;
    }
    try {
      const uint64_t current = generation_;  // only written by the region holder (this thread)
      while (int64_t(workers_.size()) < std::min<int64_t>(threads - 1, kMaxWorkers))
        workers_.emplace_back([this, current] { loop(current); });
    } catch (...) {  // could not start a thread: use the ones we have
    }
    std::unique_lock<std::mutex> lk(mu_);
    task_ = &f;
    parts_ = parts;
    next_ = 0;
    remaining_ = parts;
    ++generation_;
    cv_.notify_all();
    drain(lk);
    done_cv_.wait(lk, [this] { return remaining_ == 0; });
    task_ = nullptr;
  }

  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_)
      if (t.joinable()) t.join();
  }

 private:
  static constexpr int64_t kMaxWorkers = 255;

  Pool() : pid_(current_pid()) {}

  static long current_pid() {
#if defined(__unix__) || defined(__APPLE__)
    return long(::getpid());
#else
    return 0;
#endif
  }
  bool same_process() const { return current_pid() == pid_; }

  // Takes parts until none is left; called with lk held, returns with lk held.
  void drain(std::unique_lock<std::mutex>& lk) {
    while (next_ < parts_) {
      const int64_t i = next_++;
      const std::function<void(int64_t)>* f = task_;
      lk.unlock();
      (*f)(i);
      lk.lock();
      if (--remaining_ == 0) done_cv_.notify_all();
    }
  }

  void loop(uint64_t seen) {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      drain(lk);
    }
  }

  std::mutex region_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t parts_ = 0, next_ = 0, remaining_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  long pid_;
};

}  // namespace

void forward_cpu(const Params& p, DType dtype, const void* q, const void* k, const void* v,
                 const float* state_in, void* o, float* state_out, int num_threads) {
  Job job;
  job.p = &p;
  job.L = state_layout(p.variant, p.d, p.dv, p.normalize, p.ridge);
  job.dtype = dtype;
  job.q = q;
  job.k = k;
  job.v = v;
  job.state_in = state_in;
  job.o = o;
  job.state_out = state_out;

  const int64_t pairs = int64_t(p.B) * p.H;
  int64_t nt = num_threads > 0 ? num_threads : int64_t(std::thread::hardware_concurrency());
  // Below ~64K state-element updates a thread costs more than it saves. pairs * T fits (validate
  // bounds B*T*H); the product with N saturates instead of overflowing.
  const int64_t rows = pairs * p.T;
  const int64_t work = rows > std::numeric_limits<int64_t>::max() / job.L.N ? std::numeric_limits<int64_t>::max()
                                                                          : rows * job.L.N;
  nt = std::max<int64_t>(1, std::min<int64_t>({nt, pairs, work / 65536}));
  if (nt == 1) {
    run_pairs(job, 0, pairs);
    return;
  }
  const int64_t parts = std::min<int64_t>(pairs, 4 * nt);
  const std::function<void(int64_t)> part = [&job, pairs, parts](int64_t i) {
    run_pairs(job, pairs * i / parts, pairs * (i + 1) / parts);
  };
  Pool::instance().run(parts, nt, part);
}

}  // namespace hla
