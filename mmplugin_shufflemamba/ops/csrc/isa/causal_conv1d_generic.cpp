// causal_conv1d_cpu.cpp compiled for the 'generic' code path (flags: see setup.py).
#define SHUFFLEMAMBA_ISA generic
#include "../causal_conv1d_cpu.cpp"
