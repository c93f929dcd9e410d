// Elementwise math shared by the CPU kernels, written so that the compiler inlines and
// vectorises it inside `#pragma omp simd` loops (no libm calls for float).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace shufflemamba {

// exp() that the compiler inlines and vectorises: range reduction to
// x = n ln2 + r, |r| <= ln2 / 2, a degree-6 polynomial for e^r and 2^n by exponent
// bits. Relative error < 3e-7 over the float range (inputs clamped to it), i.e. the
// accuracy of libm's expf. double keeps std::exp.
inline float fast_exp(float x) {
  x = std::fmin(std::fmax(x, -87.33654f), 88.72283f);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  float r = std::fma(n, -0.693359375f, x);
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.3981999507e-3f;
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p, r * r, r);
  p += 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
inline double fast_exp(double x) { return std::exp(x); }

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

// x * sigmoid(x).
inline float fast_silu(float x) { return x / (1.0f + fast_exp(-x)); }
inline double fast_silu(double x) { return x / (1.0 + std::exp(-x)); }

}  // namespace shufflemamba
