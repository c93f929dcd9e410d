"""The compiled CPU kernel of multi-scale deformable attention sampling
(``ms_deform_attn_cpu``) against mmcv's ``multi_scale_deformable_attn_pytorch``:
outputs and the gradients of value, sampling locations and attention weights, NaN and
inf propagation, determinism, argument checks, and its use by the adapter's
``MSDeformAttn``."""
import sys

import pytest
import torch
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch as mmcv_ref

from mmplugin_shufflemamba.ops import (has_ms_deform_attn_cpu, ms_deform_attn,
                                       ms_deform_attn_cpu, ms_deform_attn_ref)
from mmplugin_shufflemamba.ops.kernels import cpu_extension

msda_mod = sys.modules['mmplugin_shufflemamba.ops.ms_deform_attn']

needs_ext = pytest.mark.skipif(not has_ms_deform_attn_cpu(),
                               reason='compiled CPU extension not built')


def make_case(batch, shapes, heads, dims, queries, points, dtype=torch.float32, seed=0,
              lo=-0.3, hi=1.3, borders=True):
    """Random inputs; locations in [lo, hi] (outside 0..1: zero padding matters), with a
    few exactly on a level's border (0, 1) and on the edge of the zero padding (pixel
    coordinates -1 and w, exact in float arithmetic for power-of-two sizes)."""
    g = torch.Generator().manual_seed(seed)
    shapes_t = torch.tensor(shapes, dtype=torch.long)
    keys = int(shapes_t.prod(1).sum())
    levels = len(shapes)
    value = torch.randn(batch, keys, heads, dims, generator=g, dtype=dtype)
    loc = torch.rand(batch, queries, heads, levels, points, 2, generator=g, dtype=dtype)
    loc = lo + (hi - lo) * loc
    if borders:
        for lvl, (h, w) in enumerate(shapes):
            specials = torch.tensor([0.0, 1.0, -0.5 / w, 1 + 0.5 / w, 0.5], dtype=dtype)
            n = min(queries, specials.numel())
            loc[0, :n, 0, lvl, 0, 0] = specials[:n]
            loc[-1, :n, -1, lvl, -1, 1] = torch.tensor(
                [0.0, 1.0, -0.5 / h, 1 + 0.5 / h, 0.5], dtype=dtype)[:n]
    attn = torch.rand(batch, queries, heads, levels, points, generator=g, dtype=dtype)
    attn = attn / attn.sum((-1, -2), keepdim=True)
    dout = torch.randn(batch, queries, heads * dims, generator=g, dtype=dtype)
    return value, shapes_t, loc, attn, dout


def run(fn, value, shapes, loc, attn, dout):
    """Output and the three gradients of (fn(...) * dout).sum()."""
    args = [t.clone().requires_grad_() for t in (value, loc, attn)]
    out = fn(args[0], shapes, args[1], args[2])
    (out * dout).sum().backward()
    return out.detach(), args[0].grad, args[1].grad, args[2].grad


def assert_close_scaled(got, want, tol, what):
    scale = want.abs().max().clamp_min(1.0)
    torch.testing.assert_close(got / scale, want / scale, atol=tol, rtol=tol,
                               msg=lambda m: f'{what}: {m}')


CASES = [
    # batch, level shapes (h, w), heads, head dims, queries, points
    (1, [(4, 8)], 2, 8, 7, 1),                    # one level, non-square
    (2, [(8, 4), (4, 2), (2, 1)], 3, 32, 11, 4),  # the adapter's head width, 1-px level
    (2, [(5, 7), (3, 1), (1, 4)], 4, 13, 9, 3),   # odd sizes, channel tail (13 % 8)
    (1, [(16, 16), (8, 8), (4, 4)], 12, 32, 20, 4),
]


@needs_ext
@pytest.mark.parametrize('case', CASES)
def test_matches_mmcv_forward_and_backward(case):
    value, shapes, loc, attn, dout = make_case(*case, seed=len(case[1]) + case[3])
    out, gv, gl, ga = run(ms_deform_attn_cpu, value, shapes, loc, attn, dout)
    rout, rgv, rgl, rga = run(mmcv_ref, value, shapes, loc, attn, dout)
    assert out.shape == rout.shape and out.dtype == torch.float32
    assert_close_scaled(out, rout, 1e-5, 'output')
    assert_close_scaled(gv, rgv, 1e-5, 'grad value')
    assert_close_scaled(gl, rgl, 1e-5, 'grad sampling_locations')
    assert_close_scaled(ga, rga, 1e-5, 'grad attention_weights')
    # zero padding is exercised: some points lie entirely outside their level
    assert (rgl == 0).any() and (loc < -0.2).any()


@needs_ext
def test_float64_matches_and_gradcheck():
    value, shapes, loc, attn, dout = make_case(2, [(3, 4), (2, 1)], 2, 3, 4, 2,
                                               dtype=torch.float64, seed=5, borders=False)
    out, gv, gl, ga = run(ms_deform_attn_cpu, value, shapes, loc, attn, dout)
    rout, rgv, rgl, rga = run(mmcv_ref, value, shapes, loc, attn, dout)
    assert out.dtype == torch.float64
    for got, want in ((out, rout), (gv, rgv), (gl, rgl), (ga, rga)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    args = [t.clone().requires_grad_() for t in (value, loc, attn)]
    assert torch.autograd.gradcheck(
        lambda v, lc, a: ms_deform_attn_cpu(v, shapes, lc, a), args, eps=1e-6, atol=1e-6)


def assert_same_specials(got, want, what):
    assert torch.equal(torch.isnan(got), torch.isnan(want)), f'{what}: NaN positions differ'
    inf = torch.isinf(want)
    assert torch.equal(torch.isinf(got), inf), f'{what}: inf positions differ'
    assert torch.equal(got[inf], want[inf]), f'{what}: signs of inf differ'
    fin = torch.isfinite(want)
    assert_close_scaled(got[fin], want[fin], 1e-5, what)


@needs_ext
@pytest.mark.parametrize('where', ['value_nan', 'value_inf', 'loc_x_nan', 'loc_y_nan',
                                   'loc_inf', 'loc_huge', 'attn_nan', 'attn_nan_outside',
                                   'dout_nan'])
def test_nan_and_inf_propagate_like_mmcv(where):
    """NaN and inf land at the same places of the output and of all three gradients as
    on the reference path (including its quirks: a NaN x coordinate gives a zero x
    gradient and a NaN y gradient; a point outside its level with a NaN weight gives a
    NaN output and NaN location gradients)."""
    value, shapes, loc, attn, dout = make_case(2, [(4, 6), (2, 3)], 2, 8, 5, 2, seed=7,
                                               borders=False)
    if where == 'value_nan':
        value[1, 3, 1, 2] = float('nan')  # level 0, row 0, column 3
        loc[1, :, 1, 0, :, 0] = 0.55  # x = 2.8: columns 2 and 3
        loc[1, :, 1, 0, :, 1] = 0.3   # y = 0.7: rows 0 and 1
    elif where == 'value_inf':
        value[0, 25, 0, 5] = float('inf')  # level 1, row 0, column 1
        loc[0, :, 0, 1] = 0.5
    elif where == 'loc_x_nan':
        loc[0, 2, 1, 1, 0, 0] = float('nan')
    elif where == 'loc_y_nan':
        loc[1, 4, 0, 0, 1, 1] = float('nan')
    elif where == 'loc_inf':
        loc[0, 1, 0, 0, 0, 0] = float('inf')
        loc[1, 1, 1, 1, 1, 1] = -float('inf')
    elif where == 'loc_huge':  # finite but far outside: no integer overflow, zeros
        loc[0, 1, 0, 0, 0, 0] = 1e30
        loc[1, 1, 1, 1, 1, 1] = -3e38
    elif where == 'attn_nan':
        attn[1, 0, 0, 1, 1] = float('nan')
    elif where == 'attn_nan_outside':
        attn[0, 3, 1, 0, 0] = float('nan')
        loc[0, 3, 1, 0, 0] = 5.0
    elif where == 'dout_nan':
        dout[1, 2, 4] = float('nan')
    got = run(ms_deform_attn_cpu, value, shapes, loc, attn, dout)
    want = run(mmcv_ref, value, shapes, loc, attn, dout)
    specials = 0
    for name, g, w in zip(('output', 'grad value', 'grad loc', 'grad attn'), got, want):
        assert_same_specials(g, w, f'{where} {name}')
        specials += int((~torch.isfinite(w)).sum())
    if where != 'loc_huge':
        assert specials > 0  # the case does reach the outputs


@needs_ext
def test_deterministic_and_independent_of_thread_count():
    value, shapes, loc, attn, dout = make_case(2, [(8, 8), (4, 4)], 4, 16, 64, 4, seed=3)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 1, max(2, before)):
            torch.set_num_threads(threads)
            results.append(run(ms_deform_attn_cpu, value, shapes, loc, attn, dout))
    finally:
        torch.set_num_threads(before)
    for res in results[1:]:
        for a, b in zip(res, results[0]):
            assert torch.equal(a, b)


@needs_ext
def test_any_layout_and_low_precision_inputs():
    value, shapes, loc, attn, dout = make_case(2, [(4, 4), (2, 2)], 2, 8, 6, 2, seed=11)
    want = run(ms_deform_attn_cpu, value, shapes, loc, attn, dout)
    # non-contiguous views of the same numbers
    v_nc = value.transpose(1, 2).contiguous().transpose(1, 2)
    l_nc = torch.stack([loc, -loc], -1)[..., 0]
    a_nc = torch.stack([attn, attn], -1)[..., 0]
    assert not (v_nc.is_contiguous() or l_nc.is_contiguous() or a_nc.is_contiguous())
    got = run(ms_deform_attn_cpu, v_nc, shapes, l_nc, a_nc, dout.transpose(0, 1)
              .contiguous().transpose(0, 1))
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    # bfloat16 inputs compute in float32 and come back in bfloat16
    out = ms_deform_attn_cpu(value.bfloat16(), shapes, loc, attn)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), want[0], atol=3e-2, rtol=3e-2)


@needs_ext
def test_bad_arguments_raise_clear_errors():
    value, shapes, loc, attn, _ = make_case(1, [(4, 4), (2, 2)], 2, 8, 3, 2, seed=1)

    def fails(match, *args):
        with pytest.raises(ValueError, match=match):
            ms_deform_attn_cpu(*args)

    fails('value must be', value[0], shapes, loc, attn)
    fails('add up to', value[:, :-1], shapes, loc, attn)
    fails('add up to', value, torch.tensor([[4, 4], [2, 3]]), loc, attn)
    fails('sampling_locations must', value, shapes, loc[..., :1], attn)
    fails('sampling_locations must', value, shapes, loc[:, :, :1], attn)
    fails('sampling_locations must', value, torch.tensor([[4, 4], [2, 2], [0, 0]]), loc, attn)
    fails('attention_weights must', value, shapes, loc, attn[..., :1])
    fails('spatial_shapes must', value, shapes.float(), loc, attn)
    fails('spatial_shapes must be positive', value[:, :16], torch.tensor([[4, 4], [0, 3]]),
          loc, attn)
    # (-2) * (-3) is 6 keys, but no level has a negative side: refused as such
    fails('spatial_shapes must be positive', value[:, :22], torch.tensor([[4, 4], [-2, -3]]),
          loc, attn)
    fails('floating-point', value.long(), shapes, loc, attn)
    # a tensor on another device (meta stands in for CUDA here)
    fails('needs CPU tensors', value.to('meta'), shapes.to('meta'), loc.to('meta'),
          attn.to('meta'))
    fails('is on meta', value, shapes, loc.to('meta'), attn)
    # the compiled entry points check everything themselves too
    ext = cpu_extension()
    with pytest.raises(ValueError, match='must be a CPU tensor'):
        ext.ms_deform_attn_fwd(value.to('meta'), shapes, loc, attn)
    with pytest.raises(ValueError, match='must have the dtype of value'):
        ext.ms_deform_attn_fwd(value, shapes, loc.double(), attn)
    with pytest.raises(ValueError, match='float32 or float64'):
        ext.ms_deform_attn_fwd(value.half(), shapes, loc.half(), attn.half())
    with pytest.raises(ValueError, match='add up to'):
        ext.ms_deform_attn_fwd(value[:, 1:], shapes, loc, attn)
    with pytest.raises(ValueError, match='spatial_shapes must be int64'):
        ext.ms_deform_attn_fwd(value, shapes.int(), loc, attn)
    with pytest.raises(ValueError, match='grad_output must have shape'):
        ext.ms_deform_attn_bwd(value, shapes, loc, attn, torch.zeros(1, 3, 15))


def test_dispatch_and_fallback_without_the_extension(monkeypatch):
    value, shapes, loc, attn, _ = make_case(1, [(3, 5)], 2, 4, 6, 2, seed=2)
    want = mmcv_ref(value, shapes, loc, attn)
    torch.testing.assert_close(ms_deform_attn(value, shapes, loc, attn, kernel='torch'), want)
    torch.testing.assert_close(ms_deform_attn_ref(value, shapes, loc, attn), want)
    torch.testing.assert_close(ms_deform_attn(value, shapes, loc, attn), want,
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match='kernel must be'):
        ms_deform_attn(value, shapes, loc, attn, kernel='cuda')
    monkeypatch.setattr(msda_mod, 'cpu_extension', lambda: None)
    assert not has_ms_deform_attn_cpu()
    assert torch.equal(ms_deform_attn(value, shapes, loc, attn), want)
    with pytest.raises(RuntimeError, match='not built'):
        ms_deform_attn_cpu(value, shapes, loc, attn)


def _adapter_attn(seed):
    from mmplugin_shufflemamba.models.layers.deform_attn import DeformInputs, MSDeformAttn
    torch.manual_seed(seed)
    attn = MSDeformAttn(64, 4, 3, 4, ratio=0.5)
    attn.init_weights()  # mmcv's init: offsets on a grid of whole pixels
    with torch.no_grad():  # move the points off whole pixels (see the kink note below)
        attn.sampling_offsets.weight.normal_(0, 0.05)
    q_shapes, v_shapes = [(4, 4)], [(8, 6), (4, 3), (2, 2)]
    inputs = DeformInputs(q_shapes, v_shapes)
    query = torch.randn(2, 16, 64)
    value = torch.randn(2, sum(h * w for h, w in v_shapes), 64)
    return attn, inputs, query, value


def _module_run(attn, inputs, query, value, identity):
    attn.zero_grad()
    q, v = query.clone().requires_grad_(), value.clone().requires_grad_()
    out = attn(q, v, inputs, identity=identity)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return [out.detach(), q.grad, v.grad] + [p.grad.clone() for p in attn.parameters()]


@needs_ext
@pytest.mark.parametrize('identity', [False, True])
def test_adapter_attention_uses_the_kernel_and_matches_mmcv(monkeypatch, identity):
    """MSDeformAttn on CPU: the compiled kernel by default, mmcv's PyTorch path with
    SHUFFLEMAMBA_MSDA_CPU=torch or cpu_kernel='torch'; same outputs and gradients."""
    attn, inputs, query, value = _adapter_attn(0)
    ident = torch.randn_like(query) if identity else None
    calls = []
    import importlib
    am = importlib.import_module('mmplugin_shufflemamba.ops.ms_deform_attn')
    monkeypatch.setattr(am, 'ms_deform_attn_cpu',
                        lambda *a: (calls.append('cpu'), ms_deform_attn_cpu(*a))[1])
    fused = _module_run(attn, inputs, query, value, ident)
    assert calls == ['cpu']
    monkeypatch.setenv('SHUFFLEMAMBA_MSDA_CPU', 'torch')
    torch_path = _module_run(attn, inputs, query, value, ident)
    assert calls == ['cpu']
    monkeypatch.delenv('SHUFFLEMAMBA_MSDA_CPU')
    monkeypatch.setattr(attn, 'cpu_kernel', 'torch')
    assert all(torch.equal(a, b)
               for a, b in zip(_module_run(attn, inputs, query, value, ident), torch_path))
    assert calls == ['cpu']
    for a, b in zip(fused, torch_path):
        assert_close_scaled(a, b, 2e-5, 'module output / gradient')
    monkeypatch.setattr(attn, 'cpu_kernel', 'cuda')
    with pytest.raises(ValueError, match="'auto' or 'torch'"):
        attn(query, value, inputs)


def test_kernel_is_built_once_with_the_baseline_flags():
    """One code path: the kernel's source is compiled once, with the flags of
    bindings.cpp (so that no AVX code can stand in for baseline code)."""
    from mmplugin_shufflemamba.ops import build_flags
    for machine in ('x86_64', 'aarch64'):
        srcs = build_flags.sources(machine, arch=None)
        flags = build_flags.source_flags(machine, arch=None)
        src = f'{build_flags.CSRC}/ms_deform_attn_cpu.cpp'
        assert srcs.count(src) == 1
        assert flags[src] == flags[srcs[0]] == build_flags.path_flags('generic', machine,
                                                                      arch=None)
