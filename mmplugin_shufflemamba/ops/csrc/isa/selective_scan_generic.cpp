// selective_scan_cpu.cpp compiled for the 'generic' code path (flags: see setup.py).
#define SHUFFLEMAMBA_ISA generic
#include "../selective_scan_cpu.cpp"
