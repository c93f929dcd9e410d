// Selective scan (Mamba S6 recurrence) on the CPU: forward and backward.
//
// One (batch, channel) row at a time with the state vector in registers, rows in
// parallel (ATen's thread pool). The backward recomputes the row's states into a small
// per-thread buffer instead of storing (B, D, L, N) tensors, like the fused CUDA kernel.
// Layouts: u, delta, z, out: (B, D, L); A: (D, N); Bt, Ct: (B, L, N) (time-major).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <mutex>
#include <vector>

namespace {

// dt[t] = softplus(delta[t] + bias) over a whole row (vectorised: no loop-carried work).
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

template <typename T>
void scan_fwd_kernel(const T* u, const T* delta, const T* A, const T* Bt, const T* Ct,
                     const T* Dv, const T* z, const T* dbias, bool use_softplus,
                     T* out, int64_t batch, int64_t dim, int64_t len, int64_t N) {
  at::parallel_for(0, batch * dim, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> h(N), a(N), dts(len);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / dim, d = row % dim;
      const T* ur = u + row * len;
      const T* zr = z ? z + row * len : nullptr;
      const T* Ad = A + d * N;
      const T* Bb = Bt + b * len * N;
      const T* Cb = Ct + b * len * N;
      const T skip = Dv ? Dv[d] : T(0);
      T* o = out + row * len;
      row_dt(delta + row * len, dbias ? dbias[d] : T(0), use_softplus, len, dts.data());
      std::fill(h.begin(), h.end(), T(0));
      T* hp = h.data();
      T* ap = a.data();
      for (int64_t t = 0; t < len; ++t) {
        const T dt = dts[t];
        const T dtu = dt * ur[t];
        const T* Bv = Bb + t * N;
        const T* Cv = Cb + t * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) ap[n] = std::exp(dt * Ad[n]);
        T y = 0;
#pragma omp simd reduction(+ : y)
        for (int64_t n = 0; n < N; ++n) {
          hp[n] = ap[n] * hp[n] + dtu * Bv[n];
          y += hp[n] * Cv[n];
        }
        o[t] = y;
      }
      // Skip connection and SiLU gate, vectorised over the row.
      if (zr) {
#pragma omp simd
        for (int64_t t = 0; t < len; ++t)
          o[t] = (o[t] + skip * ur[t]) * zr[t] / (T(1) + std::exp(-zr[t]));
      } else {
#pragma omp simd
        for (int64_t t = 0; t < len; ++t) o[t] += skip * ur[t];
      }
    }
  });
}

template <typename T>
void scan_bwd_kernel(const T* u, const T* delta, const T* A, const T* Bt, const T* Ct,
                     const T* Dv, const T* z, const T* dbias, bool use_softplus,
                     const T* dout, T* du, T* ddelta, T* dA, T* dBt, T* dCt, T* dD,
                     T* dz, T* ddbias, int64_t batch, int64_t dim, int64_t len,
                     int64_t N) {
  std::mutex merge;
  // Parallel over channels: dA, dD, ddbias of a channel belong to one thread; dB and
  // dC (summed over channels) are accumulated per thread and merged at the end.
  at::parallel_for(0, dim, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> hs(len * N), as(len * N), dts(len), ys(len), g(N), dys(len), sig(len);
    std::vector<T> dB_loc(batch * len * N, T(0)), dC_loc(batch * len * N, T(0));
    for (int64_t d = begin; d < end; ++d) {
      const T* Ad = A + d * N;
      const T bias = dbias ? dbias[d] : T(0);
      const T skip = Dv ? Dv[d] : T(0);
      std::vector<T> dA_acc(N, T(0));
      T dD_acc = 0, dbias_acc = 0;
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t row = b * dim + d;
        const T* ur = u + row * len;
        const T* dr = delta + row * len;
        const T* zr = z ? z + row * len : nullptr;
        const T* Bb = Bt + b * len * N;
        const T* Cb = Ct + b * len * N;
        // Forward recomputation of the row: states, decays, dt and pre-gate output.
        row_dt(dr, bias, use_softplus, len, dts.data());
        T* hprev = nullptr;
        for (int64_t t = 0; t < len; ++t) {
          const T dt = dts[t];
          const T dtu = dt * ur[t];
          T* ht = hs.data() + t * N;
          T* at = as.data() + t * N;
          const T* Bv = Bb + t * N;
          const T* Cv = Cb + t * N;
#pragma omp simd
          for (int64_t n = 0; n < N; ++n) at[n] = std::exp(dt * Ad[n]);
          T y = 0;
          if (hprev) {
#pragma omp simd reduction(+ : y)
            for (int64_t n = 0; n < N; ++n) {
              ht[n] = at[n] * hprev[n] + dtu * Bv[n];
              y += ht[n] * Cv[n];
            }
          } else {
#pragma omp simd reduction(+ : y)
            for (int64_t n = 0; n < N; ++n) {
              ht[n] = dtu * Bv[n];
              y += ht[n] * Cv[n];
            }
          }
          ys[t] = y + skip * ur[t];
          hprev = ht;
        }
        // Gate gradients, vectorised over the row: dz and the gradient reaching y.
        const T* go = dout + row * len;
        if (zr) {
          T* dzr = dz + row * len;
#pragma omp simd
          for (int64_t t = 0; t < len; ++t) {
            const T s = T(1) / (T(1) + std::exp(-zr[t]));
            dzr[t] = go[t] * ys[t] * s * (T(1) + zr[t] * (T(1) - s));
            dys[t] = go[t] * zr[t] * s;
          }
        } else {
#pragma omp simd
          for (int64_t t = 0; t < len; ++t) dys[t] = go[t];
        }
        if (use_softplus) {
#pragma omp simd
          for (int64_t t = 0; t < len; ++t)
            sig[t] = T(1) / (T(1) + std::exp(-(dr[t] + bias)));
        }
        // Reverse pass.
        std::fill(g.begin(), g.end(), T(0));
        T* dB_b = dB_loc.data() + b * len * N;
        T* dC_b = dC_loc.data() + b * len * N;
        for (int64_t t = len - 1; t >= 0; --t) {
          const T dy = dys[t];
          dD_acc += dy * ur[t];
          const T dt = dts[t];
          const T dtu = dt * ur[t];
          const T* ht = hs.data() + t * N;
          const T* hp = t > 0 ? hs.data() + (t - 1) * N : nullptr;
          const T* at = as.data() + t * N;
          const T* Bv = Bb + t * N;
          const T* Cv = Cb + t * N;
          T* dBv = dB_b + t * N;
          T* dCv = dC_b + t * N;
          T* gp = g.data();
          T* dAp = dA_acc.data();
          T ddt = 0, gB = 0;
#pragma omp simd reduction(+ : ddt, gB)
          for (int64_t n = 0; n < N; ++n) {
            const T gn = dy * Cv[n] + gp[n];
            dCv[n] += dy * ht[n];
            dBv[n] += gn * dtu;
            gB += gn * Bv[n];
            const T hprev_n = hp ? hp[n] : T(0);
            const T dlog = gn * hprev_n * at[n];  // d loss / d (dt * A)
            ddt += dlog * Ad[n];
            dAp[n] += dlog * dt;
            gp[n] = at[n] * gn;
          }
          ddt += gB * ur[t];
          du[row * len + t] = dy * skip + gB * dt;
          T dd = ddt;
          if (use_softplus) dd = ddt * sig[t];
          ddelta[row * len + t] = dd;
          dbias_acc += dd;
        }
      }
      for (int64_t n = 0; n < N; ++n) dA[d * N + n] = dA_acc[n];
      if (dD) dD[d] = dD_acc;
      if (ddbias) ddbias[d] = dbias_acc;
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

template <typename T>
const T* opt_ptr(const c10::optional<torch::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

}  // namespace

torch::Tensor selective_scan_fwd(torch::Tensor u, torch::Tensor delta, torch::Tensor A,
                                 torch::Tensor Bt, torch::Tensor Ct,
                                 c10::optional<torch::Tensor> Dv,
                                 c10::optional<torch::Tensor> z,
                                 c10::optional<torch::Tensor> dbias, bool use_softplus) {
  check(u, "u", 3); check(delta, "delta", 3); check(A, "A", 2);
  check(Bt, "B", 3); check(Ct, "C", 3);
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2), N = A.size(1);
  auto out = torch::empty_like(u);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_fwd", [&] {
    scan_fwd_kernel<scalar_t>(
        u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
        Bt.data_ptr<scalar_t>(), Ct.data_ptr<scalar_t>(), opt_ptr<scalar_t>(Dv),
        opt_ptr<scalar_t>(z), opt_ptr<scalar_t>(dbias), use_softplus,
        out.data_ptr<scalar_t>(), batch, dim, len, N);
  });
  return out;
}

std::vector<torch::Tensor> selective_scan_bwd(
    torch::Tensor u, torch::Tensor delta, torch::Tensor A, torch::Tensor Bt,
    torch::Tensor Ct, c10::optional<torch::Tensor> Dv, c10::optional<torch::Tensor> z,
    c10::optional<torch::Tensor> dbias, bool use_softplus, torch::Tensor dout) {
  check(u, "u", 3); check(dout, "dout", 3);
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2), N = A.size(1);
  auto du = torch::empty_like(u);
  auto ddelta = torch::empty_like(delta);
  auto dA = torch::zeros_like(A);
  auto dBt = torch::zeros_like(Bt);
  auto dCt = torch::zeros_like(Ct);
  auto dD = Dv.has_value() ? torch::zeros_like(*Dv) : torch::Tensor();
  auto dz = z.has_value() ? torch::empty_like(*z) : torch::Tensor();
  auto ddbias = dbias.has_value() ? torch::zeros_like(*dbias) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_bwd", [&] {
    scan_bwd_kernel<scalar_t>(
        u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
        Bt.data_ptr<scalar_t>(), Ct.data_ptr<scalar_t>(), opt_ptr<scalar_t>(Dv),
        opt_ptr<scalar_t>(z), opt_ptr<scalar_t>(dbias), use_softplus,
        dout.data_ptr<scalar_t>(), du.data_ptr<scalar_t>(), ddelta.data_ptr<scalar_t>(),
        dA.data_ptr<scalar_t>(), dBt.data_ptr<scalar_t>(), dCt.data_ptr<scalar_t>(),
        Dv.has_value() ? dD.data_ptr<scalar_t>() : nullptr,
        z.has_value() ? dz.data_ptr<scalar_t>() : nullptr,
        dbias.has_value() ? ddbias.data_ptr<scalar_t>() : nullptr, batch, dim, len, N);
  });
  return {du, ddelta, dA, dBt, dCt, dD, dz, ddbias};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("selective_scan_fwd", &selective_scan_fwd, "selective scan forward (CPU)");
  m.def("selective_scan_bwd", &selective_scan_bwd, "selective scan backward (CPU)");
}
