import pytest
import torch
import torch.nn.functional as F

from mmplugin_shufflemamba.ops import causal_conv1d, causal_conv1d_ref

from helpers.layouts import as_layout


def naive_causal_conv(x, w, b):
    Bsz, D, L = x.shape
    K = w.shape[1]
    out = torch.zeros_like(x)
    for t in range(L):
        for k in range(K):
            src = t - (K - 1) + k
            if src >= 0:
                out[:, :, t] += w[:, k] * x[:, :, src]
    return out + b[:, None]


def test_matches_naive_and_is_causal():
    x = torch.randn(2, 5, 13)
    w, b = torch.randn(5, 4), torch.randn(5)
    out = causal_conv1d_ref(x, w, b)
    torch.testing.assert_close(out, naive_causal_conv(x, w, b), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(causal_conv1d_ref(x, w, b, 'silu'), F.silu(out))
    x2 = x.clone()
    x2[..., 7:] = 0
    torch.testing.assert_close(causal_conv1d_ref(x2, w, b)[..., :7], out[..., :7])


def test_dispatch_errors():
    x, w = torch.randn(1, 2, 5), torch.randn(2, 4)
    with pytest.raises(RuntimeError, match="kernel='cuda'"):
        causal_conv1d(x, w, kernel='cuda')
    with pytest.raises(ValueError, match='activation'):
        causal_conv1d_ref(x, w, activation='relu')


def test_reverse_is_anticausal_flip():
    x = torch.randn(2, 5, 13)
    w, b = torch.randn(5, 4), torch.randn(5)
    ref = causal_conv1d_ref(x.flip(-1), w, b, 'silu').flip(-1)
    torch.testing.assert_close(causal_conv1d_ref(x, w, b, 'silu', reverse=True), ref)


@pytest.mark.skipif(not __import__('mmplugin_shufflemamba.ops', fromlist=['x'])
                    .has_selective_scan_cpu(), reason='compiled CPU extension not built')
@pytest.mark.parametrize('reverse', [False, True])
@pytest.mark.parametrize('act', [None, 'silu'])
@pytest.mark.parametrize('bias', [True, False])
def test_cpu_kernel_matches_ref_outputs_and_grads(reverse, act, bias):
    from mmplugin_shufflemamba.ops import causal_conv1d_cpu
    g = torch.Generator().manual_seed(1)
    xz = torch.randn(3, 10, 17, generator=g, dtype=torch.float64)
    x = xz[:, :5]  # strided channel slice, as the mixer passes it
    w = torch.randn(5, 4, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64) if bias else None
    args_a = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    args_b = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    ref = causal_conv1d_ref(*args_a, act, reverse)
    out = causal_conv1d_cpu(*args_b, act, reverse)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)
    grad = torch.randn_like(ref)
    (ref * grad).sum().backward()
    (out * grad).sum().backward()
    for a, c in zip(args_a, args_b):
        if a is not None:
            torch.testing.assert_close(c.grad, a.grad, atol=1e-10, rtol=1e-9)


@pytest.mark.skipif(not __import__('mmplugin_shufflemamba.ops', fromlist=['x'])
                    .has_selective_scan_cpu(), reason='compiled CPU extension not built')
@pytest.mark.parametrize('layout', ['token', 'strided'])
@pytest.mark.parametrize('reverse', [False, True])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_cpu_kernel_layouts(layout, reverse, dtype):
    from mmplugin_shufflemamba.ops import causal_conv1d_cpu
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 37, 23, generator=g, dtype=dtype)
    w = torch.randn(37, 4, generator=g, dtype=dtype)
    b = torch.randn(37, generator=g, dtype=dtype)
    x = as_layout(x0, layout)
    if layout == 'token':
        assert x.stride(1) == 1
    xa, xb = x0.clone().requires_grad_(), x.detach().requires_grad_()
    ref = causal_conv1d_ref(xa, w, b, 'silu', reverse)
    out = causal_conv1d_cpu(xb, w, b, 'silu', reverse)
    if layout == 'token':  # the layout is kept for the next projection
        assert out.stride(1) == 1
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    grad = torch.randn_like(ref)
    (ref * grad).sum().backward()
    (out * grad).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, atol=tol, rtol=tol)


@pytest.mark.skipif(not __import__('mmplugin_shufflemamba.ops', fromlist=['x'])
                    .has_selective_scan_cpu(), reason='compiled CPU extension not built')
def test_cpu_kernel_backward_with_broadcast_grad():
    from mmplugin_shufflemamba.ops import causal_conv1d_cpu
    x = torch.randn(2, 20, 30, dtype=torch.float64)
    w = torch.randn(20, 4, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), as_layout(x, 'token').requires_grad_()
    causal_conv1d_ref(xa, w, None, 'silu', True).sum().backward()
    causal_conv1d_cpu(xb, w, None, 'silu', True).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize('reverse', [False, True])
@pytest.mark.parametrize('silu', [True, False])
@pytest.mark.parametrize('bias', [True, False])
def test_written_out_backward_equals_autograd(reverse, silu, bias):
    """conv_ref_bwd (the PyTorch backend's conv backward, traceable by torch.compile)
    gives autograd's gradients of conv_ref, NaN positions included."""
    from mmplugin_shufflemamba.ops.causal_conv1d import conv_ref, conv_ref_bwd
    torch.manual_seed(0)
    x = torch.randn(2, 5, 13, dtype=torch.float64)
    w, b = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    x[1, 2, 6] = float('nan')
    dout = torch.randn(2, 5, 13, dtype=torch.float64)
    ins = [x.clone().requires_grad_(), w.clone().requires_grad_(),
           b.clone().requires_grad_() if bias else None]
    out = conv_ref(*ins, silu, reverse)
    ref = torch.autograd.grad(out, [t for t in ins if t is not None], dout)
    got = conv_ref_bwd(x, w, b if bias else None, silu, reverse, dout)
    assert (got[2] is None) == (not bias)
    for a, e in zip([g for g in got if g is not None], ref):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, equal_nan=True)
        assert torch.equal(a.isnan(), e.isnan())
