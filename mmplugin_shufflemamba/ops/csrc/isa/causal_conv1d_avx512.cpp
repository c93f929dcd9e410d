// causal_conv1d_cpu.cpp compiled for the 'avx512' code path (flags: see setup.py).
#define SHUFFLEMAMBA_ISA avx512
#include "../causal_conv1d_cpu.cpp"
