// Python entry points of the compiled CPU kernels: argument checks, output allocation
// and the choice of the code path.
//
// Compiled once, for the baseline CPU of the target (setup.py). The kernels are compiled
// several times (isa/*.cpp: generic, and on x86-64 also AVX2 = x86-64-v3 and AVX-512 =
// x86-64-v4), each copy in its own namespace; the best one the CPU supports is chosen
// once, at the first call, from the CPU's features (PyTorch does the same for its CPU
// kernels). SHUFFLEMAMBA_CPU_ISA=generic|avx2|avx512 forces one (an error if this CPU
// cannot run it); set_cpu_path() does the same from Python.
//
// Every tensor is checked (device, dtype, dimensions, sizes) before a kernel sees a
// pointer: a wrong call is a ValueError naming the argument, never a read out of
// bounds.
#include <torch/extension.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#define SHUFFLEMAMBA_API_ONLY
#include "kernel_api.h"

#ifndef SHUFFLEMAMBA_BUILD_FLAGS
#define SHUFFLEMAMBA_BUILD_FLAGS "unknown"
#endif

namespace shufflemamba {

namespace {

// ------------------------------------------------------------------- code paths
#define SHUFFLEMAMBA_TABLE(ns)                                                         \
  KernelTable {                                                                        \
    #ns, &ns::scan_fwd, &ns::scan_fwd, &ns::scan_bwd, &ns::scan_bwd, &ns::conv_fwd,   \
        &ns::conv_fwd, &ns::conv_bwd, &ns::conv_bwd                                    \
  }

const KernelTable kGeneric = SHUFFLEMAMBA_TABLE(generic);
#ifdef SHUFFLEMAMBA_WITH_AVX2
const KernelTable kAvx2 = SHUFFLEMAMBA_TABLE(avx2);
#endif
#ifdef SHUFFLEMAMBA_WITH_AVX512
const KernelTable kAvx512 = SHUFFLEMAMBA_TABLE(avx512);
#endif

bool cpu_supports_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
  return __builtin_cpu_supports("x86-64-v3");
#else
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
#endif
#else
  return false;
#endif
}

bool cpu_supports_avx512() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
  return __builtin_cpu_supports("x86-64-v4");
#else
  return cpu_supports_avx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd");
#endif
#else
  return false;
#endif
}

struct Path {
  const char* name;
  const KernelTable* table;  // null: not compiled into this build
  bool supported;            // this CPU can run it
};

std::vector<Path> all_paths() {
  std::vector<Path> paths{{"generic", &kGeneric, true}};
#ifdef SHUFFLEMAMBA_WITH_AVX2
  paths.push_back({"avx2", &kAvx2, cpu_supports_avx2()});
#else
  paths.push_back({"avx2", nullptr, cpu_supports_avx2()});
#endif
#ifdef SHUFFLEMAMBA_WITH_AVX512
  paths.push_back({"avx512", &kAvx512, cpu_supports_avx512()});
#else
  paths.push_back({"avx512", nullptr, cpu_supports_avx512()});
#endif
  return paths;
}

const KernelTable* find_path(const std::string& name) {
  if (name == "auto") {
    const KernelTable* best = &kGeneric;
    for (const Path& p : all_paths())
      if (p.table && p.supported) best = p.table;  // ordered from the oldest CPUs up
    return best;
  }
  for (const Path& p : all_paths()) {
    if (name != p.name) continue;
    TORCH_CHECK_VALUE(p.table, "the '", name, "' code path of the CPU kernels is not part of "
                "this build (built: ", SHUFFLEMAMBA_BUILD_FLAGS, ")");
    TORCH_CHECK_VALUE(p.supported, "this CPU cannot run the '", name,
                "' code path of the CPU kernels (it lacks the instructions); use "
                "'generic' or 'auto'");
    return p.table;
  }
  TORCH_CHECK_VALUE(false, "unknown CPU code path '", name,
              "': expected 'auto', 'generic', 'avx2' or 'avx512'");
  return nullptr;
}

std::atomic<const KernelTable*> g_table{nullptr};
std::mutex g_table_init;

const KernelTable& table() {
  const KernelTable* t = g_table.load(std::memory_order_acquire);
  if (t) return *t;
  std::lock_guard<std::mutex> lock(g_table_init);
  t = g_table.load(std::memory_order_relaxed);
  if (!t) {
    const char* env = std::getenv("SHUFFLEMAMBA_CPU_ISA");
    const std::string want = env && *env ? env : "auto";
    try {
      t = find_path(want);
    } catch (const c10::Error& e) {
      TORCH_CHECK_VALUE(false, "SHUFFLEMAMBA_CPU_ISA=", want, ": ", e.msg());
    }
    g_table.store(t, std::memory_order_release);
  }
  return *t;
}

// ------------------------------------------------------------------- checks
void check_tensor(const torch::Tensor& t, const char* fn, const char* name,
                  const torch::Tensor& ref, const char* ref_name) {
  TORCH_CHECK_VALUE(t.defined(), fn, ": ", name, " is an undefined tensor");
  TORCH_CHECK_VALUE(t.device().is_cpu(), fn, ": ", name, " must be a CPU tensor, got one on ",
              t.device());
  TORCH_CHECK_VALUE(t.scalar_type() == ref.scalar_type(), fn, ": ", name, " must have the dtype of ",
              ref_name, " (", ref.scalar_type(), "), got ", t.scalar_type());
}

void check_shape(const torch::Tensor& t, const char* fn, const char* name,
                 c10::IntArrayRef expected, const char* meaning) {
  TORCH_CHECK_VALUE(t.sizes() == expected, fn, ": ", name, " must have shape ", meaning, " = ",
              expected, ", got ", t.sizes());
}

void check_first(const torch::Tensor& t, const char* fn, const char* name) {
  TORCH_CHECK_VALUE(t.defined(), fn, ": ", name, " is an undefined tensor");
  TORCH_CHECK_VALUE(t.device().is_cpu(), fn, ": ", name, " must be a CPU tensor, got one on ",
              t.device());
  TORCH_CHECK_VALUE(t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kDouble, fn,
              ": ", name, " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 3, fn, ": ", name, " must be (batch, dim, seqlen), got ", t.dim(),
              " dimensions ", t.sizes());
}

Strides strides3(const torch::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

template <typename T>
const T* ptr(const torch::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}
template <typename T>
T* mptr(torch::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

torch::Tensor opt(const c10::optional<torch::Tensor>& t) {
  return t.has_value() ? *t : torch::Tensor();
}

// The scan's arguments, checked; small tensors made contiguous.
struct ScanInputs {
  torch::Tensor u, delta, A, Bt, Ct, Dv, z, dbias, dout;
  int64_t batch, dim, len, N;
};

ScanInputs check_scan(const char* fn, const torch::Tensor& u, const torch::Tensor& delta,
                      const torch::Tensor& A, const torch::Tensor& Bt,
                      const torch::Tensor& Ct, const c10::optional<torch::Tensor>& Dv,
                      const c10::optional<torch::Tensor>& z,
                      const c10::optional<torch::Tensor>& dbias,
                      const torch::Tensor* dout) {
  check_first(u, fn, "u");
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2);
  check_tensor(A, fn, "A", u, "u");
  TORCH_CHECK_VALUE(A.dim() == 2 && A.size(0) == dim, fn, ": A must have shape (dim, dstate) = (",
              dim, ", N), got ", A.sizes());
  const int64_t N = A.size(1);
  check_tensor(delta, fn, "delta", u, "u");
  check_shape(delta, fn, "delta", u.sizes(), "(batch, dim, seqlen) like u");
  check_tensor(Bt, fn, "B", u, "u");
  check_shape(Bt, fn, "B", {batch, len, N}, "(batch, seqlen, dstate), time-major");
  check_tensor(Ct, fn, "C", u, "u");
  check_shape(Ct, fn, "C", {batch, len, N}, "(batch, seqlen, dstate), time-major");
  ScanInputs s{u, delta, A.contiguous(), Bt.contiguous(), Ct.contiguous(),
               torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
               batch, dim, len, N};
  if (Dv.has_value()) {
    check_tensor(*Dv, fn, "D", u, "u");
    check_shape(*Dv, fn, "D", {dim}, "(dim,)");
    s.Dv = Dv->contiguous();
  }
  if (z.has_value()) {
    check_tensor(*z, fn, "z", u, "u");
    check_shape(*z, fn, "z", u.sizes(), "(batch, dim, seqlen) like u");
    s.z = *z;
  }
  if (dbias.has_value()) {
    check_tensor(*dbias, fn, "delta_bias", u, "u");
    check_shape(*dbias, fn, "delta_bias", {dim}, "(dim,)");
    s.dbias = dbias->contiguous();
  }
  if (dout) {
    check_tensor(*dout, fn, "dout", u, "u");
    check_shape(*dout, fn, "dout", u.sizes(), "(batch, dim, seqlen) like u");
    s.dout = *dout;
  }
  return s;
}

// The table's kernel for the argument type.
void run(const KernelTable& k, const ScanFwdArgs<float>& a) { k.scan_fwd_f32(a); }
void run(const KernelTable& k, const ScanFwdArgs<double>& a) { k.scan_fwd_f64(a); }
void run(const KernelTable& k, const ScanBwdArgs<float>& a) { k.scan_bwd_f32(a); }
void run(const KernelTable& k, const ScanBwdArgs<double>& a) { k.scan_bwd_f64(a); }
void run(const KernelTable& k, const ConvFwdArgs<float>& a) { k.conv_fwd_f32(a); }
void run(const KernelTable& k, const ConvFwdArgs<double>& a) { k.conv_fwd_f64(a); }
void run(const KernelTable& k, const ConvBwdArgs<float>& a) { k.conv_bwd_f32(a); }
void run(const KernelTable& k, const ConvBwdArgs<double>& a) { k.conv_bwd_f64(a); }

// A (B, D, L) tensor in u's layout: token-major (channels contiguous) when u is.
torch::Tensor empty_like_layout(const torch::Tensor& u) {
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2);
  const bool token_major = u.stride(1) == 1 && len > 1;
  return token_major ? torch::empty({batch, len, dim}, u.options()).transpose(1, 2)
                     : torch::empty({batch, dim, len}, u.options());
}

}  // namespace
}  // namespace shufflemamba

using shufflemamba::Strides;

// u, delta, z: (B, D, L) with any strides (channel-major and token-major are fast);
// A (D, N); Bt, Ct (B, L, N); D, delta_bias (D,). The output is allocated in u's layout.
torch::Tensor selective_scan_fwd(torch::Tensor u, torch::Tensor delta, torch::Tensor A,
                                 torch::Tensor Bt, torch::Tensor Ct,
                                 c10::optional<torch::Tensor> Dv,
                                 c10::optional<torch::Tensor> z,
                                 c10::optional<torch::Tensor> dbias, bool use_softplus,
                                 bool reverse) {
  using namespace shufflemamba;
  const auto s = check_scan("selective_scan_fwd", u, delta, A, Bt, Ct, Dv, z, dbias, nullptr);
  auto out = empty_like_layout(u);
  if (out.numel() == 0) return out;
  const KernelTable& k = table();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_fwd", [&] {
    ScanFwdArgs<scalar_t> a{ptr<scalar_t>(s.u), ptr<scalar_t>(s.delta), ptr<scalar_t>(s.A),
                            ptr<scalar_t>(s.Bt), ptr<scalar_t>(s.Ct), ptr<scalar_t>(s.Dv),
                            ptr<scalar_t>(s.z), ptr<scalar_t>(s.dbias), use_softplus, reverse,
                            out.data_ptr<scalar_t>(), s.batch, s.dim, s.len, s.N,
                            strides3(s.u), strides3(s.delta),
                            s.z.defined() ? strides3(s.z) : Strides{0, 0, 0}, strides3(out)};
    run(k, a);
  });
  return out;
}

// Gradients of selective_scan_fwd; du, ddelta, dz come in u's layout, dBt and dCt as
// (B, L, N) in the order of Bt and Ct. With return_out, a ninth tensor: the output of
// selective_scan_fwd on the same inputs (u's layout, original time order), computed
// from the states the backward recomputes.
std::vector<torch::Tensor> selective_scan_bwd(
    torch::Tensor u, torch::Tensor delta, torch::Tensor A, torch::Tensor Bt,
    torch::Tensor Ct, c10::optional<torch::Tensor> Dv, c10::optional<torch::Tensor> z,
    c10::optional<torch::Tensor> dbias, bool use_softplus, bool reverse,
    torch::Tensor dout, bool return_out) {
  using namespace shufflemamba;
  const auto s = check_scan("selective_scan_bwd", u, delta, A, Bt, Ct, Dv, z, dbias, &dout);
  auto du = empty_like_layout(u);
  auto ddelta = empty_like_layout(u);
  auto dA = torch::zeros_like(s.A);
  auto dBt = torch::zeros_like(s.Bt);
  auto dCt = torch::zeros_like(s.Ct);
  auto dD = s.Dv.defined() ? torch::zeros_like(s.Dv) : torch::Tensor();
  auto dz = s.z.defined() ? empty_like_layout(u) : torch::Tensor();
  auto ddbias = s.dbias.defined() ? torch::zeros_like(s.dbias) : torch::Tensor();
  auto out = return_out ? empty_like_layout(u) : torch::Tensor();
  std::vector<torch::Tensor> res{du, ddelta, dA, dBt, dCt, dD, dz, ddbias};
  if (return_out) res.push_back(out);
  if (u.numel() == 0) {
    du.zero_();
    ddelta.zero_();
    if (dz.defined()) dz.zero_();
    return res;
  }
  const KernelTable& k = table();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_bwd", [&] {
    ScanBwdArgs<scalar_t> a{
        ptr<scalar_t>(s.u), ptr<scalar_t>(s.delta), ptr<scalar_t>(s.A), ptr<scalar_t>(s.Bt),
        ptr<scalar_t>(s.Ct), ptr<scalar_t>(s.Dv), ptr<scalar_t>(s.z), ptr<scalar_t>(s.dbias),
        ptr<scalar_t>(s.dout), use_softplus, reverse, mptr<scalar_t>(du),
        mptr<scalar_t>(ddelta), mptr<scalar_t>(dA), mptr<scalar_t>(dBt), mptr<scalar_t>(dCt),
        mptr<scalar_t>(dD), mptr<scalar_t>(dz), mptr<scalar_t>(ddbias), mptr<scalar_t>(out),
        s.batch, s.dim, s.len, s.N, strides3(s.u), strides3(s.delta),
        s.z.defined() ? strides3(s.z) : Strides{0, 0, 0}, strides3(s.dout), strides3(du),
        strides3(ddelta), dz.defined() ? strides3(dz) : Strides{0, 0, 0},
        out.defined() ? strides3(out) : Strides{0, 0, 0}};
    run(k, a);
  });
  return res;
}

namespace shufflemamba {
namespace {

void check_conv(const char* fn, const torch::Tensor& x, const torch::Tensor& w,
                const c10::optional<torch::Tensor>& bias, const torch::Tensor* dout) {
  check_first(x, fn, "x");
  check_tensor(w, fn, "weight", x, "x");
  TORCH_CHECK_VALUE(w.dim() == 2 && w.size(0) == x.size(1) && w.size(1) >= 1, fn,
              ": weight must have shape (dim, width) = (", x.size(1), ", K >= 1), got ",
              w.sizes());
  if (bias.has_value()) {
    check_tensor(*bias, fn, "bias", x, "x");
    check_shape(*bias, fn, "bias", {x.size(1)}, "(dim,)");
  }
  if (dout) {
    check_tensor(*dout, fn, "dout", x, "x");
    check_shape(*dout, fn, "dout", x.sizes(), "(batch, dim, seqlen) like x");
  }
}

}  // namespace
}  // namespace shufflemamba

// x: (B, D, L), channel-major (rows contiguous) or token-major (channels contiguous; the
// output is token-major too); other layouts are copied first. weight (D, K), bias (D,).
torch::Tensor causal_conv1d_fwd(torch::Tensor x, torch::Tensor w,
                                c10::optional<torch::Tensor> bias, bool silu, bool reverse) {
  using namespace shufflemamba;
  check_conv("causal_conv1d_fwd", x, w, bias, nullptr);
  const int64_t batch = x.size(0), dim = x.size(1), len = x.size(2), K = w.size(1);
  const bool token_major = x.stride(1) == 1 && len > 1 && dim > 1;
  if (!token_major && len > 1 && x.stride(2) != 1) x = x.contiguous();
  auto wc = w.contiguous();
  auto bc = bias.has_value() ? bias->contiguous() : torch::Tensor();
  auto wt = token_major ? w.flip(1).t().contiguous() : torch::Tensor();  // (K, D)
  auto out = token_major ? torch::empty({batch, len, dim}, x.options()).transpose(1, 2)
                         : torch::empty({batch, dim, len}, x.options());
  if (out.numel() == 0) return out;
  const KernelTable& k = table();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv1d_fwd", [&] {
    ConvFwdArgs<scalar_t> a{ptr<scalar_t>(x), ptr<scalar_t>(wc), ptr<scalar_t>(wt),
                            ptr<scalar_t>(bc), silu, reverse, token_major,
                            out.data_ptr<scalar_t>(), batch, dim, len, K, strides3(x),
                            strides3(out)};
    run(k, a);
  });
  return out;
}

// Gradients of causal_conv1d_fwd; x and dout in any layout, dx comes in x's layout.
std::vector<torch::Tensor> causal_conv1d_bwd(torch::Tensor x, torch::Tensor w,
                                             c10::optional<torch::Tensor> bias, bool silu,
                                             bool reverse, torch::Tensor dout) {
  using namespace shufflemamba;
  check_conv("causal_conv1d_bwd", x, w, bias, &dout);
  const int64_t batch = x.size(0), dim = x.size(1), len = x.size(2), K = w.size(1);
  auto wc = w.contiguous();
  auto bc = bias.has_value() ? bias->contiguous() : torch::Tensor();
  auto dx = empty_like_layout(x);
  auto dw = torch::zeros_like(wc);
  auto db = bc.defined() ? torch::zeros_like(bc) : torch::Tensor();
  if (x.numel() == 0) return {dx, dw, db};
  const KernelTable& k = table();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv1d_bwd", [&] {
    ConvBwdArgs<scalar_t> a{ptr<scalar_t>(x), ptr<scalar_t>(wc), ptr<scalar_t>(bc),
                            ptr<scalar_t>(dout), silu, reverse, mptr<scalar_t>(dx),
                            mptr<scalar_t>(dw), mptr<scalar_t>(db), batch, dim, len, K,
                            strides3(x), strides3(dout), strides3(dx)};
    run(k, a);
  });
  return {dx, dw, db};
}

// Multi-scale deformable attention sampling (ms_deform_attn_cpu.cpp: one code path,
// compiled with the baseline flags; it checks its own arguments).
torch::Tensor ms_deform_attn_cpu_fwd(torch::Tensor value, torch::Tensor spatial_shapes,
                                     torch::Tensor sampling_locations,
                                     torch::Tensor attention_weights);
std::vector<torch::Tensor> ms_deform_attn_cpu_bwd(torch::Tensor value,
                                                  torch::Tensor spatial_shapes,
                                                  torch::Tensor sampling_locations,
                                                  torch::Tensor attention_weights,
                                                  torch::Tensor grad_output);

// ------------------------------------------------------------------- code path API
namespace {

std::vector<std::tuple<std::string, bool, bool>> cpu_paths() {
  std::vector<std::tuple<std::string, bool, bool>> out;
  for (const auto& p : shufflemamba::all_paths())
    out.emplace_back(p.name, p.table != nullptr, p.supported);
  return out;
}

std::string get_cpu_path() { return shufflemamba::table().name; }

// 'auto' (the best this CPU runs), 'generic', 'avx2' or 'avx512'; returns the name.
std::string set_cpu_path(const std::string& name) {
  const shufflemamba::KernelTable* t = shufflemamba::find_path(name);
  shufflemamba::g_table.store(t, std::memory_order_release);
  return t->name;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("selective_scan_fwd", &selective_scan_fwd, "selective scan forward (CPU)");
  m.def("selective_scan_bwd", &selective_scan_bwd,
        "selective scan backward (CPU); with return_out also the forward's output",
        py::arg("u"), py::arg("delta"), py::arg("A"), py::arg("Bt"), py::arg("Ct"),
        py::arg("D"), py::arg("z"), py::arg("delta_bias"), py::arg("use_softplus"),
        py::arg("reverse"), py::arg("dout"), py::arg("return_out") = false);
  m.def("causal_conv1d_fwd", &causal_conv1d_fwd, "depthwise causal conv + SiLU (CPU)");
  m.def("causal_conv1d_bwd", &causal_conv1d_bwd, "its backward (CPU)");
  m.def("ms_deform_attn_fwd", &ms_deform_attn_cpu_fwd,
        "multi-scale deformable attention sampling (CPU, generic code path)");
  m.def("ms_deform_attn_bwd", &ms_deform_attn_cpu_bwd,
        "its backward: (grad_value, grad_sampling_locations, grad_attention_weights)");
  m.def("cpu_paths", &cpu_paths,
        "[(name, built, supported by this CPU)] of the kernels' code paths");
  m.def("get_cpu_path", &get_cpu_path, "the code path in use");
  m.def("set_cpu_path", &set_cpu_path, "use code path 'auto', 'generic', 'avx2', 'avx512'");
  m.attr("build_flags") = SHUFFLEMAMBA_BUILD_FLAGS;
}
