// causal_conv1d_cpu.cpp compiled for the 'avx2' code path (flags: see setup.py).
#define SHUFFLEMAMBA_ISA avx2
#include "../causal_conv1d_cpu.cpp"
