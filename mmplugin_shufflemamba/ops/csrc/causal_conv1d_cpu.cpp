// Depthwise causal (or anti-causal) 1D convolution with an optional fused SiLU, CPU.
//
//   pre[b, d, t] = bias[d] + sum_j w[d, K-1-j] * x[b, d, t - s*j],  s = +1 causal,
//                                                                   s = -1 reverse
//   out = silu(pre) or pre
// Forward: x channel-major (rows contiguous; out contiguous) or token-major (channels
// contiguous; out token-major too). Backward: any layout, dx in x's layout.
//
// Compiled once per instruction-set level through isa/*.cpp (namespace
// SHUFFLEMAMBA_ISA); the arguments were checked by bindings.cpp.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_layout.h"
#include "cpu_math.h"
#include "kernel_api.h"

namespace shufflemamba {
namespace SHUFFLEMAMBA_ISA {

// Taps read zeros outside the sequence, and those zeros are multiplied like any input
// (tap * 0 is NaN for a NaN or inf tap), as in causal_conv1d_ref and causal-conv1d's CUDA
// kernel: a non-finite weight makes the whole channel non-finite.
template <typename T>
inline void conv_row(const T* xr, const T* w, T bias, int64_t len, int64_t K, bool reverse,
                     T* pre) {
  for (int64_t t = 0; t < len; ++t) pre[t] = bias;
  for (int64_t j = 0; j < K; ++j) {
    const T c = w[K - 1 - j];
    const T pad = c * T(0);  // what the tap adds where it reads the padding
    const int64_t npad = std::min(j, len);
    if (!reverse) {
      for (int64_t t = 0; t < npad; ++t) pre[t] += pad;
#pragma omp simd
      for (int64_t t = j; t < len; ++t) pre[t] += c * xr[t - j];
    } else {
      const int64_t end = len - npad;
#pragma omp simd
      for (int64_t t = 0; t < end; ++t) pre[t] += c * xr[t + j];
      for (int64_t t = end; t < len; ++t) pre[t] += pad;
    }
  }
}

template <typename T>
void conv_fwd_rows(const T* x, const T* w, const T* bias, bool silu, bool reverse,
                   T* out, int64_t batch, int64_t dim, int64_t len, int64_t K,
                   int64_t sb, int64_t sd) {
  at::parallel_for(0, batch * dim, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / dim, d = row % dim;
      T* o = out + row * len;
      conv_row(x + b * sb + d * sd, w + d * K, bias ? bias[d] : T(0), len, K, reverse, o);
      if (silu) {
#pragma omp simd
        for (int64_t t = 0; t < len; ++t) o[t] = fast_silu(o[t]);
      }
    }
  });
}

// Token-major x (channels contiguous, time stride stx) into token-major out: per step,
// all channels at once, vectorised across channels. wt: (K, dim), wt[j] the tap applied
// to x[t - s*j].
template <typename T>
void conv_fwd_tokens(const T* x, const T* wt, const T* bias, bool silu, bool reverse,
                     T* out, int64_t batch, int64_t dim, int64_t len, int64_t K,
                     int64_t sbx, int64_t stx, int64_t sbo, int64_t sto) {
  at::parallel_for(0, batch * len, 8, [&](int64_t begin, int64_t end) {
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / len, t = bt % len;
      T* o = out + b * sbo + t * sto;
      if (bias) {
        std::copy(bias, bias + dim, o);
      } else {
        std::fill(o, o + dim, T(0));
      }
      for (int64_t j = 0; j < K; ++j) {
        const int64_t tt = reverse ? t + j : t - j;
        const T* wj = wt + j * dim;
        if (tt < 0 || tt >= len) {  // the padding: tap * 0 (NaN for a non-finite tap)
#pragma omp simd
          for (int64_t d = 0; d < dim; ++d) o[d] += wj[d] * T(0);
          continue;
        }
        const T* xr = x + b * sbx + tt * stx;
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) o[d] += wj[d] * xr[d];
      }
      if (silu) {
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) o[d] = fast_silu(o[d]);
      }
    }
  });
}

// Backward on gathered blocks of 16 channel rows (x, dout and dx in any layout).
template <typename T>
void conv_bwd_kernel(const T* x, const T* w, const T* bias, bool silu, bool reverse,
                     const T* dout, T* dx, T* dw, T* dbias, int64_t batch, int64_t dim,
                     int64_t len, int64_t K, Strides sx, Strides sg, Strides sdx) {
  constexpr int64_t kRows = 16;
  const int64_t nblk = (dim + kRows - 1) / kRows;
  at::parallel_for(0, nblk, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> dpre(len), X(kRows * len), GO(kRows * len), DX(kRows * len);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t d0 = blk * kRows, nw = std::min(kRows, dim - d0);
      for (int64_t b = 0; b < batch; ++b) {
        gather_rows(x + b * sx.b + d0 * sx.d, sx.d, sx.t, nw, len, X.data());
        gather_rows(dout + b * sg.b + d0 * sg.d, sg.d, sg.t, nw, len, GO.data());
        for (int64_t c = 0; c < nw; ++c) {
          const int64_t d = d0 + c;
          const T* wd = w + d * K;
          const T* xr = X.data() + c * len;
          const T* go = GO.data() + c * len;
          if (silu) {
            conv_row(xr, wd, bias ? bias[d] : T(0), len, K, reverse, dpre.data());
#pragma omp simd
            for (int64_t t = 0; t < len; ++t) {
              const T s = T(1) / (T(1) + fast_exp(-dpre[t]));
              dpre[t] = go[t] * s * (T(1) + dpre[t] * (T(1) - s));
            }
          } else {
            std::copy(go, go + len, dpre.begin());
          }
          T* dxr = DX.data() + c * len;
          std::fill(dxr, dxr + len, T(0));
          for (int64_t j = 0; j < K; ++j) {
            const T cw = wd[K - 1 - j];
            const int64_t npad = std::min(j, len);
            T acc = 0;
            if (!reverse) {  // pre[t] uses x[t - j], zeros for t < j
              for (int64_t t = 0; t < npad; ++t) acc += dpre[t] * T(0);
#pragma omp simd reduction(+ : acc)
              for (int64_t t = j; t < len; ++t) {
                dxr[t - j] += cw * dpre[t];
                acc += dpre[t] * xr[t - j];
              }
            } else {  // pre[t] uses x[t + j], zeros for t >= len - j
              const int64_t stop = len - npad;
#pragma omp simd reduction(+ : acc)
              for (int64_t t = 0; t < stop; ++t) {
                dxr[t + j] += cw * dpre[t];
                acc += dpre[t] * xr[t + j];
              }
              for (int64_t t = stop; t < len; ++t) acc += dpre[t] * T(0);
            }
            dw[d * K + (K - 1 - j)] += acc;
          }
          if (dbias) {
            T db = 0;
#pragma omp simd reduction(+ : db)
            for (int64_t t = 0; t < len; ++t) db += dpre[t];
            dbias[d] += db;
          }
        }
        scatter_rows(DX.data(), nw, len, dx + b * sdx.b + d0 * sdx.d, sdx.d, sdx.t);
      }
    }
  });
}

template <typename T>
void conv_fwd_impl(const ConvFwdArgs<T>& a) {
  if (a.token_major) {
    conv_fwd_tokens<T>(a.x, a.wt, a.bias, a.silu, a.reverse, a.out, a.batch, a.dim, a.len,
                       a.K, a.sx.b, a.sx.t, a.sout.b, a.sout.t);
  } else {
    conv_fwd_rows<T>(a.x, a.w, a.bias, a.silu, a.reverse, a.out, a.batch, a.dim, a.len, a.K,
                     a.sx.b, a.sx.d);
  }
}

void conv_fwd(const ConvFwdArgs<float>& a) { conv_fwd_impl(a); }
void conv_fwd(const ConvFwdArgs<double>& a) { conv_fwd_impl(a); }
void conv_bwd(const ConvBwdArgs<float>& a) {
  conv_bwd_kernel<float>(a.x, a.w, a.bias, a.silu, a.reverse, a.dout, a.dx, a.dw, a.dbias,
                         a.batch, a.dim, a.len, a.K, a.sx, a.sdout, a.sdx);
}
void conv_bwd(const ConvBwdArgs<double>& a) {
  conv_bwd_kernel<double>(a.x, a.w, a.bias, a.silu, a.reverse, a.dout, a.dx, a.dw, a.dbias,
                          a.batch, a.dim, a.len, a.K, a.sx, a.sdout, a.sdx);
}

}  // namespace SHUFFLEMAMBA_ISA
}  // namespace shufflemamba
