// Elementwise math shared by the CPU kernels, written so that the compiler inlines and
// vectorises it inside `#pragma omp simd` loops (no libm calls for float).
//
// IEEE special values behave like PyTorch's own functions (the reference path): NaN in,
// NaN out; exp(+inf) = inf, exp(-inf) = 0, softplus(-inf) = 0, silu(-inf) = NaN. The
// kernels are built without -ffast-math (see build_flags.py), so these comparisons and
// products are compiled as written; std::fmin / fmax would turn NaN into the bound, and
// a NaN time step into a finite one (see clamp_keep_nan).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernel_api.h"

namespace shufflemamba {
namespace SHUFFLEMAMBA_ISA {

// a * b + c, fused where the target has FMA (x86-64-v3 and up, aarch64): std::fma
// without hardware FMA is a slow library call that does not vectorise. The polynomials
// below are accurate either way (the Cody-Waite products n * ln2_hi are exact).
inline float mul_add(float a, float b, float c) {
#if defined(__FMA__) || defined(__aarch64__) || defined(__ARM_FEATURE_FMA)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// x rounded to an integer (halves up) for -256 < x < 2^22, by a truncating conversion
// (cvttps2dq, which every x86-64 and aarch64 vectorises; SSE2 has no vector rounding).
// Off by one from the nearest integer only within 2^-15 of a half, where the range
// reduction works either way. A NaN x gives some integer (x86: 0x80000000 - 256), which
// the callers only use for a scale factor that the NaN in r overrides; the arithmetic
// is unsigned, so nothing overflows.
inline int32_t round_to_int(float x) {
  const uint32_t t = static_cast<uint32_t>(static_cast<int32_t>(x + 256.5f));
  return static_cast<int32_t>(t - 256u);
}

inline float bits_to_float(int32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Clamp to [lo, hi] that keeps NaN: (lo > x ? lo : x) is maxps(lo, x), which returns
// its second operand, x, when x is NaN; likewise minps(hi, .). (Auto-vectorised without
// -ffinite-math-only, GCC emits compares and blends for it; the AVX2 and AVX-512
// recurrences use the instructions directly.)
inline float clamp_keep_nan(float x, float lo, float hi) {
  x = lo > x ? lo : x;
  return hi < x ? hi : x;
}

// 2^n for an integer n in [-127, 128] from exponent bits: 2^-127 gives the bits of 0.0
// (results below the normal range flush to 0) and 2^128 those of inf (overflow).
inline float pow2i(int32_t n) {
  return bits_to_float(static_cast<int32_t>((static_cast<uint32_t>(n) + 127u) << 23));
}

// exp() that the compiler inlines and vectorises: range reduction to
// x = n ln2 + r, |r| <= ln2 / 2, a degree-6 polynomial for e^r and 2^n by exponent
// bits. Relative error < 3e-7 over the normal float range, i.e. the accuracy of libm's
// expf. Special values like expf: exp(NaN) = NaN (through r), exp(-inf) = 0 (n = -127),
// exp(+inf) = inf (n = 128); results below the smallest normal float flush to 0.
inline float fast_exp(float x) {
  constexpr float lo = -88.0296919f, hi = 88.7228391f;  // -127 ln2, 128 ln2
  const float xr = clamp_keep_nan(x, lo, hi);
  const int32_t ni = round_to_int(xr * 1.44269504088896341f);
  const float n = static_cast<float>(ni);
  float r = mul_add(n, -0.693359375f, xr);
  r = mul_add(n, 2.12194440e-4f, r);
  float p = 1.3981999507e-3f;
  p = mul_add(p, r, 8.3334519073e-3f);
  p = mul_add(p, r, 4.1665795894e-2f);
  p = mul_add(p, r, 1.6666665459e-1f);
  p = mul_add(p, r, 5.0000001201e-1f);
  p = mul_add(p, r * r, r);
  p += 1.0f;
  return p * pow2i(ni);
}
inline double fast_exp(double x) { return std::exp(x); }

// 2^x, inlined and vectorised like fast_exp: n = round(x), r = x - n, a degree-6
// polynomial for 2^r (Taylor, relative error 1.3e-7, exact at x = 0). Same special
// values as fast_exp.
inline float fast_exp2(float x) {
  constexpr float lo = -127.0f, hi = 128.0f;
  const float xr = clamp_keep_nan(x, lo, hi);
  const int32_t ni = round_to_int(xr);
  const float r = xr - static_cast<float>(ni);
  float p = 1.5403530393e-4f;
  p = mul_add(p, r, 1.3333558146e-3f);
  p = mul_add(p, r, 9.6181291076e-3f);
  p = mul_add(p, r, 5.5504108665e-2f);
  p = mul_add(p, r, 2.4022650696e-1f);
  p = mul_add(p, r, 6.9314718056e-1f);
  p = mul_add(p, r, 1.0f);
  return p * pow2i(ni);
}
inline double fast_exp2(double x) { return std::exp2(x); }

// softplus(x) = max(x, 0) + log1p(e), e = exp(-|x|) in [0, 1], with
// log1p(e) = 2 atanh(s), s = e / (2 + e) in [0, 1/3] (series to s^13: relative error
// 1.4e-8; s keeps the full relative precision of small e). Inlined and vectorised.
// softplus(+inf) = inf, softplus(-inf) = 0, softplus(NaN) = NaN.
inline float fast_softplus(float x) {
  const float e = fast_exp(-std::fabs(x));
  const float s = e / (2.0f + e);
  const float s2 = s * s;
  float p = 1.0f / 13;
  p = mul_add(p, s2, 1.0f / 11);
  p = mul_add(p, s2, 1.0f / 9);
  p = mul_add(p, s2, 1.0f / 7);
  p = mul_add(p, s2, 1.0f / 5);
  p = mul_add(p, s2, 1.0f / 3);
  p = mul_add(p, s2, 1.0f);
  const float pos = x < 0.0f ? 0.0f : x;  // max(x, 0) that keeps NaN
  return pos + 2.0f * s * p;
}
// PyTorch's softplus (threshold 20): NaN and +-inf as above.
inline double fast_softplus(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }

// x * sigmoid(x) as x / (1 + exp(-x)), the way PyTorch computes it: silu(-inf) = NaN.
inline float fast_silu(float x) { return x / (1.0f + fast_exp(-x)); }
inline double fast_silu(double x) { return x / (1.0 + std::exp(-x)); }

}  // namespace SHUFFLEMAMBA_ISA
}  // namespace shufflemamba
