// Memory layout helpers shared by the CPU kernels: (B, D, L) tensors come channel-major
// (rows contiguous) or token-major (channels contiguous, the (B, L, D) memory that
// projections produce); the row-wise kernels gather blocks of up to 16 channel rows.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace shufflemamba {

// Strides (batch, channel, time) of a (B, D, L) tensor.
struct Strides {
  int64_t b, d, t;
};
template <typename Tensor>
Strides strides_of(const Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2)};
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// r[i][j] -> r[j][i]: 32-bit, then 64-bit interleaves, then two rounds of 128-bit lane
// shuffles.
inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // r[4i + m], 128-bit lane L: column 4L + m, rows 4i..
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
  }
  for (int m = 0; m < 4; ++m) {  // gather lane L of r[m], r[4 + m], ... into column 4L + m
    const __m512 s0 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x44);
    const __m512 s1 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xEE);
    const __m512 s2 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x44);
    const __m512 s3 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xEE);
    t[m] = _mm512_shuffle_f32x4(s0, s2, 0x88);
    t[4 + m] = _mm512_shuffle_f32x4(s0, s2, 0xDD);
    t[8 + m] = _mm512_shuffle_f32x4(s1, s3, 0x88);
    t[12 + m] = _mm512_shuffle_f32x4(s1, s3, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

#endif

// Rows of a block of w <= 16 channels: rows[c * len + t] = src[c * sd + t * st]
// (gather) and its inverse (scatter). Contiguous rows: copies; contiguous channels
// (token-major): 16 x 16 register transposes with AVX-512; otherwise element-wise.
template <typename T>
void gather_rows_scalar(const T* src, int64_t sd, int64_t st, int64_t w, int64_t len,
                        T* rows) {
  for (int64_t t = 0; t < len; ++t)
    for (int64_t c = 0; c < w; ++c) rows[c * len + t] = src[c * sd + t * st];
}
template <typename T>
void scatter_rows_scalar(const T* rows, int64_t w, int64_t len, T* dst, int64_t sd,
                         int64_t st) {
  for (int64_t t = 0; t < len; ++t)
    for (int64_t c = 0; c < w; ++c) dst[c * sd + t * st] = rows[c * len + t];
}

template <typename T>
void gather_rows(const T* src, int64_t sd, int64_t st, int64_t w, int64_t len, T* rows) {
  if (st == 1) {
    for (int64_t c = 0; c < w; ++c) std::copy(src + c * sd, src + c * sd + len, rows + c * len);
  } else {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    if constexpr (std::is_same_v<T, float>) {
      if (sd == 1) {
        const __mmask16 lanes = static_cast<__mmask16>((1u << w) - 1u);
        for (int64_t t0 = 0; t0 < len; t0 += 16) {
          const int64_t m = std::min<int64_t>(16, len - t0);
          const __mmask16 steps = static_cast<__mmask16>((1u << m) - 1u);
          __m512 r[16];
          for (int64_t j = 0; j < 16; ++j)
            r[j] = j < m ? _mm512_maskz_loadu_ps(lanes, src + (t0 + j) * st)
                         : _mm512_setzero_ps();
          transpose16x16(r);
          for (int64_t c = 0; c < w; ++c) _mm512_mask_storeu_ps(rows + c * len + t0, steps, r[c]);
        }
        return;
      }
    }
#endif
    gather_rows_scalar(src, sd, st, w, len, rows);
  }
}

template <typename T>
void scatter_rows(const T* rows, int64_t w, int64_t len, T* dst, int64_t sd, int64_t st) {
  if (st == 1) {
    for (int64_t c = 0; c < w; ++c) std::copy(rows + c * len, rows + (c + 1) * len, dst + c * sd);
  } else {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    if constexpr (std::is_same_v<T, float>) {
      if (sd == 1) {
        const __mmask16 lanes = static_cast<__mmask16>((1u << w) - 1u);
        for (int64_t t0 = 0; t0 < len; t0 += 16) {
          const int64_t m = std::min<int64_t>(16, len - t0);
          const __mmask16 steps = static_cast<__mmask16>((1u << m) - 1u);
          __m512 r[16];
          for (int64_t c = 0; c < 16; ++c)
            r[c] = c < w ? _mm512_maskz_loadu_ps(steps, rows + c * len + t0)
                         : _mm512_setzero_ps();
          transpose16x16(r);
          for (int64_t j = 0; j < m; ++j) _mm512_mask_storeu_ps(dst + (t0 + j) * st, lanes, r[j]);
        }
        return;
      }
    }
#endif
    scatter_rows_scalar(rows, w, len, dst, sd, st);
  }
}

}  // namespace shufflemamba
