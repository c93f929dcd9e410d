"""The compiled CPU kernels are built for any machine of their architecture: one copy
per instruction-set level (generic; AVX2; AVX-512 on x86-64), chosen at run time from
the CPU's features. The paths agree with each other; none of the baseline code uses
AVX registers; the sources also build for aarch64 (cross compiler)."""
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest
import torch

from mmplugin_shufflemamba.ops import (causal_conv1d_cpu, cpu_paths, has_selective_scan_cpu,
                                       selective_scan_cpu, selective_scan_torch)
from mmplugin_shufflemamba.ops import build_flags
from mmplugin_shufflemamba.ops.kernels import cpu_extension, get_cpu_path, set_cpu_path

from helpers.layouts import as_layout

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_ext = pytest.mark.skipif(not has_selective_scan_cpu(),
                               reason='compiled CPU extension not built')
RUNNABLE = [name for name, built, ok in cpu_paths() if built and ok]


def on_path(name, fn):
    before = get_cpu_path()
    set_cpu_path(name)
    try:
        return fn()
    finally:
        set_cpu_path(before)


def scan_case(dtype, shape, layout, reverse, seed):
    batch, dim, seqlen, dstate = shape
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    inp = dict(u=r(batch, dim, seqlen), delta=r(batch, dim, seqlen) * 0.5,
               A=-torch.rand(dim, dstate, generator=g, dtype=dtype) * 3,
               B=r(batch, dstate, seqlen), C=r(batch, dstate, seqlen), D=r(dim),
               z=r(batch, dim, seqlen), delta_bias=r(dim) * 0.1)
    dout = r(batch, dim, seqlen)

    def run():
        args = {k: (as_layout(v, layout) if k in ('u', 'delta', 'z') else v.clone())
                .detach().requires_grad_() for k, v in inp.items()}
        out = selective_scan_cpu(**args, delta_softplus=True, reverse=reverse)
        (out * dout).sum().backward()
        return out.detach(), {k: v.grad for k, v in args.items()}

    return inp, run


@needs_ext
def test_a_path_is_chosen_and_reported():
    paths = {name: (built, ok) for name, built, ok in cpu_paths()}
    assert set(paths) == {'generic', 'avx2', 'avx512'}
    assert paths['generic'] == (True, True)
    assert get_cpu_path() in RUNNABLE
    if not os.environ.get('SHUFFLEMAMBA_CPU_ISA'):  # auto: the best this CPU runs
        assert get_cpu_path() == RUNNABLE[-1]
    with pytest.raises(ValueError, match='unknown CPU code path'):
        set_cpu_path('sse9')
    assert 'paths' in cpu_extension().build_flags


@needs_ext
@pytest.mark.skipif(len(RUNNABLE) < 2, reason='only one code path runs on this CPU')
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 2e-5), (torch.float64, 1e-11)])
@pytest.mark.parametrize('shape,layout,reverse', [
    ((2, 37, 150, 16), 'token', False),   # the register recurrences, partial blocks/tiles
    ((2, 37, 150, 16), 'channel', True),
    ((1, 21, 70, 5), 'strided', False),   # a state size without specialisation
    ((3, 16, 64, 16), 'token', True),
])
def test_code_paths_agree(dtype, tol, shape, layout, reverse):
    """Forced one after the other, every path this CPU runs gives the same outputs and
    gradients (within float rounding), and agrees with the PyTorch path."""
    inp, run = scan_case(dtype, shape, layout, reverse, seed=shape[1])
    results = {name: on_path(name, run) for name in RUNNABLE}
    ref_args = {k: v.clone().requires_grad_() for k, v in inp.items()}
    ref = selective_scan_torch(**ref_args, delta_softplus=True, reverse=reverse)
    base_out, base_grads = results['generic']
    torch.testing.assert_close(base_out, ref.detach(), atol=tol, rtol=tol)
    for name, (out, grads) in results.items():
        torch.testing.assert_close(out, base_out, atol=tol, rtol=tol,
                                   msg=lambda m: f'{name} output: {m}')
        for k, g in grads.items():
            scale = base_grads[k].abs().max().clamp_min(1.0)
            torch.testing.assert_close(g / scale, base_grads[k] / scale, atol=tol, rtol=tol,
                                       msg=lambda m: f'{name} grad of {k}: {m}')


@needs_ext
@pytest.mark.skipif(len(RUNNABLE) < 2, reason='only one code path runs on this CPU')
@pytest.mark.parametrize('layout', ['token', 'channel'])
def test_conv_code_paths_agree(layout):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 37, 53, generator=g)
    w, b = torch.randn(37, 4, generator=g), torch.randn(37, generator=g)
    dout = torch.randn(2, 37, 53, generator=g)

    def run():
        xs = as_layout(x, layout).requires_grad_()
        ws, bs = w.clone().requires_grad_(), b.clone().requires_grad_()
        out = causal_conv1d_cpu(xs, ws, bs, 'silu', True)
        (out * dout).sum().backward()
        return out.detach(), xs.grad, ws.grad, bs.grad

    res = {name: on_path(name, run) for name in RUNNABLE}
    for name, vals in res.items():
        for got, want in zip(vals, res['generic']):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@needs_ext
def test_env_override_chooses_the_path():
    code = ('from mmplugin_shufflemamba.ops.kernels import get_cpu_path; '
            'print("PATH", get_cpu_path())')
    env = dict(os.environ, SHUFFLEMAMBA_CPU_ISA='generic')
    run = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert 'PATH generic' in run.stdout, run.stderr[-2000:]
    env['SHUFFLEMAMBA_CPU_ISA'] = 'sse9'
    run = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode != 0 and 'SHUFFLEMAMBA_CPU_ISA=sse9' in run.stderr


def test_build_configuration():
    """x86-64 builds three paths (baseline x86-64, x86-64-v3, x86-64-v4), any other
    machine the generic one; SHUFFLEMAMBA_CPU_ARCH builds one path for one machine kind."""
    assert build_flags.code_paths('x86_64', arch=None) == ['generic', 'avx2', 'avx512']
    assert build_flags.code_paths('aarch64', arch=None) == ['generic']
    assert build_flags.path_flags('generic', 'x86_64', arch=None)[0] == '-march=x86-64'
    assert '-mavx2' in build_flags.path_flags('avx2', 'x86_64', arch=None)
    assert '-mavx512f' not in build_flags.path_flags('avx2', 'x86_64', arch=None)
    assert '-mavx512dq' in build_flags.path_flags('avx512', 'x86_64', arch=None)
    assert build_flags.path_flags('generic', 'aarch64', arch=None) == []
    assert build_flags.code_paths('x86_64', arch='native') == ['generic']
    assert build_flags.path_flags('generic', 'x86_64', arch='native') == ['-march=native']
    srcs = build_flags.sources('x86_64', arch=None)
    assert srcs[0].endswith('bindings.cpp')
    # bindings, the baseline-only kernels, then every kernel once per code path
    assert len(srcs) == 1 + len(build_flags.BASELINE_SOURCES) + 3 * len(build_flags.KERNELS)
    assert srcs[1:1 + len(build_flags.BASELINE_SOURCES)] == [
        f'{build_flags.CSRC}/{s}' for s in build_flags.BASELINE_SOURCES]
    for src in srcs:
        assert os.path.isfile(os.path.join(ROOT, src)), src


@needs_ext
@pytest.mark.skipif(not re.match(r'x86_64|amd64', os.uname().machine, re.I),
                    reason='x86-64 only')
@pytest.mark.skipif(shutil.which('objdump') is None, reason='needs objdump (binutils)')
def test_baseline_code_uses_no_avx_registers():
    """Only the AVX2 / AVX-512 paths' own functions may touch ymm / zmm registers: an
    inline function or template shared by the translation units must not be linked in
    from an AVX copy (it would crash the generic path on an older CPU)."""
    path = cpu_extension().__file__
    dis = subprocess.run(['objdump', '-d', '--no-show-raw-insn', path], capture_output=True,
                         text=True, timeout=300).stdout
    assert dis, 'objdump gave no output'
    offenders, current = set(), None
    isa_names = ('12shufflemamba4avx2', '12shufflemamba6avx512')  # mangled namespaces
    for line in dis.splitlines():
        m = re.match(r'^[0-9a-f]+ <(.*)>:$', line)
        if m:
            current = m.group(1)
            continue
        if current and re.search(r'%[yz]mm', line) and not any(n in current
                                                               for n in isa_names):
            offenders.add(current)
    assert not offenders, sorted(offenders)[:10]


def _cross_compiler():
    return shutil.which('aarch64-linux-gnu-g++')


def _cross_compile(src, extra, tmp_path):
    from torch.utils.cpp_extension import include_paths
    incs = sum((['-I', p] for p in include_paths() + [sysconfig.get_paths()['include']]), [])
    flags = build_flags.COMMON_FLAGS + build_flags.path_flags('generic', 'aarch64', arch=None)
    macros = [f'-D{k}={v}' for k, v in build_flags.define_macros('aarch64', arch=None)]
    cmd = [_cross_compiler(), '-fPIC', '-DTORCH_EXTENSION_NAME=_ext',
           '-DTORCH_API_INCLUDE_EXTENSION_H'] + macros + flags + incs + extra + [
               os.path.join(ROOT, src)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)


@pytest.mark.skipif(_cross_compiler() is None,
                    reason='no aarch64 cross compiler (apt-get install g++-aarch64-linux-gnu)')
def test_kernels_compile_for_aarch64(tmp_path):
    """The generic path's kernels compile for aarch64 (no x86 intrinsics leak in)."""
    for src in build_flags.sources('aarch64', arch=None)[1:]:
        obj = tmp_path / (os.path.basename(src) + '.o')
        run = _cross_compile(src, ['-c', '-o', str(obj)], tmp_path)
        assert run.returncode == 0, run.stderr[-4000:]
        with open(obj, 'rb') as f:
            head = f.read(20)
        assert head[:4] == b'\x7fELF' and head[18] == 183, 'not an aarch64 object'  # EM_AARCH64


@pytest.mark.slow
@pytest.mark.skipif(_cross_compiler() is None,
                    reason='no aarch64 cross compiler (apt-get install g++-aarch64-linux-gnu)')
def test_bindings_compile_for_aarch64(tmp_path):
    run = _cross_compile(build_flags.sources('aarch64', arch=None)[0], ['-fsyntax-only'],
                         tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
