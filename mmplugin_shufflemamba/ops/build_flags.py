"""Sources and compiler flags of the compiled CPU kernels (``mmplugin_shufflemamba._ext``).

Used by ``setup.py`` (loaded by file path: standard library imports only) and by the
tests that compile the sources for another architecture. The kernels are compiled once
per code path, each copy in its own C++ namespace (``csrc/isa/*.cpp``), and
``csrc/bindings.cpp`` picks one at run time from the CPU's features:

- ``generic``: the target's baseline (x86-64, or aarch64 / any other architecture),
- ``avx2``: x86-64-v3 (AVX2, FMA, BMI2; Haswell / Zen and later),
- ``avx512``: x86-64-v4 (AVX-512 F/DQ/BW/VL/CD; Skylake-SP / Zen 4 and later).

``SHUFFLEMAMBA_CPU_ARCH=<march>`` (e.g. ``native``) builds a single path with
``-march=<march>`` instead. No ``-ffast-math`` (the kernels keep IEEE semantics), see
docs/kernels_and_performance.md#compiler-flags.
"""
import os
import platform
from typing import Dict, List, Optional, Tuple

CSRC = 'mmplugin_shufflemamba/ops/csrc'
KERNELS = ('selective_scan', 'causal_conv1d')
# Compiled once with the baseline flags, outside the per-ISA scheme: multi-scale
# deformable attention (memory bound), which holds its own argument checks and entry
# points.
BASELINE_SOURCES = ('ms_deform_attn_cpu.cpp', )
HEADERS = ('cpu_math.h', 'cpu_layout.h', 'kernel_api.h', 'selective_scan_cpu.cpp',
           'causal_conv1d_cpu.cpp')

COMMON_FLAGS = ['-O3', '-std=c++20', '-fopenmp', '-fno-math-errno', '-fno-trapping-math',
                '-ffp-contract=fast', '-fvisibility=hidden']
_X86_V3 = ['-msse4.2', '-mpopcnt', '-mavx', '-mavx2', '-mfma', '-mbmi', '-mbmi2', '-mf16c',
           '-mlzcnt', '-mmovbe']
_X86_V4 = _X86_V3 + ['-mavx512f', '-mavx512dq', '-mavx512bw', '-mavx512vl', '-mavx512cd']
ISA_FLAGS_X86 = {
    'generic': ['-march=x86-64', '-mtune=generic'],
    'avx2': ['-march=x86-64', '-mtune=generic'] + _X86_V3,
    'avx512': ['-march=x86-64', '-mtune=generic'] + _X86_V4 + ['-mprefer-vector-width=512'],
}


def _arch(arch: Optional[str]) -> Optional[str]:
    """``arch``, or ``SHUFFLEMAMBA_CPU_ARCH`` when it is None (None when unset)."""
    return (os.environ.get('SHUFFLEMAMBA_CPU_ARCH') or None) if arch is None else arch


def is_x86_64(machine: Optional[str] = None) -> bool:
    machine = (machine or platform.machine()).lower()
    return machine in ('x86_64', 'amd64', 'x64')


def code_paths(machine: Optional[str] = None, arch: Optional[str] = None) -> List[str]:
    """The code paths built for ``machine`` (default: this one)."""
    if _arch(arch) is not None or not is_x86_64(machine):
        return ['generic']
    return ['generic', 'avx2', 'avx512']


def path_flags(path: str, machine: Optional[str] = None,
               arch: Optional[str] = None) -> List[str]:
    """Extra flags of one code path (on top of :data:`COMMON_FLAGS`)."""
    arch = _arch(arch)
    if arch is not None:
        return [f'-march={arch}']
    if not is_x86_64(machine):
        return []  # the compiler's baseline for the target (e.g. armv8-a)
    return list(ISA_FLAGS_X86[path])


def _source_paths(machine, arch) -> List[Tuple[str, str]]:
    """``(source, code path)`` in build order: ``bindings.cpp`` first (its copies of
    shared inline code win at link time), the baseline-only kernels, then the kernels of
    every code path, oldest instruction set first."""
    out = [(f'{CSRC}/{s}', 'generic') for s in ('bindings.cpp', ) + BASELINE_SOURCES]
    for path in code_paths(machine, arch):
        out += [(f'{CSRC}/isa/{k}_{path}.cpp', path) for k in KERNELS]
    return out


def sources(machine: Optional[str] = None, arch: Optional[str] = None) -> List[str]:
    """The sources in build order (see :func:`_source_paths`)."""
    return [s for s, _ in _source_paths(machine, arch)]


def source_flags(machine: Optional[str] = None,
                 arch: Optional[str] = None) -> Dict[str, List[str]]:
    """Per-source extra flags ``{source: flags}``; bindings.cpp and the baseline-only
    kernels get the baseline's."""
    return {s: path_flags(p, machine, arch) for s, p in _source_paths(machine, arch)}


def define_macros(machine: Optional[str] = None,
                  arch: Optional[str] = None) -> List[tuple]:
    paths = code_paths(machine, arch)
    macros = [(f'SHUFFLEMAMBA_WITH_{p.upper()}', '1') for p in paths if p != 'generic']
    arch = _arch(arch)
    desc = f'paths {"+".join(paths)}' + (f', -march={arch}' if arch else '')
    macros.append(('SHUFFLEMAMBA_BUILD_FLAGS', f'"{desc}"'))
    return macros
