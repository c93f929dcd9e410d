"""The bidirectional Vim mixer from its in_proj output to its out_proj output, as one
autograd function that keeps little for its backward.

For ``xz = in_proj(hidden)`` (x and gate z, d_inner channels each) and each direction
(the backward one on the time-reversed sequence)::

    xc    = silu(causal_conv1d(x))                      (B, d_inner, L)
    x_dbl = x_proj(xc) = (dt, B, C)                     (B, dt_rank + 2N, L)
    delta = dt_proj.weight @ dt                         (B, d_inner, L)
    y_dir = selective_scan(xc, delta, A, B, C, D, z, dt_proj.bias, softplus)
    out   = out_proj(y_fwd + y_bwd) / 2                 (B, L, D)

:class:`BiMambaInnerFn` saves ``xz``, the two small ``x_dbl`` and the parameters, and
recomputes the rest in backward on every backend; :func:`bimamba_inner_ref` composes the
differentiable ops instead (the reference). A (B, C, L) tensor is channel-major (unit
stride along L, what the CUDA kernels read) or token-major (a view of (B, L, C) memory,
read as it is by the CPU kernels); every projection keeps its input's layout. See
docs/kernels_and_performance.md#the-mixer-keeps-little-for-its-backward.
"""
from typing import Sequence

import torch
import torch.nn.functional as F

from .causal_conv1d import (causal_conv1d, conv_cpu_bwd, conv_cpu_fwd, conv_cuda_bwd,
                            conv_cuda_fwd, conv_ref, conv_ref_bwd)
from .kernels import autocast_dtype, autocast_off, get_cuda_kernel, use_cpu_extension
from .selective_scan import (scan_cpu_bwd, scan_cpu_fwd, scan_torch_bwd, scan_torch_fwd,
                             selective_scan)
from .selective_scan_cuda import scan_cuda_bwd, scan_cuda_fwd

__all__ = ['BiMambaInnerFn', 'bimamba_inner_fn', 'bimamba_inner_ref', 'select_backend']


class _Backend:
    """conv / scan forward and backward without autograd: ``conv_fwd(x, w, b, reverse)``,
    ``conv_bwd(..., dout)`` -> (dx, dw, db), ``scan_fwd(u, delta, A, B, C, D, z, bias,
    reverse)`` -> the gated output, ``scan_bwd(..., dout, return_out=False)`` -> (du,
    ddelta, dA, dB, dC, dD, dz, dbias) and with ``return_out`` the gated output.
    ``native_reverse``: the kernels run the backward direction on the original order
    (else inputs and results are flipped). ``channel_major``: produce (B, C, L) tensors
    with unit stride along L (else token-major)."""
    name = ''
    native_reverse = False
    channel_major = False


class _TorchBackend(_Backend):
    name = 'torch'

    def conv_fwd(self, x, w, b, reverse):
        return conv_ref(x, w, b, True, reverse)

    def conv_bwd(self, x, w, b, reverse, dout):
        return conv_ref_bwd(x, w, b, True, reverse, dout)

    def scan_fwd(self, u, delta, A, B, C, D, z, bias, reverse):
        return scan_torch_fwd(u, delta, A, B, C, D, z, bias, True)

    def scan_bwd(self, u, delta, A, B, C, D, z, bias, reverse, dout, return_out=False):
        return scan_torch_bwd(u, delta, A, B, C, D, z, bias, True, dout, return_out)


class _CPUBackend(_Backend):
    name = 'cpu'
    native_reverse = True

    def conv_fwd(self, x, w, b, reverse):
        return conv_cpu_fwd(x, w, b, True, reverse)

    def conv_bwd(self, x, w, b, reverse, dout):
        return conv_cpu_bwd(x, w, b, True, reverse, dout)

    def scan_fwd(self, u, delta, A, B, C, D, z, bias, reverse):
        return scan_cpu_fwd(u, delta, A, B, C, D, z, bias, True, reverse)

    def scan_bwd(self, u, delta, A, B, C, D, z, bias, reverse, dout, return_out=False):
        return scan_cpu_bwd(u, delta, A, B, C, D, z, bias, True, reverse, dout, return_out)


class _CUDABackend(_Backend):
    """mamba-ssm's scan; causal-conv1d's conv when it imports (else PyTorch ops)."""
    name = 'cuda'
    channel_major = True

    def __init__(self, fused_conv: bool):
        self.fused_conv = fused_conv

    def conv_fwd(self, x, w, b, reverse):
        if self.fused_conv:  # float32 weights with any input dtype
            return conv_cuda_fwd(x, w, b, True)
        return conv_ref(x, w, b, True, False)

    def conv_bwd(self, x, w, b, reverse, dout):
        if self.fused_conv:
            return conv_cuda_bwd(x, w, b, True, dout)
        return conv_ref_bwd(x, w, b, True, reverse, dout)

    def scan_fwd(self, u, delta, A, B, C, D, z, bias, reverse):
        return scan_cuda_fwd(u, delta, A, B, C, D, z, bias, True)[0]

    def scan_bwd(self, u, delta, A, B, C, D, z, bias, reverse, dout, return_out=False):
        # mamba-ssm's backward reads the forward's pre-gate output (and, beyond 2048
        # steps, its chunk states): the forward runs first, and its gated output is the
        # one asked for.
        out, aux = scan_cuda_fwd(u, delta, A, B, C, D, z, bias, True)
        out = out if return_out else None  # not kept through the backward
        grads = scan_cuda_bwd(u, delta, A, B, C, D, z, bias, True, dout, aux)
        return (*grads, out) if return_out else grads


_TORCH, _CPU = _TorchBackend(), _CPUBackend()
_CUDA = {True: _CUDABackend(True), False: _CUDABackend(False)}


def select_backend(kernel: str, device: torch.device, dtype: torch.dtype) -> _Backend:
    """The backend the mixer runs for tensors on ``device`` (see :mod:`.kernels` for
    ``kernel`` and the once-only fallback reports)."""
    is_cuda = device.type == 'cuda'
    if get_cuda_kernel('selective_scan_cuda', kernel, is_cuda, dtype) is not None:
        fused_conv = get_cuda_kernel('causal_conv1d', kernel, is_cuda, dtype) is not None
        return _CUDA[fused_conv]
    if use_cpu_extension(kernel, is_cuda):
        return _CPU
    return _TORCH


def _token_major(t: torch.Tensor) -> bool:
    return t.stride(1) == 1 and t.shape[2] > 1


def _proj(weight: torch.Tensor, t: torch.Tensor, channel_major: bool) -> torch.Tensor:
    """``weight @ t`` for t (B, I, L) -> (B, O, L): channel-major output
    (``weight @ t``, as mamba-ssm computes it) or token-major (a view of
    ``linear(t^T, weight)``)."""
    if channel_major:
        return torch.matmul(weight, t)
    return F.linear(t.transpose(1, 2), weight).transpose(1, 2)


def _weight_grad(dout: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """sum over batch and time of ``dout[b, :, l] t[b, :, l]^T`` -> (O, I)."""
    if _token_major(dout) and _token_major(t):
        return dout.transpose(1, 2).flatten(0, 1).t() @ t.transpose(1, 2).flatten(0, 1)
    return torch.einsum('bol,bil->oi', dout, t)


_DIR_PARAMS = 7  # conv weight, conv bias, x_proj weight, dt_proj weight, dt bias, A, D


class BiMambaInnerFn(torch.autograd.Function):
    """See the module docstring. Inputs: ``xz`` (B, 2 d_inner, L) in either layout; per
    direction (forward, then backward) conv weight (d_inner, K) and bias, x_proj weight
    (dt_rank + 2N, d_inner), dt_proj weight (d_inner, dt_rank) and bias, A (d_inner, N)
    (negative, float32) and D (d_inner,); out_proj weight (D, d_inner); the backend.
    Output (B, L, D) in xz's dtype."""

    @staticmethod
    def _direction(backend, x, z, params, d, dt_rank, d_state, x_dbl=None):
        """The scan inputs of direction d (0: forward, 1: backward): the tensors it runs
        on (flipped where the backend has no native reverse), its conv output, x_dbl
        (computed, or the given one in backward) and its split, delta."""
        cw, cb, xw, dtw = params[d * _DIR_PARAMS:d * _DIR_PARAMS + 4]
        reverse = d == 1
        flip = reverse and not backend.native_reverse
        xi, zi = (x.flip(-1), z.flip(-1)) if flip else (x, z)
        rev = reverse and not flip
        xc = backend.conv_fwd(xi, cw, cb, rev).to(x.dtype)
        if x_dbl is None:
            x_dbl = _proj(xw, xc, backend.channel_major)
        dt, Bm, Cm = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=1)
        delta = _proj(dtw, dt, backend.channel_major)
        return dict(xi=xi, zi=zi, rev=rev, flip=flip, xc=xc, x_dbl=x_dbl, dt=dt, Bm=Bm,
                    Cm=Cm, delta=delta)

    @staticmethod
    def forward(ctx, xz, *args):
        *params, out_w, backend = args
        x, z = xz.chunk(2, dim=1)
        dt_rank, d_state = params[3].shape[1], params[5].shape[1]
        y, x_dbls = None, []
        for i in range(2):
            dtb, A, D = params[i * _DIR_PARAMS + 4:(i + 1) * _DIR_PARAMS]
            d = BiMambaInnerFn._direction(backend, x, z, params, i, dt_rank, d_state)
            yi = backend.scan_fwd(d['xc'], d['delta'], A, d['Bm'], d['Cm'], D, d['zi'], dtb,
                                  d['rev'])
            y = BiMambaInnerFn._add_direction(y, yi, d['flip'])
            x_dbls.append(d['x_dbl'])
            del d, yi
        y = y.to(xz.dtype)
        # out_proj((y_fwd + y_bwd) / 2); the exact 1/2 on the narrower output.
        out = torch.matmul(y.transpose(1, 2), out_w.t()).mul_(0.5)
        ctx.save_for_backward(xz, *x_dbls, *params, out_w)
        ctx.backend, ctx.dims = backend, (dt_rank, d_state)
        return out

    @staticmethod
    def _add_direction(y, yi, flip):
        """y_fwd + y_bwd, accumulated in place (each scan output is a new tensor); the
        backward branch's output flipped back to the original time order."""
        if flip:
            yi = yi.flip(-1)
        return yi if y is None else y.add_(yi)

    @staticmethod
    def backward(ctx, dout):
        xz, x_dbl_f, x_dbl_b, *params, out_w = ctx.saved_tensors
        backend = ctx.backend
        dt_rank, d_state = ctx.dims
        cm = backend.channel_major
        x, z = xz.chunk(2, dim=1)
        dout = dout.to(xz.dtype)
        # dL/dy, the same for both directions: (B, d_inner, L) in the backend's layout.
        dy = _proj(out_w.t(), dout.transpose(1, 2), cm).mul_(0.5)

        dxz = torch.empty_like(xz)  # same strides (xz is dense)
        dx, dz = dxz.chunk(2, dim=1)
        grads = []
        y = None  # y_fwd + y_bwd, from the scan backwards
        for i, x_dbl in enumerate((x_dbl_f, x_dbl_b)):
            cw, cb, xw, dtw, dtb, A, D = params[i * _DIR_PARAMS:(i + 1) * _DIR_PARAMS]
            d = BiMambaInnerFn._direction(backend, x, z, params, i, dt_rank, d_state, x_dbl)
            dyi = dy.flip(-1) if d['flip'] else dy
            du, ddelta, dA, dB, dC, dD, dzi, ddtb, yi = backend.scan_bwd(
                d['xc'], d['delta'], A, d['Bm'], d['Cm'], D, d['zi'], dtb, d['rev'], dyi,
                return_out=True)
            del dyi
            d['delta'] = None
            y = BiMambaInnerFn._add_direction(y, yi, d['flip'])
            del yi
            ddelta = ddelta.to(xz.dtype)
            d_dtw = _weight_grad(ddelta, d['dt'])
            dx_dbl = torch.empty_like(d['x_dbl'])
            dx_dbl[:, :dt_rank] = _proj(dtw.t(), ddelta, cm)
            dx_dbl[:, dt_rank:dt_rank + d_state] = dB
            dx_dbl[:, dt_rank + d_state:] = dC
            d_xw = _weight_grad(dx_dbl, d['xc'])
            dxc = _proj(xw.t(), dx_dbl, cm).add_(du.to(xz.dtype))
            del du, ddelta, dx_dbl
            d['xc'] = None
            dxi, dcw, dcb = backend.conv_bwd(d['xi'], cw, cb, d['rev'], dxc)
            del dxc
            if d['flip']:
                dxi, dzi = dxi.flip(-1), dzi.flip(-1)
            if i == 0:
                dx.copy_(dxi)
                dz.copy_(dzi)
            else:
                dx.add_(dxi.to(dx.dtype))
                dz.add_(dzi.to(dz.dtype))
            del dxi, dzi, d
            grads += [dcw, dcb, d_xw, d_dtw, ddtb, dA, dD]
        del dy
        y = y.to(xz.dtype)
        d_out_w = _weight_grad(dout.transpose(1, 2), y).mul_(0.5)
        del y
        grads = [None if g is None else g.to(p.dtype) for g, p in zip(grads, params)]
        return (dxz, *grads, d_out_w.to(out_w.dtype), None)


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of A, D and the dt bias for compute ``dtype``: float32 (mamba-ssm's),
    float64 for a float64 model."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _mixer_params(mixer, dtype: torch.dtype) -> Sequence[torch.Tensor]:
    """The function's parameter arguments from a BiMambaMixer: matmul weights in the
    compute dtype, A = -exp(A_log), D and the dt bias in :func:`_state_dtype`."""
    params, sdt = [], _state_dtype(dtype)
    for suffix in ('', '_b'):
        conv = getattr(mixer, f'conv1d{suffix}')
        dt_proj = getattr(mixer, f'dt_proj{suffix}')
        params += [conv.weight.squeeze(1), conv.bias,
                   getattr(mixer, f'x_proj{suffix}').weight.to(dtype),
                   dt_proj.weight.to(dtype), dt_proj.bias.to(sdt),
                   -torch.exp(getattr(mixer, f'A{suffix}_log').to(sdt)),
                   getattr(mixer, f'D{suffix}').to(sdt)]
    return params


def bimamba_inner_fn(mixer, hidden: torch.Tensor, kernel: str = 'auto',
                     backend: _Backend = None) -> torch.Tensor:
    """The mixer's forward through :class:`BiMambaInnerFn`: hidden (B, L, D) ->
    (B, L, D). ``backend`` (default: chosen by :func:`select_backend`) is for tests."""
    # the matmuls' dtype: the autocast dtype under autocast
    dtype = autocast_dtype(hidden.device) or hidden.dtype
    if backend is None:
        backend = select_backend(kernel, hidden.device, dtype)
    w_in = mixer.in_proj.weight.to(dtype)
    h = hidden.to(dtype)
    if backend.channel_major:
        # (2 d_inner, B*L) from one matmul, viewed as (B, 2 d_inner, L).
        B, L, _ = h.shape
        xz = (w_in @ h.reshape(B * L, -1).t()).view(-1, B, L).transpose(0, 1)
    else:
        xz = F.linear(h, w_in).transpose(1, 2)
    params = _mixer_params(mixer, dtype)
    with autocast_off(hidden.device):
        return BiMambaInnerFn.apply(xz, *params, mixer.out_proj.weight.to(dtype), backend)


def bimamba_inner_ref(mixer, hidden: torch.Tensor, kernel: str = 'auto') -> torch.Tensor:
    """The same mixer composed of differentiable ops (:func:`causal_conv1d`,
    :func:`selective_scan`, linear layers): the reference of the fused function, and
    what autograd would keep without it."""
    w_x, w_z = mixer.in_proj.weight.chunk(2, dim=0)
    x = F.linear(hidden, w_x).transpose(1, 2)
    z = F.linear(hidden, w_z).transpose(1, 2)
    ys, sdt = [], _state_dtype(hidden.dtype)
    for suffix, reverse in (('', False), ('_b', True)):
        conv = getattr(mixer, f'conv1d{suffix}')
        dt_proj = getattr(mixer, f'dt_proj{suffix}')
        xc = causal_conv1d(x, conv.weight.squeeze(1), conv.bias, activation='silu',
                           reverse=reverse, kernel=kernel)
        x_dbl = F.linear(xc.transpose(1, 2), getattr(mixer, f'x_proj{suffix}').weight)
        dt, B, C = torch.split(x_dbl, [mixer.dt_rank, mixer.d_state, mixer.d_state], -1)
        delta = F.linear(dt, dt_proj.weight).transpose(1, 2)
        ys.append(selective_scan(
            xc, delta, -torch.exp(getattr(mixer, f'A{suffix}_log').to(sdt)),
            B.transpose(1, 2), C.transpose(1, 2), getattr(mixer, f'D{suffix}').to(sdt), z=z,
            delta_bias=dt_proj.bias.to(sdt), delta_softplus=True, reverse=reverse,
            kernel=kernel))
    y = (ys[0] + ys[1]).to(hidden.dtype).transpose(1, 2)
    return mixer.out_proj(y).mul_(0.5)
