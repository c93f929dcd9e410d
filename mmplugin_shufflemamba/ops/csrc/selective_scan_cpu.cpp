// Selective scan (Mamba S6 recurrence) on the CPU: forward and backward.
//
// Work is split by (batch, channel) rows, rows in parallel on ATen's thread pool. Per
// row, everything that has no loop-carried dependency is done in long vectorised loops
// (softplus of dt, the decays exp(dt * A) for a block of time steps, the C
// contractions, the gate), so that the sequential part is one fused multiply-add per
// state and time step. The backward recomputes a row's states into per-thread buffers
// instead of storing (B, D, L, N) tensors, like the fused CUDA kernel.
//
// Layouts: u, delta, z, out: (B, D, L); A: (D, N); Bt, Ct: (B, L, N) (time-major).
// reverse=true scans from the last time step to the first (Bt, Ct then come in reversed
// time order, dBt and dCt are returned in that order), i.e. the backward direction of
// the bidirectional mixer without flipped copies of u, delta and z.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

namespace {

constexpr int64_t kBlock = 64;  // time steps per block of precomputed decays

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

template <typename T, int NC>
void scan_fwd_kernel(const T* u, const T* delta, const T* A, const T* Bt, const T* Ct,
                     const T* Dv, const T* z, const T* dbias, bool use_softplus,
                     T* out, int64_t batch, int64_t dim, int64_t len, int64_t N_rt,
                     int64_t sb_u, int64_t sd_u, int64_t sb_delta, int64_t sd_delta,
                     int64_t sb_z, int64_t sd_z, bool reverse) {
  const int64_t N = NC > 0 ? NC : N_rt;  // compile-time for the usual d_state
  at::parallel_for(0, batch * dim, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> h(N), dts(len), a(kBlock * N), hs(kBlock * N);
    std::vector<T> ubuf(reverse ? len : 0), dbuf(reverse ? len : 0),
        zbuf(reverse && z ? len : 0), obuf(reverse ? len : 0);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / dim, d = row % dim;
      const T* ur = u + b * sb_u + d * sd_u;
      const T* dr = delta + b * sb_delta + d * sd_delta;
      const T* zr = z ? z + b * sb_z + d * sd_z : nullptr;
      T* o = out + row * len;
      if (reverse) {  // run on the time-reversed row (B and C come reversed already)
        std::reverse_copy(ur, ur + len, ubuf.begin());
        std::reverse_copy(dr, dr + len, dbuf.begin());
        ur = ubuf.data();
        dr = dbuf.data();
        if (zr) {
          std::reverse_copy(zr, zr + len, zbuf.begin());
          zr = zbuf.data();
        }
        o = obuf.data();
      }
      const T* Ad = A + d * N;
      const T* Bb = Bt + b * len * N;
      const T* Cb = Ct + b * len * N;
      const T skip = Dv ? Dv[d] : T(0);
      row_dt(dr, dbias ? dbias[d] : T(0), use_softplus, len, dts.data());
      std::fill(h.begin(), h.end(), T(0));
      for (int64_t t0 = 0; t0 < len; t0 += kBlock) {
        const int64_t cnt = std::min(kBlock, len - t0);
        decays<T, NC>(dts.data() + t0, Ad, cnt, N, a.data());
        recurrence<T, NC>(a.data(), dts.data() + t0, ur + t0, Bb + t0 * N, cnt, N, h.data(),
                   hs.data());
        for (int64_t i = 0; i < cnt; ++i)
          o[t0 + i] = dot<T, NC>(hs.data() + i * N, Cb + (t0 + i) * N, N);
      }
      if (zr) {
#pragma omp simd
        for (int64_t t = 0; t < len; ++t)
          o[t] = (o[t] + skip * ur[t]) * zr[t] / (T(1) + std::exp(-zr[t]));
      } else {
#pragma omp simd
        for (int64_t t = 0; t < len; ++t) o[t] += skip * ur[t];
      }
      if (reverse) std::reverse_copy(o, o + len, out + row * len);
    }
  });
}

template <typename T, int NC>
void scan_bwd_kernel(const T* u, const T* delta, const T* A, const T* Bt, const T* Ct,
                     const T* Dv, const T* z, const T* dbias, bool use_softplus,
                     const T* dout, T* du, T* ddelta, T* dA, T* dBt, T* dCt, T* dD,
                     T* dz, T* ddbias, int64_t batch, int64_t dim, int64_t len,
                     int64_t N_rt, int64_t sb_u, int64_t sd_u, int64_t sb_delta,
                     int64_t sd_delta, int64_t sb_z, int64_t sd_z, bool reverse) {
  const int64_t N = NC > 0 ? NC : N_rt;  // compile-time for the usual d_state
  std::mutex merge;
  // Parallel over channels: dA, dD, ddbias of a channel belong to one thread; dB and
  // dC (sums over channels) are accumulated per thread and merged at the end.
  at::parallel_for(0, dim, 1, [&](int64_t begin, int64_t end) {
    const int64_t LN = len * N;
    std::vector<T> hs(LN), as(LN), G(LN), dts(len), dys(len), h(N), g(N);
    // Row buffers: time-reversed inputs (reverse mode) and the row's gradients.
    std::vector<T> ubuf(len), dbuf(len), zbuf(z ? len : 0), gobuf(len);
    std::vector<T> du_r(len), dd_r(len), dz_r(z ? len : 0);
    std::vector<T> dB_loc(batch * LN, T(0)), dC_loc(batch * LN, T(0)), dA_acc(N);
    for (int64_t d = begin; d < end; ++d) {
      const T* Ad = A + d * N;
      const T bias = dbias ? dbias[d] : T(0);
      const T skip = Dv ? Dv[d] : T(0);
      std::fill(dA_acc.begin(), dA_acc.end(), T(0));
      T dD_acc = 0, dbias_acc = 0;
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t row = b * dim + d;
        const T* ur = u + b * sb_u + d * sd_u;
        const T* dr = delta + b * sb_delta + d * sd_delta;
        const T* zr = z ? z + b * sb_z + d * sd_z : nullptr;
        const T* go = dout + row * len;
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
        T* du_o = du + row * len;
        T* dd_o = ddelta + row * len;
        T* dz_o = z ? dz + row * len : nullptr;
        if (reverse) {
          std::reverse_copy(du_r.begin(), du_r.end(), du_o);
          std::reverse_copy(dd_r.begin(), dd_r.end(), dd_o);
          if (dz_o) std::reverse_copy(dz_r.begin(), dz_r.end(), dz_o);
        } else {
          std::copy(du_r.begin(), du_r.end(), du_o);
          std::copy(dd_r.begin(), dd_r.end(), dd_o);
          if (dz_o) std::copy(dz_r.begin(), dz_r.end(), dz_o);
        }
      }
      for (int64_t n = 0; n < N; ++n) dA[d * N + n] = dA_acc[n];
      if (dD) dD[d] = dD_acc;
      if (ddbias) ddbias[d] = dbias_acc;
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

// (B, D, L) tensors may have any batch and channel strides; rows must be contiguous.
void check_rows(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 3, name, " must be (batch, dim, seqlen)");
  TORCH_CHECK(t.size(2) == 1 || t.stride(2) == 1, name,
              " must have contiguous rows (stride 1 along seqlen)");
}

template <typename T>
const T* opt_ptr(const c10::optional<torch::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

}  // namespace

torch::Tensor selective_scan_fwd(torch::Tensor u, torch::Tensor delta, torch::Tensor A,
                                 torch::Tensor Bt, torch::Tensor Ct,
                                 c10::optional<torch::Tensor> Dv,
                                 c10::optional<torch::Tensor> z,
                                 c10::optional<torch::Tensor> dbias, bool use_softplus,
                                 bool reverse) {
  check_rows(u, "u"); check_rows(delta, "delta"); check(A, "A", 2);
  check(Bt, "B", 3); check(Ct, "C", 3);
  if (z.has_value()) check_rows(*z, "z");
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2), N = A.size(1);
  auto out = torch::empty({batch, dim, len}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_fwd", [&] {
    auto fn = N == 16 ? scan_fwd_kernel<scalar_t, 16> : scan_fwd_kernel<scalar_t, 0>;
    fn(
        u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
        Bt.data_ptr<scalar_t>(), Ct.data_ptr<scalar_t>(), opt_ptr<scalar_t>(Dv),
        opt_ptr<scalar_t>(z), opt_ptr<scalar_t>(dbias), use_softplus,
        out.data_ptr<scalar_t>(), batch, dim, len, N, u.stride(0), u.stride(1),
        delta.stride(0), delta.stride(1), z.has_value() ? z->stride(0) : 0,
        z.has_value() ? z->stride(1) : 0, reverse);
  });
  return out;
}

std::vector<torch::Tensor> selective_scan_bwd(
    torch::Tensor u, torch::Tensor delta, torch::Tensor A, torch::Tensor Bt,
    torch::Tensor Ct, c10::optional<torch::Tensor> Dv, c10::optional<torch::Tensor> z,
    c10::optional<torch::Tensor> dbias, bool use_softplus, bool reverse,
    torch::Tensor dout) {
  check_rows(u, "u"); check_rows(delta, "delta"); check(dout, "dout", 3);
  if (z.has_value()) check_rows(*z, "z");
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2), N = A.size(1);
  auto du = torch::empty({batch, dim, len}, u.options());
  auto ddelta = torch::empty({batch, dim, len}, u.options());
  auto dA = torch::zeros_like(A);
  auto dBt = torch::zeros_like(Bt);
  auto dCt = torch::zeros_like(Ct);
  auto dD = Dv.has_value() ? torch::zeros_like(*Dv) : torch::Tensor();
  auto dz = z.has_value() ? torch::empty({batch, dim, len}, u.options()) : torch::Tensor();
  auto ddbias = dbias.has_value() ? torch::zeros_like(*dbias) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_bwd", [&] {
    auto fn = N == 16 ? scan_bwd_kernel<scalar_t, 16> : scan_bwd_kernel<scalar_t, 0>;
    fn(
        u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
        Bt.data_ptr<scalar_t>(), Ct.data_ptr<scalar_t>(), opt_ptr<scalar_t>(Dv),
        opt_ptr<scalar_t>(z), opt_ptr<scalar_t>(dbias), use_softplus,
        dout.data_ptr<scalar_t>(), du.data_ptr<scalar_t>(), ddelta.data_ptr<scalar_t>(),
        dA.data_ptr<scalar_t>(), dBt.data_ptr<scalar_t>(), dCt.data_ptr<scalar_t>(),
        Dv.has_value() ? dD.data_ptr<scalar_t>() : nullptr,
        z.has_value() ? dz.data_ptr<scalar_t>() : nullptr,
        dbias.has_value() ? ddbias.data_ptr<scalar_t>() : nullptr, batch, dim, len, N,
        u.stride(0), u.stride(1), delta.stride(0), delta.stride(1),
        z.has_value() ? z->stride(0) : 0, z.has_value() ? z->stride(1) : 0, reverse);
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
