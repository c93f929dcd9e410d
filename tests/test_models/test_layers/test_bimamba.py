import math

import pytest
import torch
import torch.nn.functional as F

from mmplugin_shufflemamba.models.layers import BiMambaMixer, MambaBlock
from mmplugin_shufflemamba.ops import selective_scan_ref


def reference_mixer(m: BiMambaMixer, x: torch.Tensor) -> torch.Tensor:
    """Written from the block description: in_proj -> (x, z); per direction causal
    depthwise conv + SiLU, x_proj -> (dt, B, C), dt_proj, softplus, scan with D,
    SiLU(z) gate; backward direction on the flipped sequence; out_proj(mean)."""
    xz = x @ m.in_proj.weight.t()  # (B, L, 2E)
    xs, z = xz.chunk(2, dim=-1)
    outs = []
    for suffix, flip in (('', False), ('_b', True)):
        xi = xs.flip(1) if flip else xs
        zi = z.flip(1) if flip else z
        conv = getattr(m, f'conv1d{suffix}')
        L = xi.shape[1]
        xc = F.conv1d(xi.transpose(1, 2), conv.weight, conv.bias, padding=m.d_conv - 1,
                      groups=m.d_inner)[..., :L]
        xc = xc * torch.sigmoid(xc)
        dbl = xc.transpose(1, 2) @ getattr(m, f'x_proj{suffix}').weight.t()
        dt, Bm, Cm = dbl.split([m.dt_rank, m.d_state, m.d_state], dim=-1)
        dtp = getattr(m, f'dt_proj{suffix}')
        delta = (dt @ dtp.weight.t()).transpose(1, 2)
        A = -torch.exp(getattr(m, 'A_log' if suffix == '' else 'A_b_log'))
        y = selective_scan_ref(xc, delta, A, Bm.transpose(1, 2), Cm.transpose(1, 2),
                               getattr(m, f'D{suffix}'), zi.transpose(1, 2), dtp.bias,
                               delta_softplus=True)
        outs.append(y.flip(-1) if flip else y)
    return ((outs[0] + outs[1]) / 2).transpose(1, 2) @ m.out_proj.weight.t()


def test_mixer_matches_reference_and_grads():
    m = BiMambaMixer(24)
    assert m.dt_rank == math.ceil(24 / 16) and m.d_inner == 48
    x = torch.randn(2, 17, 24, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    out = m(x)
    ref = reference_mixer(m, x2)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    (ref * g).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-4)
    for n, p in m.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)


def test_both_directions_used():
    m = BiMambaMixer(16)
    x = torch.randn(1, 12, 16, requires_grad=True)
    out = m(x)
    # The first token sees the last one only through the backward scan...
    g_first = torch.autograd.grad(out[0, 0].sum(), x, retain_graph=True)[0]
    assert g_first[0, -1].abs().sum() > 0
    # ... and the last token sees the first through the forward scan.
    g_last = torch.autograd.grad(out[0, -1].sum(), x)[0]
    assert g_last[0, 0].abs().sum() > 0
    # Every backward-branch parameter gets a gradient.
    m(x).sum().backward()
    for n in ('conv1d_b.weight', 'x_proj_b.weight', 'dt_proj_b.weight', 'A_b_log', 'D_b'):
        assert m.get_parameter(n).grad.abs().sum() > 0, n


def test_block_residual_semantics():
    blk = MambaBlock(16).eval()
    h = torch.randn(2, 9, 16)
    r = torch.randn(2, 9, 16)
    out_h, out_r = blk(h, r)
    torch.testing.assert_close(out_r, h + r)
    torch.testing.assert_close(out_h, blk.mixer(blk.norm(h + r)))
    out_h0, out_r0 = blk(h, None)
    torch.testing.assert_close(out_r0, h)
    assert out_r0.dtype == torch.float32


@pytest.mark.parametrize('kernel', ['torch', 'auto'])
def test_a_float64_mixer_computes_in_float64(kernel):
    """D, the dt bias and A_log are not rounded to float32 in a float64 model: the
    gradients pass gradcheck and a change below float32's resolution shows."""
    from torch.autograd import gradcheck
    from torch.func import functional_call
    torch.manual_seed(0)
    m = BiMambaMixer(16, kernel=kernel).double()
    h = torch.randn(1, 5, 16, dtype=torch.float64)
    for name in ('D', 'dt_proj_b.bias', 'A_log'):
        p = dict(m.named_parameters())[name].detach().clone().requires_grad_()
        assert gradcheck(lambda q: functional_call(m, {name: q}, (h, )), (p, )), name
    y0 = m(h)
    with torch.no_grad():
        m.D_b.add_(1e-9)
    assert 0 < (m(h) - y0).abs().max() < 1e-8
