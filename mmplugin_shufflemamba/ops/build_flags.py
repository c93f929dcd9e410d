"""Sources and compiler flags of the compiled CPU kernels (``mmplugin_shufflemamba._ext``).

Used by ``setup.py`` (loaded by file path, so it imports nothing but the standard
library) and by the tests that compile the sources for another architecture.

The kernels are compiled once per code path, each copy in its own C++ namespace
(``csrc/isa/*.cpp``), and ``csrc/bindings.cpp`` picks one at run time from the CPU's
features, so that one build runs on any CPU of its architecture:

- ``generic``: the target's baseline (x86-64, or aarch64 / any other architecture),
- ``avx2``: x86-64-v3 (AVX2, FMA, BMI2; Haswell / Zen and later),
- ``avx512``: x86-64-v4 (AVX-512 F/DQ/BW/VL/CD; Skylake-SP / Zen 4 and later); the scan
  has a hand-written AVX-512 recurrence.

``SHUFFLEMAMBA_CPU_ARCH=<march>`` (e.g. ``native``) builds a single path with
``-march=<march>`` instead: a build for one kind of machine only.

No ``-ffast-math``: its ``-ffinite-math-only`` lets the compiler assume that there is no
NaN or inf (a NaN time step came out finite), and its ``-fassociative-math`` is not safe
either: with it, GCC 12 drops ``o += w * 0`` from a vectorised loop, so a NaN tap no
longer reached the output. The kernels keep IEEE semantics and only drop what is never
observed: ``errno`` for math functions and floating-point traps (plus FMA contraction).
``-fvisibility=hidden``: the kernels' symbols (one copy per code path) stay private to
the extension.
Where -ffast-math bought speed (reassociated sums), the code splits its long sums into
independent partial sums itself. The tests check NaN and inf on every code path.
"""
import os
import platform
from typing import Dict, List, Optional

CSRC = 'mmplugin_shufflemamba/ops/csrc'
KERNELS = ('selective_scan', 'causal_conv1d')
# Kernels compiled once, with the baseline flags (``generic``), outside the per-ISA
# scheme: multi-scale deformable attention sampling (memory bound: gathers of short
# rows), which also holds its own argument checks and entry points.
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


def is_x86_64(machine: Optional[str] = None) -> bool:
    machine = (machine or platform.machine()).lower()
    return machine in ('x86_64', 'amd64', 'x64')


def code_paths(machine: Optional[str] = None, arch: Optional[str] = None) -> List[str]:
    """The code paths built for ``machine`` (default: this one)."""
    if arch is None:
        arch = os.environ.get('SHUFFLEMAMBA_CPU_ARCH') or None
    if arch is not None or not is_x86_64(machine):
        return ['generic']
    return ['generic', 'avx2', 'avx512']


def path_flags(path: str, machine: Optional[str] = None,
               arch: Optional[str] = None) -> List[str]:
    """Extra flags of one code path (on top of :data:`COMMON_FLAGS`)."""
    if arch is None:
        arch = os.environ.get('SHUFFLEMAMBA_CPU_ARCH') or None
    if arch is not None:
        return [f'-march={arch}']
    if not is_x86_64(machine):
        return []  # the compiler's baseline for the target (e.g. armv8-a)
    return list(ISA_FLAGS_X86[path])


def sources(machine: Optional[str] = None, arch: Optional[str] = None) -> List[str]:
    """``bindings.cpp`` first (its copies of shared inline code win at link time), then
    the baseline-only kernels (:data:`BASELINE_SOURCES`), then the kernels of every code
    path, oldest instruction set first."""
    out = [f'{CSRC}/bindings.cpp'] + [f'{CSRC}/{s}' for s in BASELINE_SOURCES]
    for path in code_paths(machine, arch):
        out += [f'{CSRC}/isa/{k}_{path}.cpp' for k in KERNELS]
    return out


def source_flags(machine: Optional[str] = None,
                 arch: Optional[str] = None) -> Dict[str, List[str]]:
    """Per-source extra flags: ``{source: flags}``; bindings.cpp and the baseline-only
    kernels get the baseline's."""
    out = {f'{CSRC}/bindings.cpp': path_flags('generic', machine, arch)}
    for s in BASELINE_SOURCES:
        out[f'{CSRC}/{s}'] = path_flags('generic', machine, arch)
    for path in code_paths(machine, arch):
        for k in KERNELS:
            out[f'{CSRC}/isa/{k}_{path}.cpp'] = path_flags(path, machine, arch)
    return out


def define_macros(machine: Optional[str] = None,
                  arch: Optional[str] = None) -> List[tuple]:
    paths = code_paths(machine, arch)
    macros = [(f'SHUFFLEMAMBA_WITH_{p.upper()}', '1') for p in paths if p != 'generic']
    if arch is None:
        arch = os.environ.get('SHUFFLEMAMBA_CPU_ARCH') or None
    desc = f'paths {"+".join(paths)}' + (f', -march={arch}' if arch else '')
    macros.append(('SHUFFLEMAMBA_BUILD_FLAGS', f'"{desc}"'))
    return macros
