// The interface between the Python bindings (bindings.cpp, compiled once for the
// baseline CPU) and the kernels, which are compiled once per instruction-set level
// (isa/*.cpp: generic, AVX2, AVX-512), each copy in its own namespace, and chosen at run
// time from the CPU's features (the way PyTorch builds its CPU kernels).
//
// Only plain data crosses this boundary: pointers, sizes and strides, already checked
// by the bindings. The kernel translation units include no tensor code of their own, so
// that no function compiled with AVX2 or AVX-512 flags can stand in for a baseline one.
#pragma once

#include <cstdint>

#ifndef SHUFFLEMAMBA_API_ONLY
#if !defined(SHUFFLEMAMBA_ISA)
#error "compile the kernels through isa/*.cpp, which define SHUFFLEMAMBA_ISA"
#endif
#endif

namespace shufflemamba {

// Strides (batch, channel, time) of a (B, D, L) tensor. No member functions: everything
// with code lives in the per-ISA namespaces.
struct Strides {
  int64_t b, d, t;
};

template <typename T>
struct ScanFwdArgs {
  const T *u, *delta, *A, *Bt, *Ct, *Dv, *z, *dbias;  // Dv, z, dbias may be null
  bool softplus, reverse;
  T* out;
  int64_t batch, dim, len, N;
  Strides su, sdelta, sz, sout;
};

template <typename T>
struct ScanBwdArgs {
  const T *u, *delta, *A, *Bt, *Ct, *Dv, *z, *dbias, *dout;
  bool softplus, reverse;
  T *du, *ddelta, *dA, *dBt, *dCt, *dD, *dz, *ddbias;  // dD, dz, ddbias may be null
  T* out;  // the forward's output (B, D, L), written when not null
  int64_t batch, dim, len, N;
  Strides su, sdelta, sz, sdout, sdu, sddelta, sdz, sout;
};

template <typename T>
struct ConvFwdArgs {
  const T *x, *w, *wt, *bias;  // w (D, K); wt (K, D) flipped taps, token-major path only
  bool silu, reverse, token_major;
  T* out;
  int64_t batch, dim, len, K;
  Strides sx, sout;
};

template <typename T>
struct ConvBwdArgs {
  const T *x, *w, *bias, *dout;
  bool silu, reverse;
  T *dx, *dw, *dbias;
  int64_t batch, dim, len, K;
  Strides sx, sdout, sdx;
};

struct KernelTable {
  const char* name;
  void (*scan_fwd_f32)(const ScanFwdArgs<float>&);
  void (*scan_fwd_f64)(const ScanFwdArgs<double>&);
  void (*scan_bwd_f32)(const ScanBwdArgs<float>&);
  void (*scan_bwd_f64)(const ScanBwdArgs<double>&);
  void (*conv_fwd_f32)(const ConvFwdArgs<float>&);
  void (*conv_fwd_f64)(const ConvFwdArgs<double>&);
  void (*conv_bwd_f32)(const ConvBwdArgs<float>&);
  void (*conv_bwd_f64)(const ConvBwdArgs<double>&);
};

// One per compiled code path; each isa/*.cpp defines the scan and conv halves.
#define SHUFFLEMAMBA_DECLARE_ISA(ns)                                     \
  namespace ns {                                                         \
  void scan_fwd(const ScanFwdArgs<float>&);                              \
  void scan_fwd(const ScanFwdArgs<double>&);                             \
  void scan_bwd(const ScanBwdArgs<float>&);                              \
  void scan_bwd(const ScanBwdArgs<double>&);                             \
  void conv_fwd(const ConvFwdArgs<float>&);                              \
  void conv_fwd(const ConvFwdArgs<double>&);                             \
  void conv_bwd(const ConvBwdArgs<float>&);                              \
  void conv_bwd(const ConvBwdArgs<double>&);                             \
  }

SHUFFLEMAMBA_DECLARE_ISA(generic)
SHUFFLEMAMBA_DECLARE_ISA(avx2)
SHUFFLEMAMBA_DECLARE_ISA(avx512)

}  // namespace shufflemamba
