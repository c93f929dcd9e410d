// Selective scan (Mamba S6 recurrence) on the CPU: forward and backward.
//
// Work is split by (batch, channel) rows, rows in parallel on ATen's thread pool. Per
// row, everything that has no loop-carried dependency is done in long vectorised loops
// (softplus of dt, the decays exp(dt * A) for a block of time steps, the C
// contractions, the gate), so that the sequential part is one fused multiply-add per
// state and time step. The backward recomputes a row's states into per-thread buffers
// instead of storing (B, D, L, N) tensors, like the fused CUDA kernel.
//
// Layouts: u, delta, z, out: (B, D, L) (forward: any strides; backward: contiguous
// rows); A: (D, N); Bt, Ct: (B, L, N) (time-major).
// reverse=true scans from the last time step to the first (Bt, Ct then come in reversed
// time order, dBt and dCt are returned in that order), i.e. the backward direction of
// the bidirectional mixer without flipped copies of u, delta and z.
#include <torch/extension.h>
#if defined(__AVX512F__)
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

namespace {

using shufflemamba::fast_exp;
using shufflemamba::fast_silu;
using shufflemamba::gather_rows;
using shufflemamba::Strides;
using shufflemamba::strides_of;
using shufflemamba::scatter_rows;
#if defined(__AVX512F__) && defined(__AVX512DQ__)
using shufflemamba::transpose16x16;
#endif


// dt[t] = softplus(delta[t] + bias) (torch's threshold 20), or delta + bias.
template <typename T>
inline void row_dt(const T* dr, T bias, bool use_softplus, int64_t len, T* dts) {
  if (use_softplus) {
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) {
      const T x = dr[t] + bias;
      dts[t] = x > T(20) ? x : std::log1p(std::exp(x));
    }
  } else {
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) dts[t] = dr[t] + bias;
  }
}

// a[i * N + n] = exp(dt[i] * A[n]) for i < count.
template <typename T, int NC>
inline void decays(const T* dts, const T* Ad, int64_t count, int64_t N_rt, T* a) {
  const int64_t N = NC > 0 ? NC : N_rt;
  for (int64_t i = 0; i < count; ++i) {
    const T dt = dts[i];
    T* ai = a + i * N;
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) ai[n] = dt * Ad[n];
  }
  const int64_t total = count * N;
#pragma omp simd
  for (int64_t i = 0; i < total; ++i) a[i] = fast_exp(a[i]);
}

// h[t] = a[t] * h[t-1] + dt[t] u[t] B[t] for the block; states written to hs.
template <typename T, int NC>
inline void recurrence(const T* a, const T* dts, const T* ur, const T* Bv, int64_t count,
                       int64_t N_rt, T* h, T* hs) {
  const int64_t N = NC > 0 ? NC : N_rt;
  for (int64_t i = 0; i < count; ++i) {
    const T dtu = dts[i] * ur[i];
    const T* ai = a + i * N;
    const T* bi = Bv + i * N;
    T* hi = hs + i * N;
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) {
      h[n] = ai[n] * h[n] + dtu * bi[n];
      hi[n] = h[n];
    }
  }
}

template <typename T, int NC>
inline T dot(const T* x, const T* y, int64_t N_rt) {
  const int64_t N = NC > 0 ? NC : N_rt;
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t n = 0; n < N; ++n) s += x[n] * y[n];
  return s;
}

// ---------------------------------------------------------------------------------
// Forward. Channels go in blocks of kLanes, one SIMD lane per channel, and time in
// tiles of kChunk steps. Per tile, the rows of delta, u (and z) are transposed into
// time-major lane tiles (kChunk, kLanes); softplus, dt * u, the recurrence, the skip
// connection and the gate all run across lanes; the result is transposed back into the
// rows of the output. The recurrence has N independent dependency chains per step and
// no horizontal reductions. Four tiles of 4 KiB stay in L1.

constexpr int64_t kLanes = 16;
constexpr int64_t kChunk = 64;

// 2^x, inlined and vectorised like fast_exp: n = round(x), r = x - n, a degree-6
// polynomial for 2^r (Taylor, relative error 1.3e-7, exact at x = 0).
inline float fast_exp2(float x) {
  x = std::fmin(std::fmax(x, -126.0f), 127.0f);
  const float n = std::nearbyint(x);
  const float r = x - n;
  float p = 1.5403530393e-4f;
  p = std::fma(p, r, 1.3333558146e-3f);
  p = std::fma(p, r, 9.6181291076e-3f);
  p = std::fma(p, r, 5.5504108665e-2f);
  p = std::fma(p, r, 2.4022650696e-1f);
  p = std::fma(p, r, 6.9314718056e-1f);
  p = std::fma(p, r, 1.0f);
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
inline double fast_exp2(double x) { return std::exp2(x); }

// softplus(x) = max(x, 0) + log1p(e), e = exp(-|x|) in (0, 1], with
// log1p(e) = 2 atanh(s), s = e / (2 + e) in (0, 1/3] (series to s^13: relative error
// 1.4e-8; s keeps the full relative precision of small e). Inlined and vectorised.
inline float fast_softplus(float x) {
  const float e = fast_exp(-std::fabs(x));
  const float s = e / (2.0f + e);
  const float s2 = s * s;
  float p = 1.0f / 13;
  p = std::fma(p, s2, 1.0f / 11);
  p = std::fma(p, s2, 1.0f / 9);
  p = std::fma(p, s2, 1.0f / 7);
  p = std::fma(p, s2, 1.0f / 5);
  p = std::fma(p, s2, 1.0f / 3);
  p = std::fma(p, s2, 1.0f);
  return std::fmax(x, 0.0f) + 2.0f * s * p;
}
inline double fast_softplus(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }


// tile[j * kLanes + c] = rows[c][j] for j < cnt, c < kLanes (rows of unused lanes point
// to zeros) and the inverse for c < w.
template <typename T>
void rows_to_lanes(const T* const* rows, int64_t cnt, T* tile) {
  for (int64_t c = 0; c < kLanes; ++c)
    for (int64_t j = 0; j < cnt; ++j) tile[j * kLanes + c] = rows[c][j];
}
template <typename T>
void lanes_to_rows(const T* tile, int64_t cnt, int64_t w, T* const* rows) {
  for (int64_t c = 0; c < w; ++c)
    for (int64_t j = 0; j < cnt; ++j) rows[c][j] = tile[j * kLanes + c];
}

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
// float with AVX-512: 16x16 register transposes for the tiles, and the recurrence for
// N = 16 with the states in registers.

template <>
void rows_to_lanes<float>(const float* const* rows, int64_t cnt, float* tile) {
  for (int64_t j0 = 0; j0 < cnt; j0 += 16) {
    const int64_t m = std::min<int64_t>(16, cnt - j0);
    const __mmask16 mask = static_cast<__mmask16>((1u << m) - 1u);
    __m512 r[16];
    for (int c = 0; c < 16; ++c) r[c] = _mm512_maskz_loadu_ps(mask, rows[c] + j0);
    transpose16x16(r);
    for (int64_t j = 0; j < m; ++j) _mm512_storeu_ps(tile + (j0 + j) * kLanes, r[j]);
  }
}

template <>
void lanes_to_rows<float>(const float* tile, int64_t cnt, int64_t w, float* const* rows) {
  for (int64_t j0 = 0; j0 < cnt; j0 += 16) {
    const int64_t m = std::min<int64_t>(16, cnt - j0);
    const __mmask16 mask = static_cast<__mmask16>((1u << m) - 1u);
    __m512 r[16];
    for (int64_t j = 0; j < 16; ++j)
      r[j] = j < m ? _mm512_loadu_ps(tile + (j0 + j) * kLanes) : _mm512_setzero_ps();
    transpose16x16(r);
    for (int64_t c = 0; c < w; ++c) _mm512_mask_storeu_ps(rows[c] + j0, mask, r[c]);
  }
}

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

// Lane tile from the (w <= kLanes channels, cnt steps) slab at src:
// tile[j * kLanes + c] = src[c * sd + j * st], zeros for c >= w. Rows contiguous
// (channel-major tensors): register transposes; channels contiguous (token-major
// tensors): one copy per step; anything else element by element.
template <typename T>
void load_tile(const T* src, int64_t sd, int64_t st, int64_t w, int64_t cnt,
               const T* zeros, T* tile) {
  if (st == 1) {
    const T* rows[kLanes];
    for (int64_t c = 0; c < kLanes; ++c) rows[c] = c < w ? src + c * sd : zeros;
    rows_to_lanes<T>(rows, cnt, tile);
  } else if (sd == 1) {
    for (int64_t j = 0; j < cnt; ++j) {
      std::copy(src + j * st, src + j * st + w, tile + j * kLanes);
      std::fill(tile + j * kLanes + w, tile + (j + 1) * kLanes, T(0));
    }
  } else {
    for (int64_t j = 0; j < cnt; ++j)
      for (int64_t c = 0; c < kLanes; ++c)
        tile[j * kLanes + c] = c < w ? src[c * sd + j * st] : T(0);
  }
}

// The inverse for the first w lanes: dst[c * sd + j * st] = tile[j * kLanes + c].
template <typename T>
void store_tile(const T* tile, int64_t sd, int64_t st, int64_t w, int64_t cnt, T* dst) {
  if (st == 1) {
    T* rows[kLanes];
    for (int64_t c = 0; c < kLanes; ++c) rows[c] = dst + (c < w ? c * sd : 0);
    lanes_to_rows<T>(tile, cnt, w, rows);
  } else if (sd == 1) {
    for (int64_t j = 0; j < cnt; ++j)
      std::copy(tile + j * kLanes, tile + j * kLanes + w, dst + j * st);
  } else {
    for (int64_t j = 0; j < cnt; ++j)
      for (int64_t c = 0; c < w; ++c) dst[c * sd + j * st] = tile[j * kLanes + c];
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
    std::vector<T> dtl(kTile), ul(kTile), zl(kTile), yl(kTile), zeros(kChunk, T(0));
    std::vector<T> A2(njobs * N * kLanes), h(njobs * N * kLanes, T(0));
    std::vector<T> bias(njobs * kLanes), skip(njobs * kLanes);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t q = job - begin, d0 = (job % nblk) * kLanes;
      const int64_t w = std::min(kLanes, dim - d0);  // unused lanes: zero inputs, A = 0
      for (int64_t c = 0; c < kLanes; ++c) {
        const int64_t d = d0 + c;
        for (int64_t n = 0; n < N; ++n)
          A2[(q * N + n) * kLanes + c] = c < w ? A[d * N + n] * T(1.4426950408889634) : T(0);
        bias[q * kLanes + c] = c < w && dbias ? dbias[d] : T(0);
        skip[q * kLanes + c] = c < w && Dv ? Dv[d] : T(0);
      }
    }
    for (int64_t i0 = 0; i0 < len; i0 += kChunk) {  // i0: first step in scan order
      const int64_t cnt = std::min(kChunk, len - i0);
      const int64_t t0 = reverse ? len - i0 - cnt : i0;  // first time step of the tile
      for (int64_t job = begin; job < end; ++job) {
        const int64_t q = job - begin, b = job / nblk, d0 = (job % nblk) * kLanes;
        const int64_t w = std::min(kLanes, dim - d0);
        const T* bq = bias.data() + q * kLanes;
        const T* sq = skip.data() + q * kLanes;
        load_tile<T>(delta + b * sdl.b + d0 * sdl.d + t0 * sdl.t, sdl.d, sdl.t, w, cnt,
                     zeros.data(), dtl.data());
        load_tile<T>(u + b * su.b + d0 * su.d + t0 * su.t, su.d, su.t, w, cnt,
                     zeros.data(), ul.data());
        // dt = softplus(delta + bias) into dtl, dt * u into yl (free until the scan).
        for (int64_t j = 0; j < cnt; ++j) {
          T* dtj = dtl.data() + j * kLanes;
          const T* uj = ul.data() + j * kLanes;
          T* duj = yl.data() + j * kLanes;
          if (use_softplus) {
#pragma omp simd
            for (int64_t c = 0; c < kLanes; ++c) dtj[c] = fast_softplus(dtj[c] + bq[c]);
          } else {
#pragma omp simd
            for (int64_t c = 0; c < kLanes; ++c) dtj[c] += bq[c];
          }
#pragma omp simd
          for (int64_t c = 0; c < kLanes; ++c) duj[c] = dtj[c] * uj[c];
        }
        const int64_t bc = (b * len + i0) * N;  // B, C of this batch entry and tile
        lane_scan<T, NC>(dtl.data(), yl.data(), A2.data() + q * N * kLanes, Bt + bc,
                         Ct + bc, cnt, N, reverse, h.data() + q * N * kLanes, yl.data());
        // y + D u, gated by silu(z).
        if (z)
          load_tile<T>(z + b * sz.b + d0 * sz.d + t0 * sz.t, sz.d, sz.t, w, cnt,
                       zeros.data(), zl.data());
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
        store_tile<T>(yl.data(), so.d, so.t, w, cnt,
                      out + b * so.b + d0 * so.d + t0 * so.t);
      }
    }
  });
}

// Backward, row by row (channel by channel) on gathered blocks of kLanes channel rows:
// recompute the row's states into per-thread buffers (no (B, D, L, N) tensors), run
// the adjoint recurrence, then everything else elementwise. u, delta, z, dout and the
// gradients du, ddelta, dz: (B, D, L) with any strides.
template <typename T, int NC>
void scan_bwd_kernel(const T* u, const T* delta, const T* A, const T* Bt, const T* Ct,
                     const T* Dv, const T* z, const T* dbias, bool use_softplus,
                     const T* dout, T* du, T* ddelta, T* dA, T* dBt, T* dCt, T* dD,
                     T* dz, T* ddbias, int64_t batch, int64_t dim, int64_t len,
                     int64_t N_rt, Strides su, Strides sdl, Strides sz, Strides sg,
                     Strides sdu, Strides sdd, Strides sdz, bool reverse) {
  const int64_t N = NC > 0 ? NC : N_rt;  // compile-time for the usual d_state
  const int64_t nblk = (dim + kLanes - 1) / kLanes;
  std::mutex merge;
  // Parallel over channel blocks: dA, dD, ddbias of a channel belong to one thread; dB
  // and dC (sums over channels) are accumulated per thread and merged at the end.
  at::parallel_for(0, nblk, 1, [&](int64_t begin, int64_t end) {
    const int64_t LN = len * N, KL = kLanes * len;
    std::vector<T> hs(LN), as(LN), G(LN), dts(len), dys(len), h(N), g(N);
    // The block's rows (inputs and gradients), then one row's time-reversed inputs
    // (reverse mode) and gradients.
    std::vector<T> U(KL), DL(KL), Z(z ? KL : 0), GO(KL), DU(KL), DD(KL), DZ(z ? KL : 0);
    std::vector<T> ubuf(len), dbuf(len), zbuf(z ? len : 0), gobuf(len);
    std::vector<T> du_r(len), dd_r(len), dz_r(z ? len : 0);
    std::vector<T> dB_loc(batch * LN, T(0)), dC_loc(batch * LN, T(0));
    std::vector<T> dA_blk(kLanes * N), dD_blk(kLanes), db_blk(kLanes);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t d0 = blk * kLanes, w = std::min(kLanes, dim - d0);
      std::fill(dA_blk.begin(), dA_blk.end(), T(0));
      std::fill(dD_blk.begin(), dD_blk.end(), T(0));
      std::fill(db_blk.begin(), db_blk.end(), T(0));
      for (int64_t b = 0; b < batch; ++b) {
        gather_rows(u + b * su.b + d0 * su.d, su.d, su.t, w, len, U.data());
        gather_rows(delta + b * sdl.b + d0 * sdl.d, sdl.d, sdl.t, w, len, DL.data());
        gather_rows(dout + b * sg.b + d0 * sg.d, sg.d, sg.t, w, len, GO.data());
        if (z) gather_rows(z + b * sz.b + d0 * sz.d, sz.d, sz.t, w, len, Z.data());
        for (int64_t c = 0; c < w; ++c) {
          const int64_t d = d0 + c;
          const T* Ad = A + d * N;
          const T bias = dbias ? dbias[d] : T(0);
          const T skip = Dv ? Dv[d] : T(0);
          T* dA_acc = dA_blk.data() + c * N;
          T dD_acc = 0, dbias_acc = 0;
          const T* ur = U.data() + c * len;
          const T* dr = DL.data() + c * len;
          const T* zr = z ? Z.data() + c * len : nullptr;
          const T* go = GO.data() + c * len;
          if (reverse) {
            std::reverse_copy(ur, ur + len, ubuf.begin());
            std::reverse_copy(dr, dr + len, dbuf.begin());
            std::reverse_copy(go, go + len, gobuf.begin());
            ur = ubuf.data();
            dr = dbuf.data();
            go = gobuf.data();
            if (zr) {
              std::reverse_copy(zr, zr + len, zbuf.begin());
              zr = zbuf.data();
            }
          }
          const T* Bb = Bt + b * LN;
          const T* Cb = Ct + b * LN;
          // Recompute the row: dt, decays, states.
          row_dt(dr, bias, use_softplus, len, dts.data());
          decays<T, NC>(dts.data(), Ad, len, N, as.data());
          std::fill(h.begin(), h.end(), T(0));
          recurrence<T, NC>(as.data(), dts.data(), ur, Bb, len, N, h.data(), hs.data());
          // Gradient reaching y (through the gate) and dz.
          if (zr) {
            T* dzr = dz_r.data();
            for (int64_t t = 0; t < len; ++t) {
              const T y = dot<T, NC>(hs.data() + t * N, Cb + t * N, N) + skip * ur[t];
              const T s = T(1) / (T(1) + std::exp(-zr[t]));
              dzr[t] = go[t] * y * s * (T(1) + zr[t] * (T(1) - s));
              dys[t] = go[t] * zr[t] * s;
            }
          } else {
            std::copy(go, go + len, dys.begin());
          }
          // Sequential adjoint: G[t] = dy[t] C[t] + a[t+1] G[t+1].
          std::fill(g.begin(), g.end(), T(0));
          for (int64_t t = len - 1; t >= 0; --t) {
            const T dy = dys[t];
            const T* Cv = Cb + t * N;
            const T* at = as.data() + t * N;
            T* Gt = G.data() + t * N;
#pragma omp simd
            for (int64_t n = 0; n < N; ++n) {
              Gt[n] = dy * Cv[n] + g[n];
              g[n] = at[n] * Gt[n];
            }
          }
          // Everything else is elementwise over (t, n) plus per-t reductions.
          T* dB_b = dB_loc.data() + b * LN;
          T* dC_b = dC_loc.data() + b * LN;
          for (int64_t t = 0; t < len; ++t) {
            const T dy = dys[t];
            const T dt = dts[t];
            const T dtu = dt * ur[t];
            const T* ht = hs.data() + t * N;
            const T* at = as.data() + t * N;
            const T* Gt = G.data() + t * N;
            const T* Bv = Bb + t * N;
            T* dBv = dB_b + t * N;
            T* dCv = dC_b + t * N;
            T ddt = 0, gB = 0;
            if (t > 0) {
              const T* hp = hs.data() + (t - 1) * N;
#pragma omp simd reduction(+ : ddt, gB)
              for (int64_t n = 0; n < N; ++n) {
                dCv[n] += dy * ht[n];
                dBv[n] += Gt[n] * dtu;
                gB += Gt[n] * Bv[n];
                const T dlog = Gt[n] * hp[n] * at[n];  // d loss / d (dt * A)
                ddt += dlog * Ad[n];
                dA_acc[n] += dlog * dt;
              }
            } else {
#pragma omp simd reduction(+ : gB)
              for (int64_t n = 0; n < N; ++n) {
                dCv[n] += dy * ht[n];
                dBv[n] += Gt[n] * dtu;
                gB += Gt[n] * Bv[n];
              }
            }
            ddt += gB * ur[t];
            du_r[t] = dy * skip + gB * dt;
            dD_acc += dy * ur[t];
            dd_r[t] = ddt;
          }
          if (use_softplus) {
#pragma omp simd
            for (int64_t t = 0; t < len; ++t)
              dd_r[t] *= T(1) / (T(1) + std::exp(-(dr[t] + bias)));
          }
          for (int64_t t = 0; t < len; ++t) dbias_acc += dd_r[t];
          T* du_o = DU.data() + c * len;
          T* dd_o = DD.data() + c * len;
          T* dz_o = z ? DZ.data() + c * len : nullptr;
          if (reverse) {
            std::reverse_copy(du_r.begin(), du_r.end(), du_o);
            std::reverse_copy(dd_r.begin(), dd_r.end(), dd_o);
            if (dz_o) std::reverse_copy(dz_r.begin(), dz_r.end(), dz_o);
          } else {
            std::copy(du_r.begin(), du_r.end(), du_o);
            std::copy(dd_r.begin(), dd_r.end(), dd_o);
            if (dz_o) std::copy(dz_r.begin(), dz_r.end(), dz_o);
          }
          dD_blk[c] += dD_acc;
          db_blk[c] += dbias_acc;
        }
        scatter_rows(DU.data(), w, len, du + b * sdu.b + d0 * sdu.d, sdu.d, sdu.t);
        scatter_rows(DD.data(), w, len, ddelta + b * sdd.b + d0 * sdd.d, sdd.d, sdd.t);
        if (z) scatter_rows(DZ.data(), w, len, dz + b * sdz.b + d0 * sdz.d, sdz.d, sdz.t);
      }
      for (int64_t c = 0; c < w; ++c) {
        for (int64_t n = 0; n < N; ++n) dA[(d0 + c) * N + n] = dA_blk[c * N + n];
        if (dD) dD[d0 + c] = dD_blk[c];
        if (ddbias) ddbias[d0 + c] = db_blk[c];
      }
    }
    std::lock_guard<std::mutex> lock(merge);
    for (int64_t i = 0; i < batch * LN; ++i) {
      dBt[i] += dB_loc[i];
      dCt[i] += dC_loc[i];
    }
  });
}

void check(const torch::Tensor& t, const char* name, int64_t dims) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.dim() == dims, name, " must have ", dims, " dims, got ", t.dim());
}


// (B, D, L) with any strides.
void check_bdl(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 3, name, " must be (batch, dim, seqlen)");
}

template <typename T>
const T* opt_ptr(const c10::optional<torch::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

}  // namespace

// u, delta, z: (B, D, L) with any strides (channel-major and token-major are fast);
// the output is allocated in u's layout.
torch::Tensor selective_scan_fwd(torch::Tensor u, torch::Tensor delta, torch::Tensor A,
                                 torch::Tensor Bt, torch::Tensor Ct,
                                 c10::optional<torch::Tensor> Dv,
                                 c10::optional<torch::Tensor> z,
                                 c10::optional<torch::Tensor> dbias, bool use_softplus,
                                 bool reverse) {
  check_bdl(u, "u"); check_bdl(delta, "delta"); check(A, "A", 2);
  check(Bt, "B", 3); check(Ct, "C", 3);
  if (z.has_value()) check_bdl(*z, "z");
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2), N = A.size(1);
  TORCH_CHECK(delta.sizes() == u.sizes() && (!z.has_value() || z->sizes() == u.sizes()),
              "u, delta and z must have the same shape");
  const bool token_major = u.stride(1) == 1 && len > 1;
  auto out = token_major ? torch::empty({batch, len, dim}, u.options()).transpose(1, 2)
                         : torch::empty({batch, dim, len}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_fwd", [&] {
    auto fn = N == 16 ? scan_fwd_kernel<scalar_t, 16> : scan_fwd_kernel<scalar_t, 0>;
    fn(u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
       Bt.data_ptr<scalar_t>(), Ct.data_ptr<scalar_t>(), opt_ptr<scalar_t>(Dv),
       opt_ptr<scalar_t>(z), opt_ptr<scalar_t>(dbias), use_softplus,
       out.data_ptr<scalar_t>(), batch, dim, len, N, strides_of(u), strides_of(delta),
       z.has_value() ? strides_of(*z) : Strides{0, 0, 0}, strides_of(out), reverse);
  });
  return out;
}

// Gradients of selective_scan_fwd; du, ddelta, dz come in u's layout.
std::vector<torch::Tensor> selective_scan_bwd(
    torch::Tensor u, torch::Tensor delta, torch::Tensor A, torch::Tensor Bt,
    torch::Tensor Ct, c10::optional<torch::Tensor> Dv, c10::optional<torch::Tensor> z,
    c10::optional<torch::Tensor> dbias, bool use_softplus, bool reverse,
    torch::Tensor dout) {
  check_bdl(u, "u"); check_bdl(delta, "delta"); check_bdl(dout, "dout");
  check(A, "A", 2); check(Bt, "B", 3); check(Ct, "C", 3);
  if (z.has_value()) check_bdl(*z, "z");
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2), N = A.size(1);
  TORCH_CHECK(delta.sizes() == u.sizes() && dout.sizes() == u.sizes() &&
                  (!z.has_value() || z->sizes() == u.sizes()),
              "u, delta, z and dout must have the same shape");
  const bool token_major = u.stride(1) == 1 && len > 1;
  auto like_u = [&] {
    return token_major ? torch::empty({batch, len, dim}, u.options()).transpose(1, 2)
                       : torch::empty({batch, dim, len}, u.options());
  };
  auto du = like_u();
  auto ddelta = like_u();
  auto dA = torch::zeros_like(A);
  auto dBt = torch::zeros_like(Bt);
  auto dCt = torch::zeros_like(Ct);
  auto dD = Dv.has_value() ? torch::zeros_like(*Dv) : torch::Tensor();
  auto dz = z.has_value() ? like_u() : torch::Tensor();
  auto ddbias = dbias.has_value() ? torch::zeros_like(*dbias) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_bwd", [&] {
    auto fn = N == 16 ? scan_bwd_kernel<scalar_t, 16> : scan_bwd_kernel<scalar_t, 0>;
    fn(u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
       Bt.data_ptr<scalar_t>(), Ct.data_ptr<scalar_t>(), opt_ptr<scalar_t>(Dv),
       opt_ptr<scalar_t>(z), opt_ptr<scalar_t>(dbias), use_softplus,
       dout.data_ptr<scalar_t>(), du.data_ptr<scalar_t>(), ddelta.data_ptr<scalar_t>(),
       dA.data_ptr<scalar_t>(), dBt.data_ptr<scalar_t>(), dCt.data_ptr<scalar_t>(),
       Dv.has_value() ? dD.data_ptr<scalar_t>() : nullptr,
       z.has_value() ? dz.data_ptr<scalar_t>() : nullptr,
       dbias.has_value() ? ddbias.data_ptr<scalar_t>() : nullptr, batch, dim, len, N,
       strides_of(u), strides_of(delta), z.has_value() ? strides_of(*z) : Strides{0, 0, 0},
       strides_of(dout), strides_of(du), strides_of(ddelta),
       z.has_value() ? strides_of(dz) : Strides{0, 0, 0}, reverse);
  });
  return {du, ddelta, dA, dBt, dCt, dD, dz, ddbias};
}

torch::Tensor causal_conv1d_fwd(torch::Tensor x, torch::Tensor w,
                                c10::optional<torch::Tensor> bias, bool silu, bool reverse);
std::vector<torch::Tensor> causal_conv1d_bwd(torch::Tensor x, torch::Tensor w,
                                             c10::optional<torch::Tensor> bias, bool silu,
                                             bool reverse, torch::Tensor dout);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("selective_scan_fwd", &selective_scan_fwd, "selective scan forward (CPU)");
  m.def("selective_scan_bwd", &selective_scan_bwd, "selective scan backward (CPU)");
  m.def("causal_conv1d_fwd", &causal_conv1d_fwd, "depthwise causal conv + SiLU (CPU)");
  m.def("causal_conv1d_bwd", &causal_conv1d_bwd, "its backward (CPU)");
}
