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

// x * sigmoid(x).
inline float fast_silu(float x) { return x / (1.0f + fast_exp(-x)); }
inline double fast_silu(double x) { return x / (1.0 + std::exp(-x)); }

}  // namespace shufflemamba
