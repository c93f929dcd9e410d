// Depthwise causal (or anti-causal) 1D convolution with an optional fused SiLU, CPU.
//
//   pre[b, d, t] = bias[d] + sum_j w[d, K-1-j] * x[b, d, t - s*j],  s = +1 causal,
//                                                                   s = -1 reverse
//   out = silu(pre) or pre
// Forward: x channel-major (rows contiguous; out contiguous) or token-major (channels
// contiguous; out token-major too). Backward: any layout, dx in x's layout.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "cpu_layout.h"
#include "cpu_math.h"

namespace {

using shufflemamba::fast_silu;
using shufflemamba::gather_rows;
using shufflemamba::Strides;
using shufflemamba::strides_of;
using shufflemamba::scatter_rows;

template <typename T>
inline void conv_row(const T* xr, const T* w, T bias, int64_t len, int64_t K, bool reverse,
                     T* pre) {
  for (int64_t t = 0; t < len; ++t) pre[t] = bias;
  for (int64_t j = 0; j < K; ++j) {
    const T c = w[K - 1 - j];
    if (!reverse) {
#pragma omp simd
      for (int64_t t = j; t < len; ++t) pre[t] += c * xr[t - j];
    } else {
      const int64_t end = len - j;
#pragma omp simd
      for (int64_t t = 0; t < end; ++t) pre[t] += c * xr[t + j];
    }
  }
}

template <typename T>
void conv_fwd(const T* x, const T* w, const T* bias, bool silu, bool reverse, T* out,
              int64_t batch, int64_t dim, int64_t len, int64_t K, int64_t sb, int64_t sd) {
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
        if (tt < 0 || tt >= len) continue;
        const T* xr = x + b * sbx + tt * stx;
        const T* wj = wt + j * dim;
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
void conv_bwd(const T* x, const T* w, const T* bias, bool silu, bool reverse,
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
              const T s = T(1) / (T(1) + std::exp(-dpre[t]));
              dpre[t] = go[t] * s * (T(1) + dpre[t] * (T(1) - s));
            }
          } else {
            std::copy(go, go + len, dpre.begin());
          }
          T* dxr = DX.data() + c * len;
          std::fill(dxr, dxr + len, T(0));
          for (int64_t j = 0; j < K; ++j) {
            const T cw = wd[K - 1 - j];
            T acc = 0;
            if (!reverse) {  // pre[t] uses x[t - j]
#pragma omp simd reduction(+ : acc)
              for (int64_t t = j; t < len; ++t) {
                dxr[t - j] += cw * dpre[t];
                acc += dpre[t] * xr[t - j];
              }
            } else {  // pre[t] uses x[t + j]
              const int64_t stop = len - j;
#pragma omp simd reduction(+ : acc)
              for (int64_t t = 0; t < stop; ++t) {
                dxr[t + j] += cw * dpre[t];
                acc += dpre[t] * xr[t + j];
              }
            }
            dw[d * K + (K - 1 - j)] += acc;
          }
          if (dbias) {
            T db = 0;
            for (int64_t t = 0; t < len; ++t) db += dpre[t];
            dbias[d] += db;
          }
        }
        scatter_rows(DX.data(), nw, len, dx + b * sdx.b + d0 * sdx.d, sdx.d, sdx.t);
      }
    }
  });
}

void check_rows(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 3, name, " must be (batch, dim, seqlen)");
  TORCH_CHECK(t.size(2) == 1 || t.stride(2) == 1, name, " must have contiguous rows");
}

}  // namespace

torch::Tensor causal_conv1d_fwd(torch::Tensor x, torch::Tensor w,
                                c10::optional<torch::Tensor> bias, bool silu,
                                bool reverse) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3,
              "x must be a (batch, dim, seqlen) CPU tensor");
  TORCH_CHECK(w.is_contiguous() && w.dim() == 2,
              "weight must be a contiguous (dim, width)");
  const int64_t batch = x.size(0), dim = x.size(1), len = x.size(2), K = w.size(1);
  TORCH_CHECK(w.size(0) == dim, "weight must have one row per channel");
  if (x.stride(1) == 1 && len > 1 && dim > 1) {  // token-major in, token-major out
    auto out = torch::empty({batch, len, dim}, x.options());
    auto wt = w.flip(1).t().contiguous();  // (K, dim): tap j applies to x[t - s*j]
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv1d_fwd", [&] {
      conv_fwd_tokens<scalar_t>(x.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(),
                                bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr,
                                silu, reverse, out.data_ptr<scalar_t>(), batch, dim, len,
                                K, x.stride(0), x.stride(2), out.stride(0), out.stride(1));
    });
    return out.transpose(1, 2);
  }
  check_rows(x, "x");
  auto out = torch::empty({batch, dim, len}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv1d_fwd", [&] {
    conv_fwd<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                       bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr, silu,
                       reverse, out.data_ptr<scalar_t>(), batch, dim, len, K,
                       x.stride(0), x.stride(1));
  });
  return out;
}

// Gradients of causal_conv1d_fwd; dx comes in x's layout.
std::vector<torch::Tensor> causal_conv1d_bwd(torch::Tensor x, torch::Tensor w,
                                             c10::optional<torch::Tensor> bias, bool silu,
                                             bool reverse, torch::Tensor dout) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3,
              "x must be a (batch, dim, seqlen) CPU tensor");
  TORCH_CHECK(dout.sizes() == x.sizes(), "dout must have the shape of x");
  const int64_t batch = x.size(0), dim = x.size(1), len = x.size(2), K = w.size(1);
  const bool token_major = x.stride(1) == 1 && len > 1;
  auto dx = token_major ? torch::empty({batch, len, dim}, x.options()).transpose(1, 2)
                        : torch::empty({batch, dim, len}, x.options());
  auto dw = torch::zeros_like(w);
  auto db = bias.has_value() ? torch::zeros_like(*bias) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv1d_bwd", [&] {
    conv_bwd<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                       bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr, silu,
                       reverse, dout.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(),
                       dw.data_ptr<scalar_t>(),
                       bias.has_value() ? db.data_ptr<scalar_t>() : nullptr, batch, dim,
                       len, K, strides_of(x), strides_of(dout), strides_of(dx));
  });
  return {dx, dw, db};
}
