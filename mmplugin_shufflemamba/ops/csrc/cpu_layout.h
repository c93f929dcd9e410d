// Memory layout helpers shared by the CPU kernels: (B, D, L) tensors come channel-major
// (rows contiguous) or token-major (channels contiguous, the (B, L, D) memory that
// projections produce); the row-wise kernels gather blocks of up to 16 channel rows.
// Compiled once per instruction-set level, like everything in the kernel translation
// units: the code lives in the namespace SHUFFLEMAMBA_ISA (see kernel_api.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "kernel_api.h"

namespace shufflemamba {
namespace SHUFFLEMAMBA_ISA {

// Offset of element (bi, di, ti) of a (B, D, L) tensor with strides s.
inline int64_t offset(const Strides& s, int64_t bi, int64_t di, int64_t ti) {
  return bi * s.b + di * s.d + ti * s.t;
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

// d[k * ld_d + r] = s[r * ld_s + k] for r < rows, k < cols (rows, cols <= 16): a block
// of a matrix transposed. float with AVX-512: masked loads, a register transpose, masked
// stores; otherwise element by element.
template <typename T>
inline void transpose_tile(const T* s, int64_t ld_s, int64_t rows, int64_t cols, T* d,
                           int64_t ld_d) {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
  if constexpr (std::is_same_v<T, float>) {
    const __mmask16 col_mask = static_cast<__mmask16>((1u << cols) - 1u);
    const __mmask16 row_mask = static_cast<__mmask16>((1u << rows) - 1u);
    __m512 r[16];
    for (int64_t i = 0; i < 16; ++i)
      r[i] = i < rows ? _mm512_maskz_loadu_ps(col_mask, s + i * ld_s) : _mm512_setzero_ps();
    transpose16x16(r);
    for (int64_t k = 0; k < cols; ++k) _mm512_mask_storeu_ps(d + k * ld_d, row_mask, r[k]);
    return;
  }
#endif
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) d[k * ld_d + r] = s[r * ld_s + k];
}

// Rows of a block of w <= 16 channels of a (D, L) slab with strides (sd, st):
// rows[c * len + t] = src[c * sd + t * st] (gather) and the inverse (scatter).
template <typename T>
void gather_rows(const T* src, int64_t sd, int64_t st, int64_t w, int64_t len, T* rows) {
  if (st == 1) {
    for (int64_t c = 0; c < w; ++c)
      std::copy(src + c * sd, src + c * sd + len, rows + c * len);
  } else if (sd == 1) {  // token-major: (time, channel) blocks transposed
    for (int64_t t0 = 0; t0 < len; t0 += 16)
      transpose_tile(src + t0 * st, st, std::min<int64_t>(16, len - t0), w, rows + t0, len);
  } else {
    for (int64_t t = 0; t < len; ++t)
      for (int64_t c = 0; c < w; ++c) rows[c * len + t] = src[c * sd + t * st];
  }
}

template <typename T>
void scatter_rows(const T* rows, int64_t w, int64_t len, T* dst, int64_t sd, int64_t st) {
  if (st == 1) {
    for (int64_t c = 0; c < w; ++c)
      std::copy(rows + c * len, rows + (c + 1) * len, dst + c * sd);
  } else if (sd == 1) {
    for (int64_t t0 = 0; t0 < len; t0 += 16)
      transpose_tile(rows + t0, len, w, std::min<int64_t>(16, len - t0), dst + t0 * st, st);
  } else {
    for (int64_t t = 0; t < len; ++t)
      for (int64_t c = 0; c < w; ++c) dst[c * sd + t * st] = rows[c * len + t];
  }
}

}  // namespace SHUFFLEMAMBA_ISA
}  // namespace shufflemamba
