// Selective scan (Mamba S6 recurrence) on the CPU: forward and backward.
//
// Channels are processed in blocks of 16, one SIMD lane per channel, so that the
// recurrence h[n] = exp(dt A[:, n]) h[n] + dt u B[n] runs across lanes with N
// independent dependency chains and no horizontal reductions; time goes in tiles of 64
// steps whose inputs are loaded into L1-resident lane tiles (register transposes for
// channel-major tensors, plain copies for token-major ones). The backward recomputes the
// states from per-tile checkpoints instead of storing (B, D, L, N) tensors, like the
// fused CUDA kernel. Blocks run in parallel on ATen's thread pool.
//
// Layouts: u, delta, z, dout and the (B, D, L) outputs: any strides (the outputs take
// u's layout); A: (D, N); Bt, Ct: (B, L, N) (time-major).
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
using shufflemamba::fast_exp2;
using shufflemamba::fast_softplus;
using shufflemamba::fast_silu;
using shufflemamba::Strides;
using shufflemamba::strides_of;
using shufflemamba::transpose_tile;

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
  const T* src = x + s.offset(b, d0, t0);
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
  T* dst = x + s.offset(b, d0, t0);
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

// Lane tiles (time order) of one block and tile, for bwd_adjoint.
template <typename T>
struct BwdTile {
  const T *raw, *dt, *du, *u, *z, *go;  // inputs; z may be null
  T *gu, *gdelta, *gz;                   // gradients out (gz unused without z)
};

// The adjoint through a tile (steps in reverse scan order). g (N, kLanes): carried
// a[k+1] G[k+1]; dA, dD, dbias: lane accumulators; dBk, dCk: (cnt, N) in scan order.
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
    T dy[kLanes];
#pragma omp simd
    for (int64_t c = 0; c < kLanes; ++c) dy[c] = skip[c] * uj[c];
    for (int64_t n = 0; n < N; ++n) {
      const T cn = Ck[k * N + n];
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) dy[c] += hk[n * kLanes + c] * cn;
    }
    if (tl.z) {
      const T* zj = tl.z + j;
      T* gzj = tl.gz + j;
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) {
        const T s = T(1) / (T(1) + fast_exp(-zj[c]));
        gzj[c] = goj[c] * dy[c] * s * (T(1) + zj[c] * (T(1) - s));
        dy[c] = goj[c] * zj[c] * s;
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) dy[c] = goj[c];
    }
    T ddt[kLanes] = {}, gB[kLanes] = {};
    for (int64_t n = 0; n < N; ++n) {
      const T cn = Ck[k * N + n], bn = Bk[k * N + n];
      T* gn = g + n * kLanes;
      T* dAn = dA + n * kLanes;
      const T* Ann = An + n * kLanes;
      const T* hkn = hk + n * kLanes;
      const T* hpn = hp + n * kLanes;
      const T* akn = ak + n * kLanes;
      T sB = 0, sC = 0;
#pragma omp simd reduction(+ : sB, sC)
      for (int64_t c = 0; c < kLanes; ++c) {
        const T G = dy[c] * cn + gn[c];
        const T dlog = G * hpn[c] * akn[c];  // d loss / d (dt A)
        sC += dy[c] * hkn[c];
        sB += G * duj[c];
        gB[c] += G * bn;
        ddt[c] += dlog * Ann[c];
        dAn[c] += dlog * dtj[c];
        gn[c] = akn[c] * G;
      }
      dBk[k * N + n] += sB;
      dCk[k * N + n] += sC;
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
                    T* dz, T* ddbias, int64_t batch, int64_t dim, int64_t len,
                    int64_t N_rt, Strides su, Strides sdl, Strides sz, Strides sg,
                    Strides sdu, Strides sdd, Strides sdz, bool reverse) {
  const int64_t N = NC > 0 ? NC : N_rt;  // compile-time for the usual d_state
  const int64_t nblk = (dim + kLanes - 1) / kLanes;
  const int64_t ntiles = (len + kChunk - 1) / kChunk;
  const int64_t NL = N * kLanes;
  std::mutex merge;
  at::parallel_for(0, nblk, 1, [&](int64_t begin, int64_t end) {
    constexpr int64_t kTile = kChunk * kLanes;
    std::vector<T> raw(kTile), dtl(kTile), ul(kTile), zl(kTile), gol(kTile);
    std::vector<T> dul(kTile), gdu(kTile), gdd(kTile), gdz(kTile);
    std::vector<T> Hck(ntiles * NL), Ht((kChunk + 1) * NL), At(kChunk * NL), g(NL);
    std::vector<T> A2(NL), An(NL), bias(kLanes), skip(kLanes);
    std::vector<T> dA_acc(NL), dD_acc(kLanes), db_acc(kLanes);
    std::vector<T> dB_loc(batch * len * N, T(0)), dC_loc(batch * len * N, T(0));
    const BwdTile<T> tl{raw.data(), dtl.data(), dul.data(), ul.data(),
                        z ? zl.data() : nullptr, gol.data(), gdu.data(), gdd.data(),
                        gdz.data()};
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
    auto fn = N == 16 ? scan_bwd_lanes<scalar_t, 16> : scan_bwd_lanes<scalar_t, 0>;
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
