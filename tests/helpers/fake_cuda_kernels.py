"""Test helper: mamba-ssm's ``selective_scan_cuda`` and causal-conv1d's functions as
stand-ins computed on the CPU with the PyTorch path, with the real kernels' argument
checks and output layouts (dtypes, strides, chunk states, None for absent outputs), so
that the CUDA backend's plumbing and custom ops are tested where no GPU is available.

:func:`install` puts them in the kernels' import cache (``monkeypatch`` undoes it).
"""
from types import SimpleNamespace
from typing import List, Optional

import torch
import torch.nn.functional as F

from mmplugin_shufflemamba.ops import kernels
from mmplugin_shufflemamba.ops.causal_conv1d import causal_conv1d_ref
from mmplugin_shufflemamba.ops.selective_scan import scan_torch_bwd, scan_torch_fwd


def _like(ref, value):
    """``value`` in a new tensor laid out as ``torch.empty_like(ref)`` (what the kernels
    allocate)."""
    return torch.empty_like(ref).copy_(value)


class FakeScanModule:
    """``fwd`` / ``bwd`` with mamba-ssm's signatures and results; ``calls`` counts them."""

    def __init__(self):
        self.calls = {'fwd': 0, 'bwd': 0}

    @staticmethod
    def _check(u, delta, A, B, C, D, z, bias):
        batch, dim, length = u.shape
        assert u.stride(-1) == 1 and delta.stride(-1) == 1, 'u/delta need unit L stride'
        assert u.dtype in (torch.float32, torch.float16, torch.bfloat16), u.dtype
        assert delta.shape == u.shape and delta.dtype == u.dtype and A.dtype == torch.float32
        assert A.shape[0] == dim and A.shape[1] <= 256
        for t in (B, C):
            assert t.shape == (batch, 1, A.shape[1], length), t.shape
            assert t.stride(-1) == 1 and t.dtype == u.dtype
        for t in (D, bias):
            assert t is None or (t.shape == (dim, ) and t.dtype == torch.float32)
        assert z is None or (z.shape == u.shape and z.stride(-1) == 1 and z.dtype == u.dtype)

    def fwd(self, u, delta, A, B, C, D, z, bias, softplus):
        self._check(u, delta, A, B, C, D, z, bias)
        self.calls['fwd'] += 1
        out = _like(delta, scan_torch_fwd(u, delta, A, B[:, 0], C[:, 0], D, None, bias,
                                          softplus))
        n_chunks = (u.shape[-1] + 2047) // 2048
        states = torch.zeros(u.shape[0], u.shape[1], n_chunks, 2 * A.shape[1],
                             dtype=A.dtype, device=u.device)
        res = [out, states]
        if z is not None:
            res.append(_like(z, out * F.silu(z)))
        return res

    def bwd(self, u, delta, A, B, C, D, z, bias, dout, states, out, dz, softplus,
            recompute_out_z):
        self._check(u, delta, A, B, C, D, z, bias)
        self.calls['bwd'] += 1
        assert dout.shape == u.shape and dout.stride(-1) == 1 and dout.dtype == u.dtype
        assert states.is_contiguous() and states.dtype == A.dtype and dz is None
        assert states.shape == (u.shape[0], u.shape[1], (u.shape[-1] + 2047) // 2048,
                                2 * A.shape[1])
        assert z is None or (out is not None and out.shape == u.shape
                             and out.dtype == u.dtype), 'the kernel needs the pre-gate output'
        if z is not None:  # the pre-gate output handed over must be the forward's
            ref = scan_torch_fwd(u, delta, A, B[:, 0], C[:, 0], D, None, bias, softplus)
            torch.testing.assert_close(out, ref)
        du, dd, dA, dB, dC, dD, dz, db = scan_torch_bwd(u, delta, A, B[:, 0], C[:, 0], D, z,
                                                        bias, softplus, dout)
        res = [_like(u, du), _like(delta, dd), _like(A, dA), _like(B, dB[:, None]),
               _like(C, dC[:, None]), dD, db]
        if z is not None:
            res.append(_like(z, dz))
        if recompute_out_z:  # out * silu(z) from the pre-gate output handed over
            res.append(_like(out, out * F.silu(z)) if z is not None else None)
        return res


# causal-conv1d's functions call its kernels through custom ops (so do these).
@torch.library.custom_op('shufflemamba_test::conv_fwd', mutates_args=())
def _conv_fwd_op(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor],
                 silu: bool) -> torch.Tensor:
    assert x.stride(2) == 1 or x.stride(1) == 1
    assert 2 <= w.shape[1] <= 4 and (b is None or b.dtype == w.dtype)
    assert x.dtype in (torch.float32, torch.float16, torch.bfloat16), x.dtype
    out = causal_conv1d_ref(x, w.to(x.dtype), None if b is None else b.to(x.dtype),
                            'silu' if silu else None)
    return _like(x, out)


@_conv_fwd_op.register_fake
def _(x, w, b, silu):
    return torch.empty_like(x)


@torch.library.custom_op('shufflemamba_test::conv_bwd', mutates_args=())
def _conv_bwd_op(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor],
                 dout: torch.Tensor, silu: bool) -> List[torch.Tensor]:
    # Written out: autograd does not run inside a custom op's kernel.
    xf, wf, width, length = x.float(), w.float(), w.shape[1], x.shape[-1]
    pre = causal_conv1d_ref(xf, wf, None if b is None else b.float(), None)
    dpre = dout.float()
    if silu:
        sig = torch.sigmoid(pre)
        dpre = dpre * sig * (1 + pre * (1 - sig))
    xp, dp = F.pad(xf, (width - 1, 0)), F.pad(dpre, (0, width - 1))
    dx = sum(wf[:, width - 1 - j, None] * dp[..., j:j + length] for j in range(width))
    dw = torch.stack([(dpre * xp[..., width - 1 - k:width - 1 - k + length]).sum((0, 2))
                      for k in range(width)][::-1], dim=1)
    return [_like(x, dx), dw, dpre.sum((0, 2))]


@_conv_bwd_op.register_fake
def _(x, w, b, dout, silu):
    return [torch.empty_like(x), torch.empty_like(w, dtype=torch.float32),
            torch.empty_like(b, dtype=torch.float32)]


def _check_conv(x, w, b):
    """causal-conv1d's checks: float32 / float16 / bfloat16, channel-last (unit stride
    along D) only with D and the other strides multiples of 8, unit-stride bias."""
    assert x.dtype in (torch.float32, torch.float16, torch.bfloat16)
    assert x.stride(2) == 1 or x.stride(1) == 1
    if x.stride(2) != 1:
        assert x.shape[1] % 8 == 0 and x.stride(0) % 8 == 0 and x.stride(2) % 8 == 0
    assert b is None or b.stride(-1) == 1


def _conv_fwd(x, w, b, seq_idx, init, final, silu):
    assert seq_idx is None and init is None and final is None
    _check_conv(x, w, b)
    return _conv_fwd_op(x, w, b, silu)


def _conv_bwd(x, w, b, dout, seq_idx, init, dfinal, dx, return_dinit, silu):
    assert seq_idx is None and init is None and dfinal is None and dx is None
    assert b is not None, 'the mixer\'s convs have a bias'
    _check_conv(x, w, b)
    dx, dw, db = _conv_bwd_op(x, w, b, dout, silu)  # float32 dw, db, as the kernel's
    return dx, dw.type_as(w), db.type_as(b), None


def install(monkeypatch) -> FakeScanModule:
    """Put the stand-ins in the kernels' import cache; returns the scan module."""
    scan = FakeScanModule()
    monkeypatch.setitem(kernels._cache, 'selective_scan_cuda', (scan, None))
    monkeypatch.setitem(kernels._cache, 'causal_conv1d',
                        (SimpleNamespace(fwd=_conv_fwd, bwd=_conv_bwd), None))
    return scan
