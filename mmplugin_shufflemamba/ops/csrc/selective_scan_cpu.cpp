// Selective scan (Mamba S6 recurrence) on the CPU: forward and backward.
//
// Channels are processed in blocks of 16, one SIMD lane per channel, so that the
// recurrence h[n] = exp(dt A[:, n]) h[n] + dt u B[n] runs across lanes with N
// independent dependency chains and no horizontal reductions; time goes in tiles of 64
// steps whose inputs are loaded into L1-resident lane tiles (register transposes for
// channel-major tensors, plain copies for token-major ones). The backward recomputes the
// states from per-tile checkpoints instead of storing (B, D, L, N) tensors, like the
// fused CUDA kernel; on request it also writes the forward's gated output from the
// states it recomputes (what a caller needs for the weight gradient of a layer after
// the scan), so that the forward need not run again. Blocks run in parallel on ATen's
// thread pool.
//
// Layouts: u, delta, z, dout and the (B, D, L) outputs: any strides (the outputs take
// u's layout); A: (D, N); Bt, Ct: (B, L, N) (time-major).
// reverse=true scans from the last time step to the first (Bt, Ct then come in reversed
// time order, dBt and dCt are returned in that order), i.e. the backward direction of
// the bidirectional mixer without flipped copies of u, delta and z.
//
// This file is compiled once per instruction-set level through isa/*.cpp (namespace
// SHUFFLEMAMBA_ISA); the arguments were checked by bindings.cpp.
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <type_traits>
#include <vector>

#include "cpu_layout.h"
#include "cpu_math.h"
#include "kernel_api.h"

namespace shufflemamba {
namespace SHUFFLEMAMBA_ISA {

// ---------------------------------------------------------------------------------
// Forward. Channels go in blocks of kLanes, one SIMD lane per channel, and time in
// tiles of kChunk steps. Per tile, the rows of delta, u (and z) are transposed into
// time-major lane tiles (kChunk, kLanes); softplus, dt * u, the recurrence, the skip
// connection and the gate all run across lanes; the result is transposed back into the
// rows of the output. The recurrence has N independent dependency chains per step and
// no horizontal reductions. Four tiles of 4 KiB stay in L1.

constexpr int64_t kLanes = 16;
constexpr int64_t kChunk = 64;

// The recurrence over `cnt` steps:  h[n] = exp(dt A[:, n]) h[n] + (dt u) B[k, n],
// y = sum_n C[k, n] h[n], across lanes. dtl, dul, yl: lane tiles in time order (read
// from the last row first when reverse); A2: (N, kLanes), A in base 2 (exp(dt A) =
// 2^(dt A log2 e)); Bk, Ck: (cnt, N) in scan order; h: (N, kLanes), carried between
// tiles.
template <typename T, int NC>
void lane_scan(const T* dtl, const T* dul, const T* A2, const T* Bk, const T* Ck,
               int64_t cnt, int64_t N_rt, bool reverse, T* __restrict h, T* yl) {
  const int64_t N = NC > 0 ? NC : N_rt;
  for (int64_t k = 0; k < cnt; ++k) {
    const int64_t j = reverse ? cnt - 1 - k : k;
    const T* dtt = dtl + j * kLanes;
    const T* dut = dul + j * kLanes;
    T y[kLanes] = {};
    for (int64_t n = 0; n < N; ++n) {
      const T bn = Bk[k * N + n], cn = Ck[k * N + n];
      T* hn = h + n * kLanes;
      const T* an = A2 + n * kLanes;
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) {
        hn[c] = fast_exp2(dtt[c] * an[c]) * hn[c] + dut[c] * bn;
        y[c] += hn[c] * cn;
      }
    }
    std::copy(y, y + kLanes, yl + j * kLanes);
  }
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// float with AVX-512 and N = 16: the recurrence with the states in registers.

// 2^x = 2^n 2^r, n = round(x), r = x - n in [-1/2, 1/2] (vreduceps); 2^r = 1 + r q(r)
// with q of degree 5 (minimax, relative error 1.9e-8, exact at r = 0: decays close to
// 1, whose errors the recurrence amplifies by 1 / (1 - decay), stay accurate); 2^n by
// vscalefps, which also underflows to 0 correctly (no clamping).
inline __m512 exp2_avx512(__m512 x) {
  const __m512 r = _mm512_reduce_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 p = _mm512_set1_ps(1.5412308857776225e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.341796014457941e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.618261829018593e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.550260841846466e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(2.4022649228572845e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(6.931472420692444e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, _mm512_sub_ps(x, r));
}

template <>
void lane_scan<float, 16>(const float* dtl, const float* dul, const float* A2,
                          const float* Bk, const float* Ck, int64_t cnt, int64_t,
                          bool reverse, float* hmem, float* yl) {
  __m512 h[16];
  for (int n = 0; n < 16; ++n) h[n] = _mm512_loadu_ps(hmem + n * kLanes);
  for (int64_t k = 0; k < cnt; ++k) {
    const int64_t j = reverse ? cnt - 1 - k : k;
    const __m512 dt = _mm512_loadu_ps(dtl + j * kLanes);
    const __m512 du = _mm512_loadu_ps(dul + j * kLanes);
    const float* Bi = Bk + k * 16;
    const float* Ci = Ck + k * 16;
    __m512 y = _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int n = 0; n < 16; ++n) {
      const __m512 a = exp2_avx512(_mm512_mul_ps(dt, _mm512_loadu_ps(A2 + n * kLanes)));
      h[n] = _mm512_fmadd_ps(a, h[n], _mm512_mul_ps(du, _mm512_set1_ps(Bi[n])));
      y = _mm512_fmadd_ps(h[n], _mm512_set1_ps(Ci[n]), y);
    }
    _mm512_storeu_ps(yl + j * kLanes, y);
  }
  for (int n = 0; n < 16; ++n) _mm512_storeu_ps(hmem + n * kLanes, h[n]);
}
#endif

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
// float with AVX2 and N = 16: two 8-lane halves; the states stay in memory (16 ymm
// registers are not enough for 32 half-states) but the decays use exp2_avx2, which
// clamps with one maxps and one minps (the auto-vectorised fast_exp2 needs compares and
// blends to keep NaN without -ffinite-math-only).

// 2^x: n = round(x) of x clamped to [-127, 128] (max(lo, x), min(hi, .) return x when it
// is NaN), r = x - n, the degree-6 polynomial of fast_exp2, 2^n by exponent bits
// (n = -127 gives 0, n = 128 inf). NaN propagates through r.
inline __m256 exp2_avx2(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(128.0f), _mm256_max_ps(_mm256_set1_ps(-127.0f), x));
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 r = _mm256_sub_ps(x, n);
  __m256 p = _mm256_set1_ps(1.5403530393e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3333558146e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(9.6181291076e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.5504108665e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(2.4022650696e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(6.9314718056e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

template <>
void lane_scan<float, 16>(const float* dtl, const float* dul, const float* A2,
                          const float* Bk, const float* Ck, int64_t cnt, int64_t,
                          bool reverse, float* __restrict h, float* yl) {
  for (int64_t k = 0; k < cnt; ++k) {
    const int64_t j = reverse ? cnt - 1 - k : k;
    const __m256 dt0 = _mm256_loadu_ps(dtl + j * kLanes);
    const __m256 dt1 = _mm256_loadu_ps(dtl + j * kLanes + 8);
    const __m256 du0 = _mm256_loadu_ps(dul + j * kLanes);
    const __m256 du1 = _mm256_loadu_ps(dul + j * kLanes + 8);
    const float* Bi = Bk + k * 16;
    const float* Ci = Ck + k * 16;
    __m256 y0 = _mm256_setzero_ps(), y1 = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int n = 0; n < 16; ++n) {
      float* hn = h + n * kLanes;
      const __m256 b = _mm256_set1_ps(Bi[n]), c = _mm256_set1_ps(Ci[n]);
      const __m256 a0 = exp2_avx2(_mm256_mul_ps(dt0, _mm256_loadu_ps(A2 + n * kLanes)));
      const __m256 a1 = exp2_avx2(_mm256_mul_ps(dt1, _mm256_loadu_ps(A2 + n * kLanes + 8)));
      const __m256 h0 = _mm256_fmadd_ps(a0, _mm256_loadu_ps(hn), _mm256_mul_ps(du0, b));
      const __m256 h1 = _mm256_fmadd_ps(a1, _mm256_loadu_ps(hn + 8), _mm256_mul_ps(du1, b));
      _mm256_storeu_ps(hn, h0);
      _mm256_storeu_ps(hn + 8, h1);
      y0 = _mm256_fmadd_ps(h0, c, y0);
      y1 = _mm256_fmadd_ps(h1, c, y1);
    }
    _mm256_storeu_ps(yl + j * kLanes, y0);
    _mm256_storeu_ps(yl + j * kLanes + 8, y1);
  }
}
#endif

// Lane tiles <-> (w <= kLanes channels, cnt steps) slabs with strides (sd, st), for
// channel-major or strided tensors: tile[j * kLanes + c] = src[c * sd + j * st], zeros
// for c >= w; block transposes when rows are contiguous. Out of line, so that the
// token-major path below stays a short loop.
template <typename T>
[[gnu::noinline]] void load_tile_strided(const T* src, int64_t sd, int64_t st, int64_t w,
                                         int64_t cnt, T* tile) {
  if (w < kLanes) std::fill(tile, tile + cnt * kLanes, T(0));
  if (st == 1) {
    for (int64_t j0 = 0; j0 < cnt; j0 += 16)
      transpose_tile(src + j0, sd, w, std::min<int64_t>(16, cnt - j0), tile + j0 * kLanes,
                     kLanes);
  } else {
    for (int64_t j = 0; j < cnt; ++j)
      for (int64_t c = 0; c < w; ++c) tile[j * kLanes + c] = src[c * sd + j * st];
  }
}

template <typename T>
[[gnu::noinline]] void store_tile_strided(const T* tile, int64_t sd, int64_t st, int64_t w,
                                          int64_t cnt, T* dst) {
  if (st == 1) {
    for (int64_t j0 = 0; j0 < cnt; j0 += 16)
      transpose_tile(tile + j0 * kLanes, kLanes, std::min<int64_t>(16, cnt - j0), w,
                     dst + j0, sd);
  } else {
    for (int64_t j = 0; j < cnt; ++j)
      for (int64_t c = 0; c < w; ++c) dst[c * sd + j * st] = tile[j * kLanes + c];
  }
}

// Lane tile of the slab of channels d0 .. d0 + w - 1 and steps t0 .. t0 + cnt - 1 of a
// (B, D, L) tensor x with strides s, batch entry b. Token-major tensors (channels
// contiguous): one copy per step.
template <typename T>
inline void load_tile(const T* x, Strides s, int64_t b, int64_t d0, int64_t t0, int64_t w,
                      int64_t cnt, T* tile) {
  const T* src = x + offset(s, b, d0, t0);
  if (s.d != 1) return load_tile_strided(src, s.d, s.t, w, cnt, tile);
  for (int64_t j = 0; j < cnt; ++j) {
    const T* sj = src + j * s.t;
    T* tj = tile + j * kLanes;
    if (w == kLanes) {
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) tj[c] = sj[c];
    } else {
      for (int64_t c = 0; c < kLanes; ++c) tj[c] = c < w ? sj[c] : T(0);
    }
  }
}

// The inverse for the first w lanes.
template <typename T>
inline void store_tile(const T* tile, T* x, Strides s, int64_t b, int64_t d0, int64_t t0,
                       int64_t w, int64_t cnt) {
  T* dst = x + offset(s, b, d0, t0);
  if (s.d != 1) return store_tile_strided(tile, s.d, s.t, w, cnt, dst);
  for (int64_t j = 0; j < cnt; ++j) {
    const T* tj = tile + j * kLanes;
    T* dj = dst + j * s.t;
    if (w == kLanes) {
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) dj[c] = tj[c];
    } else {
      for (int64_t c = 0; c < w; ++c) dj[c] = tj[c];
    }
  }
}

// Per-lane parameters of the channel block d0 .. d0 + w - 1: A2 (N, kLanes) = A in base 2
// (exp(dt A) = 2^(dt A log2 e)), A itself when An is given, the dt bias and D. Unused
// lanes (a partial last block) get zeros: with zero inputs their states stay 0.
template <typename T>
void lane_params(const T* A, const T* dbias, const T* Dv, int64_t d0, int64_t w, int64_t N,
                 T* A2, T* bias, T* skip, T* An = nullptr) {
  for (int64_t c = 0; c < kLanes; ++c) {
    const int64_t d = d0 + c;
    for (int64_t n = 0; n < N; ++n) {
      const T a = c < w ? A[d * N + n] : T(0);
      A2[n * kLanes + c] = a * T(1.4426950408889634);
      if (An) An[n * kLanes + c] = a;
    }
    bias[c] = c < w && dbias ? dbias[d] : T(0);
    skip[c] = c < w && Dv ? Dv[d] : T(0);
  }
}

// raw += bias (kept for the softplus derivative); dt = softplus(raw) or raw; du = dt u.
template <typename T>
void lane_prepare(T* __restrict raw, const T* __restrict ul, const T* __restrict bias,
                 bool use_softplus, int64_t cnt, T* __restrict dtl, T* __restrict dul) {
  for (int64_t j = 0; j < cnt; ++j) {
    T* rj = raw + j * kLanes;
    T* dtj = dtl + j * kLanes;
    T* duj = dul + j * kLanes;
    const T* uj = ul + j * kLanes;
    if (use_softplus) {
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) {
        rj[c] += bias[c];
        dtj[c] = fast_softplus(rj[c]);
        duj[c] = dtj[c] * uj[c];
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) {
        rj[c] += bias[c];
        dtj[c] = rj[c];
        duj[c] = dtj[c] * uj[c];
      }
    }
  }
}

// u, delta, z, out: (B, D, L) with any strides (the output takes the layout the caller
// allocated: the inputs' one, so token-major in gives token-major out).
template <typename T, int NC>
void scan_fwd_kernel(const T* u, const T* delta, const T* A, const T* Bt, const T* Ct,
                     const T* Dv, const T* z, const T* dbias, bool use_softplus,
                     T* out, int64_t batch, int64_t dim, int64_t len, int64_t N_rt,
                     Strides su, Strides sdl, Strides sz, Strides so, bool reverse) {
  const int64_t N = NC > 0 ? NC : N_rt;  // compile-time for the usual d_state
  const int64_t nblk = (dim + kLanes - 1) / kLanes;
  // A job is one block of kLanes channels of one batch entry. Each thread takes a range
  // of jobs and advances all of them one time tile at a time (states of the range, at
  // most dim * N values per batch entry, stay in L2), so that a tile step of the range
  // reads adjacent memory: with token-major tensors, the same few pages.
  at::parallel_for(0, batch * nblk, 1, [&](int64_t begin, int64_t end) {
    constexpr int64_t kTile = kChunk * kLanes;
    const int64_t njobs = end - begin;
    std::vector<T> raw(kTile), dtl(kTile), ul(kTile), zl(kTile), yl(kTile);
    std::vector<T> A2(njobs * N * kLanes), h(njobs * N * kLanes, T(0));
    std::vector<T> bias(njobs * kLanes), skip(njobs * kLanes);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t q = job - begin, d0 = (job % nblk) * kLanes;
      lane_params(A, dbias, Dv, d0, std::min(kLanes, dim - d0), N,
                  A2.data() + q * N * kLanes, bias.data() + q * kLanes,
                  skip.data() + q * kLanes);
    }
    for (int64_t i0 = 0; i0 < len; i0 += kChunk) {  // i0: first step in scan order
      const int64_t cnt = std::min(kChunk, len - i0);
      const int64_t t0 = reverse ? len - i0 - cnt : i0;  // first time step of the tile
      for (int64_t job = begin; job < end; ++job) {
        const int64_t q = job - begin, b = job / nblk, d0 = (job % nblk) * kLanes;
        const int64_t w = std::min(kLanes, dim - d0);
        const T* bq = bias.data() + q * kLanes;
        const T* sq = skip.data() + q * kLanes;
        load_tile<T>(delta, sdl, b, d0, t0, w, cnt, raw.data());
        load_tile<T>(u, su, b, d0, t0, w, cnt, ul.data());
        // dt into dtl, dt * u into yl (free until the scan writes y there).
        lane_prepare<T>(raw.data(), ul.data(), bq, use_softplus, cnt, dtl.data(),
                        yl.data());
        const int64_t bc = (b * len + i0) * N;  // B, C of this batch entry and tile
        lane_scan<T, NC>(dtl.data(), yl.data(), A2.data() + q * N * kLanes, Bt + bc,
                         Ct + bc, cnt, N, reverse, h.data() + q * N * kLanes, yl.data());
        // y + D u, gated by silu(z).
        if (z) load_tile<T>(z, sz, b, d0, t0, w, cnt, zl.data());
        for (int64_t j = 0; j < cnt; ++j) {
          T* yj = yl.data() + j * kLanes;
          const T* uj = ul.data() + j * kLanes;
          const T* zj = zl.data() + j * kLanes;
          if (z) {
#pragma omp simd
            for (int64_t c = 0; c < kLanes; ++c)
              yj[c] = (yj[c] + sq[c] * uj[c]) * fast_silu(zj[c]);
          } else {
#pragma omp simd
            for (int64_t c = 0; c < kLanes; ++c) yj[c] += sq[c] * uj[c];
          }
        }
        store_tile<T>(yl.data(), out, so, b, d0, t0, w, cnt);
      }
    }
  });
}

// Backward with channels as SIMD lanes, like the forward. Per block of kLanes channels
// and batch entry: a first pass over the time tiles in scan order recomputes the states
// and keeps them only at tile starts; a second pass, tiles in reverse scan order,
// recomputes the tile's decays and states from its checkpoint (L2-sized buffers, no
// (B, D, L, N) tensors) and runs the adjoint recurrence g[n] = a[n] (dy C[n] + g[n])
// backwards through it. Per-channel sums (dA, dD, d bias) stay in lanes; dB and dC
// (sums over channels) are reduced across lanes per step.

// Sum of the kLanes = 16 lanes of v as a tree of halves: vector adds. A sequential sum
// (or an omp simd reduction of a fully unrolled 16-step loop) is not vectorised without
// -fassociative-math, which the kernels do not use (see build_flags.py).
template <typename T>
inline T lane_sum(const T* v) {
  static_assert(kLanes == 16, "lane_sum adds 16 lanes");
  T a[8], b[4];
#pragma omp simd
  for (int i = 0; i < 8; ++i) a[i] = v[i] + v[i + 8];
#pragma omp simd
  for (int i = 0; i < 4; ++i) b[i] = a[i] + a[i + 4];
  return (b[0] + b[2]) + (b[1] + b[3]);
}

// States over the steps k of a tile, from h0 (N, kLanes): Ht[k + 1] after step k
// (Ht[0] = h0), At[k] the decays.
template <typename T, int NC>
void bwd_states(const T* __restrict dtl, const T* __restrict dul, const T* __restrict A2,
                const T* __restrict Bk, int64_t cnt, int64_t N_rt, bool reverse,
                const T* __restrict h0, T* __restrict Ht, T* __restrict At) {
  const int64_t N = NC > 0 ? NC : N_rt;
  const int64_t NL = N * kLanes;
  std::copy(h0, h0 + NL, Ht);
  for (int64_t k = 0; k < cnt; ++k) {
    const int64_t j = reverse ? cnt - 1 - k : k;
    const T* dtj = dtl + j * kLanes;
    const T* duj = dul + j * kLanes;
    const T* hp = Ht + k * NL;
    T* hk = Ht + (k + 1) * NL;
    T* ak = At + k * NL;
    for (int64_t n = 0; n < N; ++n) {
      const T bn = Bk[k * N + n];
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) {
        const T a = fast_exp2(dtj[c] * A2[n * kLanes + c]);
        ak[n * kLanes + c] = a;
        hk[n * kLanes + c] = a * hp[n * kLanes + c] + duj[c] * bn;
      }
    }
  }
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// float with AVX-512 and N = 16: the states in registers and the forward's exp2_avx512,
// so the backward recomputes exactly the forward's states and decays.
template <>
void bwd_states<float, 16>(const float* __restrict dtl, const float* __restrict dul,
                           const float* __restrict A2, const float* __restrict Bk,
                           int64_t cnt, int64_t, bool reverse, const float* __restrict h0,
                           float* __restrict Ht, float* __restrict At) {
  constexpr int64_t NL = 16 * kLanes;
  __m512 h[16];
  for (int n = 0; n < 16; ++n) {
    h[n] = _mm512_loadu_ps(h0 + n * kLanes);
    _mm512_storeu_ps(Ht + n * kLanes, h[n]);
  }
  for (int64_t k = 0; k < cnt; ++k) {
    const int64_t j = reverse ? cnt - 1 - k : k;
    const __m512 dt = _mm512_loadu_ps(dtl + j * kLanes);
    const __m512 du = _mm512_loadu_ps(dul + j * kLanes);
    const float* Bi = Bk + k * 16;
    float* hk = Ht + (k + 1) * NL;
    float* ak = At + k * NL;
#pragma GCC unroll 16
    for (int n = 0; n < 16; ++n) {
      const __m512 a = exp2_avx512(_mm512_mul_ps(dt, _mm512_loadu_ps(A2 + n * kLanes)));
      h[n] = _mm512_fmadd_ps(a, h[n], _mm512_mul_ps(du, _mm512_set1_ps(Bi[n])));
      _mm512_storeu_ps(ak + n * kLanes, a);
      _mm512_storeu_ps(hk + n * kLanes, h[n]);
    }
  }
}
#endif

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
// float with AVX2 and N = 16: the forward's exp2_avx2, so the backward recomputes
// exactly the forward's states and decays.
template <>
void bwd_states<float, 16>(const float* __restrict dtl, const float* __restrict dul,
                           const float* __restrict A2, const float* __restrict Bk,
                           int64_t cnt, int64_t, bool reverse, const float* __restrict h0,
                           float* __restrict Ht, float* __restrict At) {
  constexpr int64_t NL = 16 * kLanes;
  std::copy(h0, h0 + NL, Ht);
  for (int64_t k = 0; k < cnt; ++k) {
    const int64_t j = reverse ? cnt - 1 - k : k;
    const __m256 dt0 = _mm256_loadu_ps(dtl + j * kLanes);
    const __m256 dt1 = _mm256_loadu_ps(dtl + j * kLanes + 8);
    const __m256 du0 = _mm256_loadu_ps(dul + j * kLanes);
    const __m256 du1 = _mm256_loadu_ps(dul + j * kLanes + 8);
    const float* Bi = Bk + k * 16;
    const float* hp = Ht + k * NL;
    float* hk = Ht + (k + 1) * NL;
    float* ak = At + k * NL;
#pragma GCC unroll 4
    for (int n = 0; n < 16; ++n) {
      const int64_t o = n * kLanes;
      const __m256 b = _mm256_set1_ps(Bi[n]);
      const __m256 a0 = exp2_avx2(_mm256_mul_ps(dt0, _mm256_loadu_ps(A2 + o)));
      const __m256 a1 = exp2_avx2(_mm256_mul_ps(dt1, _mm256_loadu_ps(A2 + o + 8)));
      _mm256_storeu_ps(ak + o, a0);
      _mm256_storeu_ps(ak + o + 8, a1);
      _mm256_storeu_ps(hk + o, _mm256_fmadd_ps(a0, _mm256_loadu_ps(hp + o),
                                               _mm256_mul_ps(du0, b)));
      _mm256_storeu_ps(hk + o + 8, _mm256_fmadd_ps(a1, _mm256_loadu_ps(hp + o + 8),
                                                   _mm256_mul_ps(du1, b)));
    }
  }
}
#endif

// Lane tiles (time order) of one block and tile, for bwd_adjoint.
template <typename T>
struct BwdTile {
  const T *raw, *dt, *du, *u, *z, *go;  // inputs; z may be null
  T *gu, *gdelta, *gz;                   // gradients out (gz unused without z)
  T* y;                                  // the forward's (gated) output
};

// The adjoint through a tile (steps in reverse scan order). g (N, kLanes): carried
// a[k+1] G[k+1]; dA, dD, dbias: lane accumulators; dBk, dCk: (cnt, N) in scan order.
// tl.y receives the forward's output, (C h + D u) silu(z), from the sum over the states
// that d loss / d silu(z) needs anyway: one store per step. It equals the forward's up to
// rounding (the forward sums over the states in one chain, here in two).
template <typename T, int NC>
void bwd_adjoint(const BwdTile<T>& tl, const T* __restrict Ht, const T* __restrict At,
                 const T* __restrict An, const T* __restrict skip,
                 const T* __restrict Bk, const T* __restrict Ck, int64_t cnt,
                 int64_t N_rt, bool reverse, bool use_softplus, T* __restrict g,
                 T* __restrict dA, T* __restrict dD, T* __restrict dbias,
                 T* __restrict dBk, T* __restrict dCk) {
  const int64_t N = NC > 0 ? NC : N_rt;
  const int64_t NL = N * kLanes;
  for (int64_t k = cnt - 1; k >= 0; --k) {
    const int64_t j = (reverse ? cnt - 1 - k : k) * kLanes;
    const T* hk = Ht + (k + 1) * NL;
    const T* hp = Ht + k * NL;
    const T* ak = At + k * NL;
    const T* uj = tl.u + j;
    const T* dtj = tl.dt + j;
    const T* duj = tl.du + j;
    const T* goj = tl.go + j;
    // y before the gate, then d loss / d y and dz.
    // Sums over n go in two partial sums (even and odd n): two independent chains of
    // multiply-adds instead of one (the kernels are built without -fassociative-math,
    // so the compiler keeps the order written here).
    T dy[kLanes], dy1[kLanes];
#pragma omp simd
    for (int64_t c = 0; c < kLanes; ++c) {
      dy[c] = skip[c] * uj[c];
      dy1[c] = T(0);
    }
    {
      int64_t n = 0;
      for (; n + 1 < N; n += 2) {
        const T c0 = Ck[k * N + n], c1 = Ck[k * N + n + 1];
#pragma omp simd
        for (int64_t c = 0; c < kLanes; ++c) {
          dy[c] += hk[n * kLanes + c] * c0;
          dy1[c] += hk[(n + 1) * kLanes + c] * c1;
        }
      }
      if (n < N) {
        const T c0 = Ck[k * N + n];
#pragma omp simd
        for (int64_t c = 0; c < kLanes; ++c) dy[c] += hk[n * kLanes + c] * c0;
      }
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) dy[c] += dy1[c];
    }
    T* yj = tl.y + j;
    if (tl.z) {
      const T* zj = tl.z + j;
      T* gzj = tl.gz + j;
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) {
        const T s = T(1) / (T(1) + fast_exp(-zj[c]));
        yj[c] = dy[c] * (zj[c] * s);
        gzj[c] = goj[c] * dy[c] * s * (T(1) + zj[c] * (T(1) - s));
        dy[c] = goj[c] * zj[c] * s;
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) {
        yj[c] = dy[c];
        dy[c] = goj[c];
      }
    }
    T ddt[kLanes] = {}, gB[kLanes] = {}, ddt1[kLanes] = {}, gB1[kLanes] = {};
    auto adjoint_state = [&](int64_t n, T* __restrict ddt_acc, T* __restrict gB_acc) {
      const T cn = Ck[k * N + n], bn = Bk[k * N + n];
      T* gn = g + n * kLanes;
      T* dAn = dA + n * kLanes;
      const T* Ann = An + n * kLanes;
      const T* hkn = hk + n * kLanes;
      const T* hpn = hp + n * kLanes;
      const T* akn = ak + n * kLanes;
      T pB[kLanes], pC[kLanes];
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) {
        const T G = dy[c] * cn + gn[c];
        const T dlog = G * hpn[c] * akn[c];  // d loss / d (dt A)
        pC[c] = dy[c] * hkn[c];
        pB[c] = G * duj[c];
        gB_acc[c] += G * bn;
        ddt_acc[c] += dlog * Ann[c];
        dAn[c] += dlog * dtj[c];
        gn[c] = akn[c] * G;
      }
      dBk[k * N + n] += lane_sum(pB);
      dCk[k * N + n] += lane_sum(pC);
    };
    {
      int64_t n = 0;
      for (; n + 1 < N; n += 2) {
        adjoint_state(n, ddt, gB);
        adjoint_state(n + 1, ddt1, gB1);
      }
      if (n < N) adjoint_state(n, ddt, gB);
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) {
        ddt[c] += ddt1[c];
        gB[c] += gB1[c];
      }
    }
    const T* rj = tl.raw + j;
    T* guj = tl.gu + j;
    T* gdj = tl.gdelta + j;
    if (use_softplus) {
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c)
        gdj[c] = (ddt[c] + gB[c] * uj[c]) / (T(1) + fast_exp(-rj[c]));
    } else {
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) gdj[c] = ddt[c] + gB[c] * uj[c];
    }
#pragma omp simd
    for (int64_t c = 0; c < kLanes; ++c) {
      guj[c] = dy[c] * skip[c] + gB[c] * dtj[c];
      dD[c] += dy[c] * uj[c];
      dbias[c] += gdj[c];
    }
  }
}

template <typename T, int NC>
void scan_bwd_lanes(const T* u, const T* delta, const T* A, const T* Bt, const T* Ct,
                    const T* Dv, const T* z, const T* dbias, bool use_softplus,
                    const T* dout, T* du, T* ddelta, T* dA, T* dBt, T* dCt, T* dD,
                    T* dz, T* ddbias, T* out, int64_t batch, int64_t dim, int64_t len,
                    int64_t N_rt, Strides su, Strides sdl, Strides sz, Strides sg,
                    Strides sdu, Strides sdd, Strides sdz, Strides so, bool reverse) {
  const int64_t N = NC > 0 ? NC : N_rt;  // compile-time for the usual d_state
  const int64_t nblk = (dim + kLanes - 1) / kLanes;
  const int64_t ntiles = (len + kChunk - 1) / kChunk;
  const int64_t NL = N * kLanes;
  std::mutex merge;
  at::parallel_for(0, nblk, 1, [&](int64_t begin, int64_t end) {
    constexpr int64_t kTile = kChunk * kLanes;
    std::vector<T> raw(kTile), dtl(kTile), ul(kTile), zl(kTile), gol(kTile);
    std::vector<T> dul(kTile), gdu(kTile), gdd(kTile), gdz(kTile), yl(kTile);
    std::vector<T> Hck(ntiles * NL), Ht((kChunk + 1) * NL), At(kChunk * NL), g(NL);
    std::vector<T> A2(NL), An(NL), bias(kLanes), skip(kLanes);
    std::vector<T> dA_acc(NL), dD_acc(kLanes), db_acc(kLanes);
    std::vector<T> dB_loc(batch * len * N, T(0)), dC_loc(batch * len * N, T(0));
    const BwdTile<T> tl{raw.data(), dtl.data(), dul.data(), ul.data(),
                        z ? zl.data() : nullptr, gol.data(), gdu.data(), gdd.data(),
                        gdz.data(), yl.data()};
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t d0 = blk * kLanes, w = std::min(kLanes, dim - d0);
      lane_params(A, dbias, Dv, d0, w, N, A2.data(), bias.data(), skip.data(), An.data());
      std::fill(dA_acc.begin(), dA_acc.end(), T(0));
      std::fill(dD_acc.begin(), dD_acc.end(), T(0));
      std::fill(db_acc.begin(), db_acc.end(), T(0));
      for (int64_t b = 0; b < batch; ++b) {
        const T* Bb = Bt + b * len * N;
        const T* Cb = Ct + b * len * N;
        auto tile_inputs = [&](int64_t cnt, int64_t t0) {
          load_tile<T>(delta, sdl, b, d0, t0, w, cnt, raw.data());
          load_tile<T>(u, su, b, d0, t0, w, cnt, ul.data());
          lane_prepare<T>(raw.data(), ul.data(), bias.data(), use_softplus, cnt, dtl.data(),
                          dul.data());
        };
        // Pass 1: states at tile starts (g is the running state here).
        std::fill(g.begin(), g.end(), T(0));
        for (int64_t tile = 0; tile < ntiles; ++tile) {
          const int64_t i0 = tile * kChunk, cnt = std::min(kChunk, len - i0);
          std::copy(g.begin(), g.end(), Hck.begin() + tile * NL);
          if (tile + 1 == ntiles) break;
          tile_inputs(cnt, reverse ? len - i0 - cnt : i0);
          bwd_states<T, NC>(dtl.data(), dul.data(), A2.data(), Bb + i0 * N, cnt, N,
                            reverse, g.data(), Ht.data(), At.data());
          std::copy(Ht.begin() + cnt * NL, Ht.begin() + (cnt + 1) * NL, g.begin());
        }
        // Pass 2: the adjoint, tiles in reverse scan order.
        std::fill(g.begin(), g.end(), T(0));
        for (int64_t tile = ntiles - 1; tile >= 0; --tile) {
          const int64_t i0 = tile * kChunk, cnt = std::min(kChunk, len - i0);
          const int64_t t0 = reverse ? len - i0 - cnt : i0;
          tile_inputs(cnt, t0);
          bwd_states<T, NC>(dtl.data(), dul.data(), A2.data(), Bb + i0 * N, cnt, N,
                            reverse, Hck.data() + tile * NL, Ht.data(), At.data());
          load_tile<T>(dout, sg, b, d0, t0, w, cnt, gol.data());
          if (z) load_tile<T>(z, sz, b, d0, t0, w, cnt, zl.data());
          bwd_adjoint<T, NC>(tl, Ht.data(), At.data(), An.data(), skip.data(), Bb + i0 * N,
                             Cb + i0 * N, cnt, N, reverse, use_softplus, g.data(),
                             dA_acc.data(), dD_acc.data(), db_acc.data(),
                             dB_loc.data() + (b * len + i0) * N,
                             dC_loc.data() + (b * len + i0) * N);
          store_tile<T>(gdu.data(), du, sdu, b, d0, t0, w, cnt);
          store_tile<T>(gdd.data(), ddelta, sdd, b, d0, t0, w, cnt);
          if (z) store_tile<T>(gdz.data(), dz, sdz, b, d0, t0, w, cnt);
          if (out) store_tile<T>(yl.data(), out, so, b, d0, t0, w, cnt);
        }
      }
      for (int64_t c = 0; c < w; ++c) {
        for (int64_t n = 0; n < N; ++n) dA[(d0 + c) * N + n] = dA_acc[n * kLanes + c];
        if (dD) dD[d0 + c] = dD_acc[c];
        if (ddbias) ddbias[d0 + c] = db_acc[c];
      }
    }
    std::lock_guard<std::mutex> lock(merge);
    for (int64_t i = 0; i < batch * len * N; ++i) {
      dBt[i] += dB_loc[i];
      dCt[i] += dC_loc[i];
    }
  });
}

template <typename T>
void scan_fwd_impl(const ScanFwdArgs<T>& a) {
  auto fn = a.N == 16 ? scan_fwd_kernel<T, 16> : scan_fwd_kernel<T, 0>;
  fn(a.u, a.delta, a.A, a.Bt, a.Ct, a.Dv, a.z, a.dbias, a.softplus, a.out, a.batch,
     a.dim, a.len, a.N, a.su, a.sdelta, a.sz, a.sout, a.reverse);
}

template <typename T>
void scan_bwd_impl(const ScanBwdArgs<T>& a) {
  auto fn = a.N == 16 ? scan_bwd_lanes<T, 16> : scan_bwd_lanes<T, 0>;
  fn(a.u, a.delta, a.A, a.Bt, a.Ct, a.Dv, a.z, a.dbias, a.softplus, a.dout, a.du,
     a.ddelta, a.dA, a.dBt, a.dCt, a.dD, a.dz, a.ddbias, a.out, a.batch, a.dim, a.len, a.N,
     a.su, a.sdelta, a.sz, a.sdout, a.sdu, a.sddelta, a.sdz, a.sout, a.reverse);
}

void scan_fwd(const ScanFwdArgs<float>& a) { scan_fwd_impl(a); }
void scan_fwd(const ScanFwdArgs<double>& a) { scan_fwd_impl(a); }
void scan_bwd(const ScanBwdArgs<float>& a) { scan_bwd_impl(a); }
void scan_bwd(const ScanBwdArgs<double>& a) { scan_bwd_impl(a); }

}  // namespace SHUFFLEMAMBA_ISA
}  // namespace shufflemamba
