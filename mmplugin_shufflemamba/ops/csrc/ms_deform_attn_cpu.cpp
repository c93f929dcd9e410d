// Multi-scale deformable attention sampling on the CPU: forward and backward of
// mmcv's multi_scale_deformable_attn_pytorch (per level F.grid_sample, bilinear, zero
// padding, align_corners=False, then the attention-weighted sum over levels and
// points), fused into one pass over the sampling points.
//
//   value               (B, Lv, H, D)        levels concatenated, row-major (y, x)
//   spatial_shapes      (L, 2) int64         (h, w) per level, sum(h * w) == Lv
//   sampling_locations  (B, Q, H, L, P, 2)   (x, y), 0..1 spans the level
//   attention_weights   (B, Q, H, L, P)
//   output              (B, Q, H * D)
//
// Pixel coordinates are computed like grid_sample's: g = 2 * loc - 1, then
// x = (g + 1) * (w / 2) - 1/2. A corner outside the level reads zeros (it is read from
// a row of zeros, so its weight still multiplies it); every corner inside the level is
// multiplied by its weight even when the weight is 0. So NaN and inf propagate as on
// the reference path: a NaN / inf value reached by an in-bounds corner makes the
// output NaN; a NaN / inf sampling location gives a NaN sample (NaN bilinear weights),
// hence a NaN output for that head and a NaN gradient of its attention weight; a
// NaN / inf attention weight gives a NaN output even for a point outside the level
// (inf * 0). Gradients follow the same formulas (see ms_deform_attn_bwd).
//
// Only one code path: this file is compiled once, with the baseline flags of the
// target (build_flags.py), in its own namespace; it is memory bound (four 32-float
// rows per point) and the baseline's SSE2 vectorises its channel loops.
//
// The kernels read value head-major, (B, H, Lv, D) (one copy per call, small next to
// the sampling): a head's keys are then one contiguous block that a task works on
// alone (in (B, Lv, H, D) a head's rows lie H * D apart).
//
// Parallelism (ATen's thread pool): the forward over (batch, head, block of 256
// queries) (each task writes its own output entries); the backward over (batch, head)
// pairs, so that every task owns its slice of grad_value and its (b, :, h) entries of
// the location and weight gradients: no atomics, no races, and the result does not
// depend on the number of threads. Sums across channels are split into kLanes
// independent partial sums (vectorisable without -fassociative-math).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace shufflemamba {
namespace msda {
namespace {

constexpr int kLanes = 8;
constexpr int64_t kQueryBlock = 256;  // queries of one forward task

struct Level {
  int64_t h, w, start;
};

// The four corners of one sampling point: their rows (a row of zeros when outside the
// level) and bilinear weights, plus what the backward needs.
template <typename T>
struct Corners {
  const T* v[4];   // nw, ne, sw, se
  int64_t row[4];  // index in (Lv) of the corner, -1 when outside the level
  T w[4];
  T fx, fy;
};

template <typename T>
inline void corners(const T* vb, int64_t row_stride, const Level& lv, T lx, T ly,
                    const T* zeros, Corners<T>& c) {
  // grid_sample (align_corners=False): g = 2 * loc - 1; x = (g + 1) * w / 2 - 1/2.
  const T gx = lx * T(2) - T(1), gy = ly * T(2) - T(1);
  const T x = (gx + T(1)) * (T(lv.w) * T(0.5)) - T(0.5);
  const T y = (gy + T(1)) * (T(lv.h) * T(0.5)) - T(0.5);
  const T x0 = std::floor(x), y0 = std::floor(y);
  const T fx = x - x0, fy = y - y0;
  c.fx = fx;
  c.fy = fy;
  c.w[0] = (T(1) - fx) * (T(1) - fy);
  c.w[1] = fx * (T(1) - fy);
  c.w[2] = (T(1) - fx) * fy;
  c.w[3] = fx * fy;
  // Bounds are checked in floating point (NaN compares false: outside), so that a huge
  // or non-finite coordinate is never converted to an integer.
  const bool x0in = x0 >= T(0) && x0 < T(lv.w), x1in = x0 >= T(-1) && x0 < T(lv.w - 1);
  const bool y0in = y0 >= T(0) && y0 < T(lv.h), y1in = y0 >= T(-1) && y0 < T(lv.h - 1);
  const int64_t ix = (x0in || x1in) ? static_cast<int64_t>(x0) : 0;
  const int64_t iy = (y0in || y1in) ? static_cast<int64_t>(y0) : 0;
  const bool in[4] = {x0in && y0in, x1in && y0in, x0in && y1in, x1in && y1in};
  const int64_t dx[4] = {0, 1, 0, 1}, dy[4] = {0, 0, 1, 1};
  for (int k = 0; k < 4; ++k) {
    if (in[k]) {
      c.row[k] = lv.start + (iy + dy[k]) * lv.w + ix + dx[k];
      c.v[k] = vb + c.row[k] * row_stride;
    } else {
      c.row[k] = -1;
      c.v[k] = zeros;
    }
  }
}

// value is head-major here: (B, H, Lv, D).
template <typename T>
void forward_kernel(const T* value, const std::vector<Level>& levels, const T* loc,
                    const T* attn, T* out, int64_t B, int64_t Lv, int64_t H, int64_t D,
                    int64_t Q, int64_t P) {
  const int64_t L = static_cast<int64_t>(levels.size());
  const std::vector<T> zeros(D, T(0));
  const int64_t qblocks = (Q + kQueryBlock - 1) / kQueryBlock;
  at::parallel_for(0, B * H * qblocks, 1, [&](int64_t begin, int64_t end) {
    Corners<T> c;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / qblocks, qb = task % qblocks;
      const int64_t b = bh / H, h = bh % H;
      const T* vb = value + bh * Lv * D;
      const int64_t q_end = std::min(Q, (qb + 1) * kQueryBlock);
      for (int64_t q = qb * kQueryBlock; q < q_end; ++q) {
        const int64_t bq = b * Q + q;
        T* o = out + (bq * H + h) * D;
        std::fill(o, o + D, T(0));
        for (int64_t l = 0; l < L; ++l) {
          for (int64_t p = 0; p < P; ++p) {
            const int64_t idx = ((bq * H + h) * L + l) * P + p;
            corners(vb, D, levels[l], loc[2 * idx], loc[2 * idx + 1], zeros.data(), c);
            const T a = attn[idx];
            const T w0 = c.w[0], w1 = c.w[1], w2 = c.w[2], w3 = c.w[3];
            const T *v0 = c.v[0], *v1 = c.v[1], *v2 = c.v[2], *v3 = c.v[3];
#pragma omp simd
            for (int64_t d = 0; d < D; ++d)
              o[d] += a * (w0 * v0[d] + w1 * v1[d] + w2 * v2[d] + w3 * v3[d]);
          }
        }
      }
    }
  });
}

// For out[d] = sum_(l,p) a * s[d], s = sum_k w_k v_k[d] (the sample):
//   grad_attn  = sum_d g[d] * s[d]
//   grad_v_k  += w_k * a * g[d]                      (in-bounds corners only)
//   grad_x     = w * sum_d a * g[d] * ((1-fy) (v_ne - v_nw) + fy (v_se - v_sw))
//   grad_y     = h * sum_d a * g[d] * ((1-fx) (v_sw - v_nw) + fx (v_se - v_ne))
// (dx/dloc_x = w: x = loc_x * w - 1/2). Out-of-level corners read zeros, so a point
// entirely outside has zero gradients, NaN where a or g is NaN (NaN * 0), as on the
// reference path. value and gvalue are head-major, (B, H, Lv, D).
template <typename T>
void backward_kernel(const T* value, const std::vector<Level>& levels, const T* loc,
                     const T* attn, const T* dout, T* gvalue, T* gloc, T* gattn, int64_t B,
                     int64_t Lv, int64_t H, int64_t D, int64_t Q, int64_t P) {
  const int64_t L = static_cast<int64_t>(levels.size());
  const int64_t row_stride = D;
  const std::vector<T> zeros(D, T(0));
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    Corners<T> c;
    std::vector<T> scratch(D);  // gradient rows of out-of-level corners land here
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const T* vb = value + bh * Lv * D;
      T* gvb = gvalue + bh * Lv * D;
      for (int64_t q = 0; q < Q; ++q) {
        const int64_t bq = b * Q + q;
        const T* g = dout + (bq * H + h) * D;
        for (int64_t l = 0; l < L; ++l) {
          const Level& lv = levels[l];
          for (int64_t p = 0; p < P; ++p) {
            const int64_t idx = ((bq * H + h) * L + l) * P + p;
            corners(vb, row_stride, lv, loc[2 * idx], loc[2 * idx + 1], zeros.data(), c);
            const T a = attn[idx];
            const T w0 = c.w[0], w1 = c.w[1], w2 = c.w[2], w3 = c.w[3];
            const T fx = c.fx, fy = c.fy, ex = T(1) - fx, ey = T(1) - fy;
            const T *v0 = c.v[0], *v1 = c.v[1], *v2 = c.v[2], *v3 = c.v[3];
            T* gv[4];
            for (int k = 0; k < 4; ++k)
              gv[k] = c.row[k] >= 0 ? gvb + c.row[k] * row_stride : scratch.data();
            T* g0 = gv[0];
            T* g1 = gv[1];
            T* g2 = gv[2];
            T* g3 = gv[3];
            T sa[kLanes] = {}, sx[kLanes] = {}, sy[kLanes] = {};
            int64_t d0 = 0;
            for (; d0 + kLanes <= D; d0 += kLanes) {
#pragma omp simd
              for (int j = 0; j < kLanes; ++j) {
                const int64_t d = d0 + j;
                const T n0 = v0[d], n1 = v1[d], n2 = v2[d], n3 = v3[d];
                const T gd = g[d], ag = a * gd;
                sa[j] += gd * (w0 * n0 + w1 * n1 + w2 * n2 + w3 * n3);
                sx[j] += ag * (ey * (n1 - n0) + fy * (n3 - n2));
                sy[j] += ag * (ex * (n2 - n0) + fx * (n3 - n1));
              }
              // Separate loops: the corner rows may alias (scratch, or one row twice
              // when the level is one pixel wide), and a row is updated corner by corner.
#pragma omp simd
              for (int j = 0; j < kLanes; ++j) g0[d0 + j] += w0 * (a * g[d0 + j]);
#pragma omp simd
              for (int j = 0; j < kLanes; ++j) g1[d0 + j] += w1 * (a * g[d0 + j]);
#pragma omp simd
              for (int j = 0; j < kLanes; ++j) g2[d0 + j] += w2 * (a * g[d0 + j]);
#pragma omp simd
              for (int j = 0; j < kLanes; ++j) g3[d0 + j] += w3 * (a * g[d0 + j]);
            }
            for (int64_t d = d0; d < D; ++d) {
              const int j = static_cast<int>(d - d0);
              const T n0 = v0[d], n1 = v1[d], n2 = v2[d], n3 = v3[d];
              const T gd = g[d], ag = a * gd;
              sa[j] += gd * (w0 * n0 + w1 * n1 + w2 * n2 + w3 * n3);
              sx[j] += ag * (ey * (n1 - n0) + fy * (n3 - n2));
              sy[j] += ag * (ex * (n2 - n0) + fx * (n3 - n1));
              g0[d] += w0 * ag;
              g1[d] += w1 * ag;
              g2[d] += w2 * ag;
              g3[d] += w3 * ag;
            }
            T ta = T(0), tx = T(0), ty = T(0);
            for (int j = 0; j < kLanes; ++j) {
              ta += sa[j];
              tx += sx[j];
              ty += sy[j];
            }
            gattn[idx] = ta;
            gloc[2 * idx] = tx * T(lv.w);
            gloc[2 * idx + 1] = ty * T(lv.h);
          }
        }
      }
    }
  });
}

// ------------------------------------------------------------------- checks
struct Sizes {
  int64_t B, Lv, H, D, Q, L, P;
  std::vector<Level> levels;
};

Sizes check_args(const char* fn, const torch::Tensor& value, const torch::Tensor& shapes,
                 const torch::Tensor& loc, const torch::Tensor& attn,
                 const torch::Tensor* dout) {
  auto cpu_float = [&](const torch::Tensor& t, const char* name) {
    TORCH_CHECK_VALUE(t.defined(), fn, ": ", name, " is an undefined tensor");
    TORCH_CHECK_VALUE(t.device().is_cpu(), fn, ": ", name, " must be a CPU tensor, got one on ",
                t.device());
    TORCH_CHECK_VALUE(t.scalar_type() == value.scalar_type(), fn, ": ", name,
                " must have the dtype of value (", value.scalar_type(), "), got ",
                t.scalar_type());
  };
  TORCH_CHECK_VALUE(value.defined(), fn, ": value is an undefined tensor");
  TORCH_CHECK_VALUE(value.device().is_cpu(), fn, ": value must be a CPU tensor, got one on ",
              value.device());
  TORCH_CHECK_VALUE(value.scalar_type() == torch::kFloat || value.scalar_type() == torch::kDouble,
              fn, ": value must be float32 or float64, got ", value.scalar_type());
  TORCH_CHECK_VALUE(value.dim() == 4, fn, ": value must be (batch, num_keys, num_heads, ",
              "head_dims), got ", value.dim(), " dimensions ", value.sizes());
  TORCH_CHECK_VALUE(shapes.defined() && shapes.device().is_cpu(), fn,
              ": spatial_shapes must be a CPU tensor");
  TORCH_CHECK_VALUE(shapes.scalar_type() == torch::kLong, fn,
              ": spatial_shapes must be int64, got ", shapes.scalar_type());
  TORCH_CHECK_VALUE(shapes.dim() == 2 && shapes.size(1) == 2 && shapes.size(0) >= 1, fn,
              ": spatial_shapes must be (num_levels >= 1, 2) as (h, w), got ",
              shapes.sizes());
  cpu_float(loc, "sampling_locations");
  cpu_float(attn, "attention_weights");
  Sizes s;
  s.B = value.size(0);
  s.Lv = value.size(1);
  s.H = value.size(2);
  s.D = value.size(3);
  s.L = shapes.size(0);
  TORCH_CHECK_VALUE(loc.dim() == 6 && loc.size(5) == 2, fn,
              ": sampling_locations must be (batch, num_queries, num_heads, num_levels, ",
              "num_points, 2), got ", loc.sizes());
  s.Q = loc.size(1);
  s.P = loc.size(4);
  const std::vector<int64_t> want_loc{s.B, s.Q, s.H, s.L, s.P, 2};
  TORCH_CHECK_VALUE(loc.sizes() == c10::IntArrayRef(want_loc), fn,
              ": sampling_locations must have shape (batch, num_queries, num_heads, ",
              "num_levels, num_points, 2) = ", c10::IntArrayRef(want_loc),
              " (batch and heads of value, levels of spatial_shapes), got ", loc.sizes());
  const std::vector<int64_t> want_attn{s.B, s.Q, s.H, s.L, s.P};
  TORCH_CHECK_VALUE(attn.sizes() == c10::IntArrayRef(want_attn), fn,
              ": attention_weights must have shape (batch, num_queries, num_heads, ",
              "num_levels, num_points) = ", c10::IntArrayRef(want_attn), ", got ",
              attn.sizes());
  if (dout) {
    cpu_float(*dout, "grad_output");
    const std::vector<int64_t> want_out{s.B, s.Q, s.H * s.D};
    TORCH_CHECK_VALUE(dout->sizes() == c10::IntArrayRef(want_out), fn,
                ": grad_output must have shape (batch, num_queries, num_heads * head_dims) ",
                "= ", c10::IntArrayRef(want_out), ", got ", dout->sizes());
  }
  const auto sh = shapes.contiguous();
  const int64_t* hw = sh.data_ptr<int64_t>();
  int64_t start = 0;
  for (int64_t l = 0; l < s.L; ++l) {
    const int64_t h = hw[2 * l], w = hw[2 * l + 1];
    TORCH_CHECK_VALUE(h >= 1 && w >= 1, fn, ": spatial_shapes[", l, "] = (", h, ", ", w,
                ") must be positive");
    s.levels.push_back({h, w, start});
    start += h * w;
  }
  TORCH_CHECK_VALUE(start == s.Lv, fn, ": value has ", s.Lv,
              " keys but spatial_shapes add up to sum(h * w) = ", start);
  return s;
}

}  // namespace
}  // namespace msda
}  // namespace shufflemamba

// value (B, Lv, H, D), spatial_shapes (L, 2) int64, sampling_locations
// (B, Q, H, L, P, 2), attention_weights (B, Q, H, L, P) -> (B, Q, H * D). Any strides
// (copied to contiguous); float32 or float64.
torch::Tensor ms_deform_attn_cpu_fwd(torch::Tensor value, torch::Tensor spatial_shapes,
                                     torch::Tensor sampling_locations,
                                     torch::Tensor attention_weights) {
  using namespace shufflemamba::msda;
  const Sizes s = check_args("ms_deform_attn_fwd", value, spatial_shapes,
                             sampling_locations, attention_weights, nullptr);
  const auto v = value.transpose(1, 2).contiguous();  // (B, H, Lv, D)
  const auto loc = sampling_locations.contiguous();
  const auto attn = attention_weights.contiguous();
  auto out = torch::empty({s.B, s.Q, s.H * s.D}, value.options());
  if (out.numel() == 0) return out;
  if (s.Lv == 0 || s.P == 0) return out.zero_();
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_fwd", [&] {
    forward_kernel<scalar_t>(v.data_ptr<scalar_t>(), s.levels, loc.data_ptr<scalar_t>(),
                             attn.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), s.B, s.Lv,
                             s.H, s.D, s.Q, s.P);
  });
  return out;
}

// Gradients of ms_deform_attn_cpu_fwd: (grad_value, grad_sampling_locations,
// grad_attention_weights), contiguous, shaped like the inputs.
std::vector<torch::Tensor> ms_deform_attn_cpu_bwd(torch::Tensor value,
                                                  torch::Tensor spatial_shapes,
                                                  torch::Tensor sampling_locations,
                                                  torch::Tensor attention_weights,
                                                  torch::Tensor grad_output) {
  using namespace shufflemamba::msda;
  const Sizes s = check_args("ms_deform_attn_bwd", value, spatial_shapes,
                             sampling_locations, attention_weights, &grad_output);
  const auto v = value.transpose(1, 2).contiguous();  // (B, H, Lv, D)
  const auto loc = sampling_locations.contiguous();
  const auto attn = attention_weights.contiguous();
  const auto dout = grad_output.contiguous();
  auto gvalue = torch::zeros(v.sizes(), value.options());  // (B, H, Lv, D)
  auto gloc = torch::zeros(loc.sizes(), value.options());
  auto gattn = torch::zeros(attn.sizes(), value.options());
  auto result = [&] {
    return std::vector<torch::Tensor>{gvalue.transpose(1, 2).contiguous(), gloc, gattn};
  };
  if (s.B * s.Q * s.H * s.D * s.P == 0 || s.Lv == 0) return result();
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_bwd", [&] {
    backward_kernel<scalar_t>(v.data_ptr<scalar_t>(), s.levels, loc.data_ptr<scalar_t>(),
                              attn.data_ptr<scalar_t>(), dout.data_ptr<scalar_t>(),
                              gvalue.data_ptr<scalar_t>(), gloc.data_ptr<scalar_t>(),
                              gattn.data_ptr<scalar_t>(), s.B, s.Lv, s.H, s.D, s.Q, s.P);
  });
  return result();
}
