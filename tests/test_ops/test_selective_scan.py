import pytest
import torch

from mmplugin_shufflemamba.ops import (has_selective_scan_cpu, selective_scan,
                                       selective_scan_cpu, selective_scan_ref,
                                       selective_scan_torch)

from helpers.layouts import as_layout


def naive_scan(u, delta, A, B, C, D, z, delta_bias, softplus):
    """Independent float64 scan: explicit loops over batch, channel, state, time."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    dt = delta + delta_bias.double()[:, None]
    if softplus:
        dt = torch.log1p(torch.exp(dt))
    Bsz, Dim, L = u.shape
    N = A.shape[1]
    y = torch.zeros(Bsz, Dim, L, dtype=torch.float64)
    for b in range(Bsz):
        for d in range(Dim):
            h = torch.zeros(N, dtype=torch.float64)
            for t in range(L):
                h = torch.exp(dt[b, d, t] * A[d]) * h + dt[b, d, t] * B[b, :, t] * u[b, d, t]
                y[b, d, t] = (h * C[b, :, t]).sum()
    y = y + u * D.double()[:, None]
    return y * (z.double() * torch.sigmoid(z.double()))


def make_inputs(batch=2, dim=6, seqlen=19, dstate=4, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(u=r(batch, dim, seqlen), delta=r(batch, dim, seqlen) * 0.5,
                A=-torch.rand(dim, dstate, generator=g, dtype=dtype) * 3,
                B=r(batch, dstate, seqlen), C=r(batch, dstate, seqlen), D=r(dim),
                z=r(batch, dim, seqlen), delta_bias=r(dim) * 0.1)


@pytest.mark.parametrize('fn', [selective_scan_ref, selective_scan_torch])
def test_matches_independent_naive_scan(fn):
    inp = make_inputs(batch=2, dim=3, seqlen=11, dstate=3)
    out = fn(**inp, delta_softplus=True)
    ref = naive_scan(*inp.values(), softplus=True)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize('with_z,with_d,softplus', [(True, True, True), (False, False, False),
                                                    (True, False, True)])
def test_torch_path_matches_reference_outputs_and_grads(with_z, with_d, softplus):
    inp = make_inputs(dtype=torch.float64, seqlen=23)
    if not with_z:
        inp['z'] = None
    if not with_d:
        inp['D'] = None
    a = {k: None if v is None else v.clone().requires_grad_() for k, v in inp.items()}
    b = {k: None if v is None else v.clone().requires_grad_() for k, v in inp.items()}
    out_ref = selective_scan_ref(**a, delta_softplus=softplus)
    out = selective_scan_torch(**b, delta_softplus=softplus)
    torch.testing.assert_close(out, out_ref, atol=1e-10, rtol=1e-10)
    grad = torch.randn_like(out)
    (out_ref * grad).sum().backward()
    (out * grad).sum().backward()
    for k in a:
        if a[k] is not None:
            torch.testing.assert_close(b[k].grad, a[k].grad, atol=1e-9, rtol=1e-8,
                                       msg=lambda m: f'grad of {k}: {m}')


def test_torch_path_gradcheck():
    inp = make_inputs(batch=1, dim=2, seqlen=7, dstate=2, dtype=torch.float64)
    args = tuple(v.requires_grad_() for v in inp.values())
    assert torch.autograd.gradcheck(
        lambda *t: selective_scan_torch(*t, delta_softplus=True), args, eps=1e-6, atol=1e-6)


def test_float32_and_bf16_inputs_compute_in_fp32():
    inp = make_inputs(seqlen=17)
    ref = selective_scan_ref(**inp, delta_softplus=True)
    out = selective_scan_torch(**inp, delta_softplus=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    half = {k: v.bfloat16() if k in ('u', 'delta', 'B', 'C', 'z') else v
            for k, v in inp.items()}
    out_bf16 = selective_scan_torch(**half, delta_softplus=True)
    assert out_bf16.dtype == torch.bfloat16
    ref_bf16 = selective_scan_ref(**{k: v.float() for k, v in half.items()},
                                  delta_softplus=True)
    torch.testing.assert_close(out_bf16.float(), ref_bf16, atol=5e-2, rtol=2e-2)


def test_shape_errors_are_clear():
    inp = make_inputs()
    inp['B'] = inp['B'][:, :, :-1]
    with pytest.raises(ValueError, match='B must be'):
        selective_scan_torch(**inp)


def test_kernel_cuda_requested_without_gpu_is_a_clear_error():
    inp = make_inputs()
    with pytest.raises(RuntimeError, match="kernel='cuda'"):
        selective_scan(**inp, delta_softplus=True, kernel='cuda')
    with pytest.raises(ValueError, match='kernel must be one of'):
        selective_scan(**inp, kernel='triton')


def test_kernel_torch_forces_pytorch_path():
    inp = make_inputs()
    torch.testing.assert_close(selective_scan(**inp, delta_softplus=True, kernel='torch'),
                               selective_scan_torch(**inp, delta_softplus=True))


def test_scan_is_causal():
    inp = make_inputs(seqlen=16)
    out = selective_scan_torch(**inp, delta_softplus=True)
    inp2 = {k: v.clone() for k, v in inp.items()}
    inp2['u'][..., 10:] += 1.0
    inp2['B'][..., 12:] -= 1.0
    out2 = selective_scan_torch(**inp2, delta_softplus=True)
    torch.testing.assert_close(out[..., :10], out2[..., :10])
    assert not torch.allclose(out[..., 10:], out2[..., 10:])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_kernel_matches_torch_path():  # pragma: no cover - GPU machines
    pytest.importorskip('mamba_ssm')
    inp = {k: v.cuda() for k, v in make_inputs(seqlen=64).items()}
    out = selective_scan(**inp, delta_softplus=True, kernel='cuda')
    ref = selective_scan_torch(**inp, delta_softplus=True)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------- compiled CPU kernel
needs_ext = pytest.mark.skipif(not has_selective_scan_cpu(),
                               reason='compiled CPU extension not built')


def test_cpu_extension_is_built_by_install():
    import os
    if os.environ.get('SHUFFLEMAMBA_NO_EXT') == '1':
        pytest.skip('built without the extension on purpose')
    assert has_selective_scan_cpu(), 'setup.py should have compiled mmplugin_shufflemamba._ext'


@needs_ext
@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize('drop', [(), ('z', ), ('D', 'z', 'delta_bias')])
@pytest.mark.parametrize('softplus', [True, False])
def test_cpu_kernel_matches_torch_path(dtype, tol, drop, softplus):
    inp = make_inputs(batch=3, dim=5, seqlen=29, dstate=16, dtype=dtype, seed=4)
    for k in drop:
        inp[k] = None
    if not softplus:  # time steps are positive in a model (softplus does that)
        inp['delta'] = inp['delta'].abs()
    a = {k: None if v is None else v.clone().requires_grad_() for k, v in inp.items()}
    b = {k: None if v is None else v.clone().requires_grad_() for k, v in inp.items()}
    ref = selective_scan_torch(**a, delta_softplus=softplus)
    out = selective_scan_cpu(**b, delta_softplus=softplus)
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    g = torch.randn_like(ref)
    (ref * g).sum().backward()
    (out * g).sum().backward()
    for k in a:
        if a[k] is not None:
            scale = a[k].grad.abs().max().clamp_min(1.0)
            torch.testing.assert_close(b[k].grad / scale, a[k].grad / scale, atol=tol,
                                       rtol=tol, msg=lambda m: f'grad of {k}: {m}')


@needs_ext
def test_cpu_kernel_gradcheck_and_odd_state_size():
    inp = make_inputs(batch=2, dim=2, seqlen=6, dstate=3, dtype=torch.float64)
    args = tuple(v.requires_grad_() for v in inp.values())
    assert torch.autograd.gradcheck(
        lambda *t: selective_scan_cpu(*t, delta_softplus=True), args, eps=1e-6, atol=1e-6)


@needs_ext
def test_auto_dispatch_uses_cpu_kernel_and_bf16():
    inp = make_inputs(seqlen=33)
    torch.testing.assert_close(selective_scan(**inp, delta_softplus=True),
                               selective_scan_cpu(**inp, delta_softplus=True))
    half = {k: v.bfloat16() if k in ('u', 'delta', 'B', 'C', 'z') else v
            for k, v in inp.items()}
    out = selective_scan_cpu(**half, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), selective_scan_torch(**half, delta_softplus=True)
                               .float(), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize('fn', [selective_scan_torch, selective_scan_cpu])
def test_reverse_equals_flipped_scan(fn):
    if fn is selective_scan_cpu and not has_selective_scan_cpu():
        pytest.skip('compiled CPU extension not built')
    inp = make_inputs(batch=2, dim=4, seqlen=21, dstate=16, dtype=torch.float64, seed=7)
    a = {k: v.clone().requires_grad_() for k, v in inp.items()}
    b = {k: v.clone().requires_grad_() for k, v in inp.items()}
    flipped = {k: (v.flip(-1) if k in ('u', 'delta', 'B', 'C', 'z') else v) for k, v in a.items()}
    ref = selective_scan_ref(**flipped, delta_softplus=True).flip(-1)
    out = fn(**b, delta_softplus=True, reverse=True)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    g = torch.randn_like(ref)
    (ref * g).sum().backward()
    (out * g).sum().backward()
    for k in a:
        torch.testing.assert_close(b[k].grad, a[k].grad, atol=1e-9, rtol=1e-8,
                                   msg=lambda m: f'grad of {k}: {m}')


@needs_ext
def test_cpu_kernel_strided_rows_batch_gt_1():
    # x and z as channel slices of one (B, 2E, L) tensor, as the mixer passes them.
    inp = make_inputs(batch=3, dim=6, seqlen=13, dstate=16)
    xz = torch.randn(3, 12, 13)
    u, z = xz[:, :6], xz[:, 6:]
    assert not u.is_contiguous()
    inp.update(u=u, z=z)
    torch.testing.assert_close(selective_scan_cpu(**inp, delta_softplus=True),
                               selective_scan_torch(**inp, delta_softplus=True),
                               atol=1e-5, rtol=1e-5)


def check_layout_parity(shape, layout, reverse, dtype, tol, seed):
    """The compiled scan on u, delta, z in ``layout`` against the PyTorch path on
    contiguous inputs: outputs and every gradient (scaled by its largest entry)."""
    batch, dim, seqlen, dstate = shape
    inp = make_inputs(batch=batch, dim=dim, seqlen=seqlen, dstate=dstate, dtype=dtype,
                      seed=seed)
    ref_in = {k: v.clone().requires_grad_() for k, v in inp.items()}
    lay_in = {k: (as_layout(v, layout) if k in ('u', 'delta', 'z') else v.clone())
              .detach().requires_grad_() for k, v in inp.items()}
    ref = selective_scan_torch(**ref_in, delta_softplus=True, reverse=reverse)
    out = selective_scan_cpu(**lay_in, delta_softplus=True, reverse=reverse)
    if layout == 'token' and min(dim, seqlen) > 1:  # token-major in, token-major out
        assert lay_in['u'].stride(1) == 1 and out.stride(1) == 1
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    g = torch.randn_like(ref)
    (ref * g).sum().backward()
    (out * g).sum().backward()
    for k in ref_in:
        scale = ref_in[k].grad.abs().max().clamp_min(1.0)
        torch.testing.assert_close(lay_in[k].grad / scale, ref_in[k].grad / scale,
                                   atol=tol, rtol=tol, msg=lambda m: f'grad of {k}: {m}')


@needs_ext
@pytest.mark.parametrize('layout', ['channel', 'token', 'strided'])
@pytest.mark.parametrize('reverse', [False, True])
@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_cpu_kernel_layouts_and_partial_blocks(layout, reverse, dtype, tol):
    """37 channels (two full blocks of 16 and a partial one), 150 steps (two full time
    tiles and a partial one), in channel-major, token-major and generic strided memory."""
    check_layout_parity((2, 37, 150, 16), layout, reverse, dtype, tol, seed=11)


@needs_ext
@pytest.mark.parametrize('shape', [(1, 1, 1, 1), (2, 1, 5, 16), (1, 17, 1, 16),
                                   (1, 33, 129, 17), (2, 5, 64, 2)])
@pytest.mark.parametrize('layout', ['token', 'strided'])
@pytest.mark.parametrize('reverse', [False, True])
def test_cpu_kernel_edge_shapes(shape, layout, reverse):
    """One channel, one step, state sizes other than 16, a tile boundary exactly."""
    check_layout_parity(shape, layout, reverse, torch.float64, 1e-10,
                        seed=shape[1] + shape[2])


@needs_ext
def test_cpu_kernel_backward_with_broadcast_grad():
    """``out.sum().backward()`` hands the kernel a stride-0 (expanded) gradient."""
    inp = make_inputs(batch=2, dim=20, seqlen=30, dstate=16, dtype=torch.float64)
    a = {k: v.clone().requires_grad_() for k, v in inp.items()}
    b = {k: v.clone().requires_grad_() for k, v in inp.items()}
    selective_scan_torch(**a, delta_softplus=True, reverse=True).sum().backward()
    selective_scan_cpu(**b, delta_softplus=True, reverse=True).sum().backward()
    for k in a:
        torch.testing.assert_close(b[k].grad, a[k].grad, atol=1e-9, rtol=1e-9,
                                   msg=lambda m: f'grad of {k}: {m}')


# ------------------------------------------------- the forward output from the backward
def _runnable_paths():
    from mmplugin_shufflemamba.ops.kernels import cpu_paths
    return [name for name, built, ok in cpu_paths() if built and ok]


def _on_each_path(fn):
    """fn(path) on every code path of the compiled kernels that this CPU runs."""
    from mmplugin_shufflemamba.ops.kernels import get_cpu_path, set_cpu_path
    before = get_cpu_path()
    try:
        for path in _runnable_paths():
            set_cpu_path(path)
            fn(path)
    finally:
        set_cpu_path(before)


def _scan_args(inp, layout='channel'):
    """Positional arguments (u, delta, A, B, C, D, z, delta_bias) of the no-autograd
    scan functions, u, delta and z in ``layout``."""
    return [None if inp[k] is None else
            (as_layout(inp[k], layout) if k in ('u', 'delta', 'z') else inp[k])
            for k in ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')]


def _flip_args(args):
    return [None if t is None else (t.flip(-1) if i in (0, 1, 3, 4, 6) else t)
            for i, t in enumerate(args)]


@needs_ext
@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize('reverse', [False, True])
@pytest.mark.parametrize('drop', [(), ('z', ), ('D', ), ('D', 'z', 'delta_bias')])
@pytest.mark.parametrize('dstate', [16, 5])
@pytest.mark.parametrize('layout', ['channel', 'token', 'strided'])
def test_cpu_backward_returns_the_forward_output(dtype, tol, reverse, drop, dstate, layout):
    """scan_cpu_bwd(return_out=True): the output of scan_cpu_fwd (its dtype, layout and
    time order; equal up to the order of the sum over the states), on every code path,
    and the same gradients as without it. 37 channels and 150 steps: partial channel
    blocks and time tiles."""
    from mmplugin_shufflemamba.ops.selective_scan import (scan_cpu_bwd, scan_cpu_fwd,
                                                          scan_torch_fwd)
    inp = make_inputs(batch=2, dim=37, seqlen=150, dstate=dstate, dtype=dtype, seed=dstate)
    for k in drop:
        inp[k] = None
    args = _scan_args(inp, layout)
    dout = as_layout(torch.randn(2, 37, 150, dtype=dtype), layout)
    torch_args = _flip_args(_scan_args(inp)) if reverse else _scan_args(inp)
    ref = scan_torch_fwd(*torch_args, True)
    ref = ref.flip(-1) if reverse else ref

    def check(path):
        fwd = scan_cpu_fwd(*args, True, reverse)
        *grads, out = scan_cpu_bwd(*args, True, reverse, dout, return_out=True)
        assert out.dtype == fwd.dtype and out.shape == fwd.shape
        assert out.stride() == fwd.stride(), path
        scale = fwd.abs().max().clamp_min(1.0)
        torch.testing.assert_close(out / scale, fwd / scale, atol=tol, rtol=tol,
                                   msg=lambda m: f'{path}: {m}')
        torch.testing.assert_close(out / scale, ref / scale, atol=tol, rtol=tol,
                                   msg=lambda m: f'{path}, torch path: {m}')
        plain = scan_cpu_bwd(*args, True, reverse, dout)
        assert len(plain) == 8 and len(grads) == 8
        for g, p in zip(grads, plain):
            assert (g is None and p is None) or torch.equal(g, p), path

    _on_each_path(check)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('drop', [(), ('z', ), ('D', ), ('D', 'z', 'delta_bias')])
@pytest.mark.parametrize('dstate', [16, 3])
def test_torch_backward_returns_the_forward_output(dtype, drop, dstate):
    """scan_torch_bwd(return_out=True): exactly the output of scan_torch_fwd (the same
    operations on the same recomputed states), and the same gradients."""
    from mmplugin_shufflemamba.ops.selective_scan import scan_torch_bwd, scan_torch_fwd
    inp = make_inputs(batch=2, dim=5, seqlen=23, dstate=dstate, dtype=dtype, seed=3)
    for k in drop:
        inp[k] = None
    args = _scan_args(inp)
    dout = torch.randn(2, 5, 23, dtype=dtype)
    fwd = scan_torch_fwd(*args, True)
    *grads, out = scan_torch_bwd(*args, True, dout, return_out=True)
    assert out.dtype == fwd.dtype
    torch.testing.assert_close(out, fwd, atol=0, rtol=0)
    plain = scan_torch_bwd(*args, True, dout)
    assert len(plain) == 8 and len(grads) == 8
    for g, p in zip(grads, plain):
        assert (g is None and p is None) or torch.equal(g, p)


@needs_ext
def test_torch_backward_output_matches_the_cpu_kernel_reversed():
    """The PyTorch path on flipped inputs, flipped back, against the compiled forward
    with reverse=True."""
    from mmplugin_shufflemamba.ops.selective_scan import scan_cpu_fwd, scan_torch_bwd
    inp = make_inputs(batch=2, dim=20, seqlen=70, dstate=16, dtype=torch.float64, seed=5)
    args = _scan_args(inp)
    dout = torch.randn(2, 20, 70, dtype=torch.float64)
    out = scan_torch_bwd(*_flip_args(args), True, dout, return_out=True)[-1].flip(-1)
    torch.testing.assert_close(out, scan_cpu_fwd(*args, True, True), atol=1e-12, rtol=1e-12)


@needs_ext
@pytest.mark.parametrize('shape', [(2, 3, 0, 4), (0, 3, 5, 4), (2, 0, 5, 4), (1, 1, 1, 1)])
def test_cpu_backward_output_for_degenerate_sizes(shape):
    from mmplugin_shufflemamba.ops.selective_scan import scan_cpu_bwd, scan_cpu_fwd
    batch, dim, seqlen, dstate = shape
    inp = make_inputs(batch=batch, dim=dim, seqlen=seqlen, dstate=dstate, seed=1)
    args = _scan_args(inp)
    dout = torch.randn(batch, dim, seqlen)
    for reverse in (False, True):
        out = scan_cpu_bwd(*args, True, reverse, dout, return_out=True)[-1]
        assert out.shape == (batch, dim, seqlen)
        torch.testing.assert_close(out, scan_cpu_fwd(*args, True, reverse))


@pytest.mark.parametrize('fn', [selective_scan_ref, selective_scan_torch, selective_scan_cpu,
                                selective_scan])
@pytest.mark.parametrize('reverse', [False, True])
def test_an_empty_sequence_gives_an_empty_output(fn, reverse):
    """Every implementation alike: length 0 in, length 0 out, zero gradients."""
    args = make_inputs(seqlen=0)
    u = args['u'].requires_grad_()
    out = fn(**dict(args, u=u), delta_softplus=True, reverse=reverse)
    assert out.shape == (2, 6, 0) and out.dtype == u.dtype
    if out.requires_grad:
        out.sum().backward()
        assert u.grad.shape == u.shape
