"""The compiled kernels are safe to call: NaN and inf propagate like on the PyTorch
reference path (never silently finite), on every compiled code path and under the flags
the build ships; every tensor argument of every entry point is checked (size, dtype,
device) and a wrong call is a ValueError naming it, never a read out of bounds."""
import pytest
import torch

from mmplugin_shufflemamba.ops import (ShapeError, causal_conv1d, causal_conv1d_cpu,
                                       causal_conv1d_ref, cpu_paths, has_selective_scan_cpu,
                                       selective_scan, selective_scan_cpu,
                                       selective_scan_ref, selective_scan_torch)
from mmplugin_shufflemamba.ops import build_flags
from mmplugin_shufflemamba.ops.kernels import cpu_extension, get_cpu_path, set_cpu_path

from helpers.layouts import as_layout

needs_ext = pytest.mark.skipif(not has_selective_scan_cpu(),
                               reason='compiled CPU extension not built')
PATHS = [name for name, built, ok in cpu_paths() if built and ok] or ['generic']
SPECIALS = (float('nan'), float('inf'), -float('inf'))


@pytest.fixture
def path(request):
    """Run the test on one compiled code path, then restore the previous one."""
    if not has_selective_scan_cpu():
        pytest.skip('compiled CPU extension not built')
    before = get_cpu_path()
    set_cpu_path(request.param)
    yield request.param
    set_cpu_path(before)


def scan_inputs(dtype, batch=2, dim=20, seqlen=40, dstate=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(u=r(batch, dim, seqlen), delta=r(batch, dim, seqlen) * 0.5,
                A=-torch.rand(dim, dstate, generator=g, dtype=dtype) * 3,
                B=r(batch, dstate, seqlen), C=r(batch, dstate, seqlen), D=r(dim),
                z=r(batch, dim, seqlen), delta_bias=r(dim) * 0.1)


def plant(t, value):
    """One special value inside t (a time step past the first tile boundary for L)."""
    t = t.clone()
    if t.dim() == 3:
        t[1, min(5, t.shape[1] - 1), min(20, t.shape[2] - 1)] = value
    elif t.dim() == 2:
        t[min(5, t.shape[0] - 1), min(3, t.shape[1] - 1)] = value
    else:
        t[min(5, t.shape[0] - 1)] = value
    return t


def assert_same_specials(out, ref, what, rtol):
    """NaN where ref has NaN, the same infinities, close finite values."""
    assert torch.equal(torch.isnan(out), torch.isnan(ref)), f'{what}: NaN positions differ'
    inf = torch.isinf(ref)
    assert torch.equal(torch.isinf(out), inf), f'{what}: inf positions differ'
    assert torch.equal(out[inf], ref[inf]), f'{what}: signs of inf differ'
    fin = torch.isfinite(ref)
    if fin.any():
        torch.testing.assert_close(out[fin], ref[fin], rtol=rtol, atol=rtol, msg=what)


def assert_same_nonfinite(grad, ref, what):
    """Gradients: non-finite exactly where the reference's are (NaN vs inf may differ:
    the same sum of infinities in another, equivalent, factorisation)."""
    bad = torch.isfinite(grad) != torch.isfinite(ref)
    assert not bad.any(), f'{what}: {int(bad.sum())} entries finite on one side only'


# ------------------------------------------------------------ NaN / inf: the scan
@pytest.mark.parametrize('name', ['u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias'])
def test_torch_path_propagates_specials_like_the_reference(name):
    for value in SPECIALS:
        for softplus in (True, False):
            inp = scan_inputs(torch.float64)
            if not softplus:  # positive time steps, as softplus gives in a model
                inp['delta'] = inp['delta'].abs()
            inp[name] = plant(inp[name], value)
            ref = selective_scan_ref(**inp, delta_softplus=softplus)
            out = selective_scan_torch(**inp, delta_softplus=softplus)
            assert_same_specials(out, ref, f'{name}={value} softplus={softplus}', 1e-10)


@needs_ext
@pytest.mark.parametrize('path', PATHS, indirect=True)
@pytest.mark.parametrize('name', ['u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias',
                                  'dout'])
def test_scan_kernel_propagates_specials_like_the_reference(path, name):
    """Every input (and the incoming gradient) with NaN, +inf, -inf; with and without
    softplus, forward and reverse, float32 and float64; 16 states (the register path)
    and 3."""
    cases = [(torch.float64, 16, True, False), (torch.float32, 16, False, True),
             (torch.float64, 3, False, False), (torch.float32, 16, True, True)]
    for dtype, dstate, softplus, reverse in cases:
        for value in SPECIALS:
            inp = scan_inputs(dtype, dstate=dstate)
            if not softplus:
                inp['delta'] = inp['delta'].abs()
            dout = torch.randn(2, 20, 40, dtype=dtype)
            if name == 'dout':
                dout = plant(dout, value)
            else:
                inp[name] = plant(inp[name], value)
            a = {k: v.clone().requires_grad_() for k, v in inp.items()}
            b = {k: v.clone().requires_grad_() for k, v in inp.items()}
            ref = selective_scan_ref(**a, delta_softplus=softplus, reverse=reverse)
            out = selective_scan_cpu(**b, delta_softplus=softplus, reverse=reverse)
            what = f'{path} {dtype} N={dstate} {name}={value} softplus={softplus} ' \
                   f'reverse={reverse}'
            assert_same_specials(out, ref, what, 1e-9 if dtype == torch.float64 else 2e-4)
            (ref * dout).sum().backward()
            (out * dout).sum().backward()
            for k in a:
                assert_same_nonfinite(b[k].grad, a[k].grad, f'{what}: grad of {k}')


@needs_ext
@pytest.mark.parametrize('path', PATHS, indirect=True)
def test_scan_kernel_special_steps(path):
    """The elementwise math at its edges: softplus(-inf) = 0 (no step, the state is
    kept), softplus(+inf) = inf; huge decays underflow to exactly 0; silu(-inf) = NaN."""
    for dtype in (torch.float32, torch.float64):
        inp = scan_inputs(dtype, batch=1, dim=4, seqlen=6)
        inp['delta'][0, 0, 3] = -float('inf')
        inp['delta'][0, 1, 2] = 1e4  # exp(dt A) underflows
        inp['z'][0, 2, 4] = -float('inf')
        ref = selective_scan_ref(**inp, delta_softplus=True)
        out = selective_scan_cpu(**inp, delta_softplus=True)
        assert_same_specials(out, ref, f'{path} {dtype}', 1e-9 if dtype == torch.float64
                             else 1e-4)
        assert torch.isnan(out[0, 2, 4]) and torch.isfinite(out[0, :2]).all()


# ------------------------------------------------------------ NaN / inf: the conv
@pytest.mark.parametrize('reverse', [False, True])
def test_conv_reference_multiplies_the_padding(reverse):
    """A non-finite tap reaches every output of its channel, also those whose window
    covers the padding (as in causal-conv1d's CUDA kernel), in both dtypes."""
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(1, 3, 8, dtype=dtype)
        w = torch.randn(3, 4, dtype=dtype)
        w[1, 0] = float('inf')
        out = causal_conv1d_ref(x, w, None, None, reverse)
        assert not torch.isfinite(out[0, 1]).any()
        assert torch.isfinite(out[0, [0, 2]]).all()


@needs_ext
@pytest.mark.parametrize('path', PATHS, indirect=True)
@pytest.mark.parametrize('name', ['x', 'weight', 'bias', 'dout'])
def test_conv_kernel_propagates_specials_like_the_reference(path, name):
    for dtype in (torch.float64, torch.float32):
        for value in SPECIALS:
            for act, reverse, layout, pos in ((None, False, 'channel', 0),
                                              ('silu', True, 'token', 3),
                                              ('silu', False, 'token', 0),
                                              (None, True, 'channel', 2)):
                g = torch.Generator().manual_seed(1)
                x = torch.randn(2, 20, 30, generator=g, dtype=dtype)
                w = torch.randn(20, 4, generator=g, dtype=dtype)
                b = torch.randn(20, generator=g, dtype=dtype)
                dout = torch.randn(2, 20, 30, generator=g, dtype=dtype)
                if name == 'x':
                    x[1, 5, 10 + pos] = value
                elif name == 'weight':
                    w[5, pos] = value
                elif name == 'bias':
                    b[5] = value
                else:
                    dout[1, 5, 10 + pos] = value
                ra = [x.clone().requires_grad_(), w.clone().requires_grad_(),
                      b.clone().requires_grad_()]
                ka = [as_layout(x, layout).detach().requires_grad_(),
                      w.clone().requires_grad_(), b.clone().requires_grad_()]
                ref = causal_conv1d_ref(*ra, act, reverse)
                out = causal_conv1d_cpu(*ka, act, reverse)
                what = f'{path} {dtype} {name}={value} {act} reverse={reverse} {layout}'
                assert_same_specials(out, ref, what,
                                     1e-10 if dtype == torch.float64 else 1e-5)
                (ref * dout).sum().backward()
                (out * dout).sum().backward()
                for arg, p, q in zip(('x', 'weight', 'bias'), ra, ka):
                    assert_same_nonfinite(q.grad, p.grad, f'{what}: grad of {arg}')


def test_build_flags_keep_ieee_semantics():
    """No -ffast-math and none of its parts that change NaN / inf results."""
    for machine in ('x86_64', 'aarch64'):
        for p in build_flags.code_paths(machine, arch=None):
            flags = build_flags.COMMON_FLAGS + build_flags.path_flags(p, machine, arch=None)
            for bad in ('-ffast-math', '-ffinite-math-only', '-fassociative-math',
                        '-Ofast', '-funsafe-math-optimizations', '-freciprocal-math'):
                assert bad not in flags, (machine, p, bad)
            assert '-march=native' not in flags


# ------------------------------------------------------------ argument checks
def scan_args(dtype=torch.float32):
    inp = scan_inputs(dtype, batch=2, dim=5, seqlen=7, dstate=4)
    return inp


SCAN_WRONG = {  # argument: wrong-size replacements
    'u': [torch.randn(2, 5), torch.randn(2, 5, 8)],
    'delta': [torch.randn(2, 5, 8), torch.randn(2, 6, 7), torch.randn(1, 5, 7)],
    'A': [torch.randn(5), torch.randn(6, 4), torch.randn(5, 4, 1)],
    'B': [torch.randn(2, 4, 8), torch.randn(2, 3, 7), torch.randn(2, 4)],
    'C': [torch.randn(2, 4, 6), torch.randn(1, 4, 7), torch.randn(2, 5, 7)],
    'D': [torch.randn(6), torch.randn(5, 1)],
    'z': [torch.randn(2, 5, 8), torch.randn(2, 4, 7)],
    'delta_bias': [torch.randn(4), torch.randn(1, 5)],
}
SCAN_FNS = {
    'selective_scan_ref': selective_scan_ref,
    'selective_scan_torch': selective_scan_torch,
    'selective_scan(auto)': selective_scan,
    'selective_scan(torch)': lambda *a, **k: selective_scan(*a, kernel='torch', **k),
    'selective_scan_cpu': selective_scan_cpu,
}


@pytest.mark.parametrize('fn_name', list(SCAN_FNS))
@pytest.mark.parametrize('arg', list(SCAN_WRONG))
def test_scan_entry_points_check_every_argument(fn_name, arg):
    if fn_name == 'selective_scan_cpu' and not has_selective_scan_cpu():
        pytest.skip('compiled CPU extension not built')
    fn = SCAN_FNS[fn_name]
    wrong = [('size', t) for t in SCAN_WRONG[arg]]
    good = scan_args()[arg]
    wrong += [('dtype', good.long()), ('dtype', good.bool()),
              ('device', torch.empty(good.shape, device='meta'))]
    for kind, bad in wrong:
        inp = scan_args()
        inp[arg] = bad
        with pytest.raises(ValueError, match=arg) as info:
            fn(**inp, delta_softplus=True)
        assert isinstance(info.value, ShapeError), f'{kind}: {info.value}'


@pytest.mark.parametrize('fn_name', ['causal_conv1d', 'causal_conv1d_ref',
                                     'causal_conv1d_cpu'])
def test_conv_entry_points_check_every_argument(fn_name):
    if fn_name == 'causal_conv1d_cpu' and not has_selective_scan_cpu():
        pytest.skip('compiled CPU extension not built')
    fn = dict(causal_conv1d=causal_conv1d, causal_conv1d_ref=causal_conv1d_ref,
              causal_conv1d_cpu=causal_conv1d_cpu)[fn_name]
    good = dict(x=torch.randn(2, 5, 9), weight=torch.randn(5, 4), bias=torch.randn(5))
    wrong = {'x': [torch.randn(5, 9), torch.randn(2, 6, 9)],
             'weight': [torch.randn(6, 4), torch.randn(5), torch.randn(5, 0)],
             'bias': [torch.randn(6), torch.randn(5, 1)]}
    for arg, sizes in wrong.items():
        cases = sizes + [good[arg].long(), torch.empty(good[arg].shape, device='meta')]
        for bad in cases:
            kw = dict(good, **{arg: bad})
            with pytest.raises(ValueError, match=arg if arg != 'x' else 'x|weight'):
                fn(kw['x'], kw['weight'], kw['bias'], 'silu')


# The compiled entry points themselves (what a direct call of the extension reaches).
def ext_scan_args(dtype=torch.float32):
    inp = scan_args(dtype)
    return dict(u=inp['u'], delta=inp['delta'], A=inp['A'],
                Bt=inp['B'].transpose(1, 2).contiguous(),
                Ct=inp['C'].transpose(1, 2).contiguous(), D=inp['D'], z=inp['z'],
                delta_bias=inp['delta_bias'], dout=torch.randn(2, 5, 7, dtype=dtype))


EXT_SCAN_WRONG = {
    'u': [torch.randn(2, 5), torch.randn(2, 5, 7, 1)],
    'delta': [torch.randn(2, 5, 8), torch.randn(2, 6, 7), torch.randn(3, 5, 7)],
    'A': [torch.randn(5), torch.randn(6, 4), torch.randn(4, 4)],
    'Bt': [torch.randn(2, 7, 5), torch.randn(2, 8, 4), torch.randn(2, 4, 7), torch.randn(7, 4)],
    'Ct': [torch.randn(2, 7, 3), torch.randn(1, 7, 4), torch.randn(2, 4, 7)],
    'D': [torch.randn(6), torch.randn(4), torch.randn(5, 1)],
    'z': [torch.randn(2, 5, 8), torch.randn(2, 4, 7)],
    'delta_bias': [torch.randn(4), torch.randn(5, 2)],
    'dout': [torch.randn(2, 5, 8), torch.randn(2, 5)],
}
EXT_NAMES = {'Bt': 'B', 'Ct': 'C', 'delta_bias': 'delta_bias'}


@needs_ext
@pytest.mark.parametrize('entry', ['selective_scan_fwd', 'selective_scan_bwd'])
@pytest.mark.parametrize('arg', list(EXT_SCAN_WRONG))
def test_compiled_scan_checks_every_argument(entry, arg):
    ext = cpu_extension()
    if arg == 'dout' and entry == 'selective_scan_fwd':
        pytest.skip('the forward has no dout')

    def call(a):
        args = [a['u'], a['delta'], a['A'], a['Bt'], a['Ct'], a['D'], a['z'],
                a['delta_bias'], True, False]
        if entry == 'selective_scan_bwd':
            args.append(a['dout'])
        return getattr(ext, entry)(*args)

    call(ext_scan_args())  # the good call works
    good = ext_scan_args()[arg]
    cases = EXT_SCAN_WRONG[arg] + [good.double(), good.long(), good.half(),
                                   torch.empty(good.shape, device='meta')]
    for bad in cases:
        a = ext_scan_args()
        a[arg] = bad
        name = EXT_NAMES.get(arg, arg)
        with pytest.raises(ValueError, match=rf'{entry}: .*\b{name}\b'):
            call(a)


@needs_ext
@pytest.mark.parametrize('entry', ['causal_conv1d_fwd', 'causal_conv1d_bwd'])
def test_compiled_conv_checks_every_argument(entry):
    ext = cpu_extension()
    good = dict(x=torch.randn(2, 5, 9), weight=torch.randn(5, 4), bias=torch.randn(5),
                dout=torch.randn(2, 5, 9))
    wrong = {'x': [torch.randn(5, 9), torch.randn(2, 5, 9, 1)],
             'weight': [torch.randn(6, 4), torch.randn(5), torch.randn(5, 0),
                        torch.randn(5, 4, 1)],
             'bias': [torch.randn(6), torch.randn(5, 1)],
             'dout': [torch.randn(2, 5, 8), torch.randn(2, 6, 9), torch.randn(2, 5)]}
    if entry == 'causal_conv1d_fwd':
        del wrong['dout']

    def call(a):
        args = [a['x'], a['weight'], a['bias'], True, False]
        if entry == 'causal_conv1d_bwd':
            args.append(a['dout'])
        return getattr(ext, entry)(*args)

    call(good)
    for arg, sizes in wrong.items():
        for bad in sizes + [good[arg].double(), good[arg].int(),
                            torch.empty(good[arg].shape, device='meta')]:
            a = dict(good, **{arg: bad})
            with pytest.raises(ValueError, match=rf'{entry}: .*\b{arg}\b'):
                call(a)


@needs_ext
def test_empty_and_degenerate_sizes_are_safe():
    """Zero-size batch, channels or steps, one state: no kernel reads anything."""
    for batch, dim, seqlen, dstate in ((0, 3, 5, 4), (2, 0, 5, 4), (2, 3, 0, 4),
                                       (1, 1, 1, 1), (2, 3, 5, 0)):
        inp = scan_inputs(torch.float32, batch, dim, seqlen, dstate)
        a = {k: v.clone().requires_grad_() for k, v in inp.items()}
        out = selective_scan_cpu(**a, delta_softplus=True)
        ref = selective_scan_torch(**inp, delta_softplus=True) if seqlen else out
        assert out.shape == (batch, dim, seqlen)
        torch.testing.assert_close(out, ref)
        out.sum().backward()
        x = torch.randn(batch, dim, seqlen, requires_grad=True)
        y = causal_conv1d_cpu(x, torch.randn(dim, 4), torch.randn(dim), 'silu')
        assert y.shape == x.shape
        y.sum().backward()
