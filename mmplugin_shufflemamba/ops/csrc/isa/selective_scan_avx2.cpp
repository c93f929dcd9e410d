// selective_scan_cpu.cpp compiled for the 'avx2' code path (flags: see setup.py).
#define SHUFFLEMAMBA_ISA avx2
#include "../selective_scan_cpu.cpp"
