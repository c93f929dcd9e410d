"""Selective scan (the S6 recurrence of Mamba) with mamba-ssm's semantics.

For every batch b, channel d and state n::

    dt[b, d, l]   = softplus(delta[b, d, l] + delta_bias[d])   (softplus optional)
    h[b, d, l, n] = exp(dt * A[d, n]) * h[b, d, l-1, n] + dt * B[b, n, l] * u[b, d, l]
    y[b, d, l]    = sum_n C[b, n, l] * h[b, d, l, n] + D[d] * u[b, d, l]
    out           = y * silu(z)                                 (when z is given)

Implementations (see docs/kernels_and_performance.md#kernels):
:func:`~.selective_scan_ref.selective_scan_ref` (the sequential reference),
:func:`selective_scan_torch` (pure PyTorch, states recomputed in backward),
:func:`selective_scan_cpu` (the compiled CPU kernel, any (B, D, L) layout, output in
``u``'s layout) and mamba-ssm's fused CUDA kernel (:mod:`.selective_scan_cuda`). The last
three also exist without autograd (``scan_{torch,cpu,cuda}_fwd`` / ``_bwd``), composed by
:mod:`.bimamba_inner`. All compute in float32 (float64 stays float64), return ``u.dtype``.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import library
from .kernels import (ShapeError, autocast_off, check_tensors, cpu_extension, get_cuda_kernel,
                      kernel_dtype, require_cpu_extension, use_cpu_extension)
from .selective_scan_cuda import _SelectiveScanCUDA


def has_selective_scan_cpu() -> bool:
    """Whether the compiled CPU selective scan is available."""
    return cpu_extension() is not None


def _to(dtype, *tensors):
    """Each tensor in ``dtype`` (None stays None)."""
    return [None if t is None else t.to(dtype) for t in tensors]


def _flip_time(u, delta, B, C, z):
    """Reverse the sequence axis of the per-step inputs (``reverse=True`` through flips)."""
    return (u.flip(-1), delta.flip(-1), B.flip(-1), C.flip(-1),
            None if z is None else z.flip(-1))


def _check_shapes(u, delta, A, B, C, D, z, delta_bias, fn='selective_scan'):
    """Sizes, dtypes (floating point) and devices (u's) of every argument: a
    :class:`ShapeError` (a ValueError) naming the wrong one."""
    check_tensors(fn, ('D', 'z', 'delta_bias'), u=u, delta=delta, A=A, B=B, C=C, D=D, z=z,
                  delta_bias=delta_bias)
    if u.dim() != 3:
        raise ShapeError(f'{fn}: u must be (batch, dim, seqlen), got shape {tuple(u.shape)}')
    batch, dim, seqlen = u.shape
    if delta.shape != u.shape:
        raise ShapeError(f'{fn}: delta must have the shape of u {tuple(u.shape)}, '
                         f'got {tuple(delta.shape)}')
    if A.dim() != 2 or A.shape[0] != dim:
        raise ShapeError(f'{fn}: A must be (dim={dim}, dstate), got {tuple(A.shape)}')
    dstate = A.shape[1]
    for name, t in (('B', B), ('C', C)):
        if t.shape != (batch, dstate, seqlen):
            raise ShapeError(f'{fn}: {name} must be (batch, dstate, seqlen)='
                             f'{(batch, dstate, seqlen)}, got {tuple(t.shape)}')
    for name, t, shape, want in (('D', D, (dim, ), f'be ({dim},)'),
                                 ('z', z, u.shape, f'have the shape of u {tuple(u.shape)}'),
                                 ('delta_bias', delta_bias, (dim, ), f'be ({dim},)')):
        if t is not None and t.shape != shape:
            raise ShapeError(f'{fn}: {name} must {want}, got {tuple(t.shape)}')


# The PyTorch path's recurrences: states laid out (L, B, D, N), one contiguous slice per
# time step.
def _scan_fwd_loop(dA: Tensor, dBu: Tensor) -> Tensor:
    """h[t] = dA[t] * h[t-1] + dBu[t]; all (L, B, D, N). Returns all h."""
    hs = torch.empty_like(dBu)
    if not len(hs):  # an empty sequence
        return hs
    # h[-1] = 0 decays like any state: 0 * dA[0] is NaN where dA[0] is NaN or inf, as in
    # the sequential reference and the compiled kernel.
    torch.addcmul(dBu[0], dA[0], torch.zeros_like(dA[0]), out=hs[0])
    for t in range(1, dBu.shape[0]):
        torch.addcmul(dBu[t], dA[t], hs[t - 1], out=hs[t])
    return hs


def _scan_bwd_loop(dA: Tensor, dh_direct: Tensor) -> Tensor:
    """g[t] = dh_direct[t] + dA[t+1] * g[t+1] (reverse-time adjoint recurrence)."""
    gs = torch.empty_like(dh_direct)
    last = dh_direct.shape[0] - 1
    if last < 0:  # an empty sequence
        return gs
    gs[last] = dh_direct[last]
    for t in range(last - 1, -1, -1):
        torch.addcmul(dh_direct[t], dA[t + 1], gs[t + 1], out=gs[t])
    return gs


def _prepare(u, delta, A, B, delta_bias, delta_softplus):
    """``(dt_raw, dt, dA, dBu)``, the last two (L, B, D, N), in the compute dtype."""
    dt_raw = delta if delta_bias is None else delta + delta_bias[:, None]
    dt = F.softplus(dt_raw) if delta_softplus else dt_raw
    dA = torch.exp(dt.permute(2, 0, 1)[..., None] * A)
    dBu = (dt * u).permute(2, 0, 1)[..., None] * B.permute(2, 0, 1)[:, :, None, :]
    return dt_raw, dt, dA.contiguous(), dBu.contiguous()


def _output(hs, C, u, D):
    """The pre-gate output ``sum_n C h + D u`` (B, D, L) from the states hs."""
    y = torch.einsum('lbdn,bnl->bdl', hs, C)
    return y if D is None else y + u * D[:, None]


def scan_torch_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Forward of the PyTorch path without autograd: the (gated) output in ``u.dtype``."""
    u_, delta_, A_, B_, C_, D_, z_, db_ = _to(kernel_dtype(u), u, delta, A, B, C, D, z,
                                              delta_bias)
    hs = _scan_fwd_loop(*_prepare(u_, delta_, A_, B_, db_, delta_softplus)[2:])
    y = _output(hs, C_, u_, D_)
    return (y * F.silu(z_) if z_ is not None else y).to(u.dtype)


def scan_torch_bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout,
                   return_out=False):
    """Gradients of :func:`scan_torch_fwd` (states recomputed from the inputs):
    ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)`` in the inputs' dtypes (None for
    absent ones); with ``return_out``, a ninth element: the output of
    :func:`scan_torch_fwd`, from the recomputed states."""
    u_, delta_, A_, B_, C_, D_, z_, db_, dout = _to(kernel_dtype(u), u, delta, A, B, C, D,
                                                    z, delta_bias, dout)
    dt_raw, dt, dA, dBu = _prepare(u_, delta_, A_, B_, db_, delta_softplus)
    hs = _scan_fwd_loop(dA, dBu)

    dz, dy, out = None, dout, None
    if z_ is not None or return_out:
        y = _output(hs, C_, u_, D_)
        if return_out:
            out = (y * F.silu(z_) if z_ is not None else y).to(u.dtype)
        if z_ is not None:
            sig = torch.sigmoid(z_)
            dz = dout * y * sig * (1 + z_ * (1 - sig))
            dy = dout * z_ * sig
        del y
    dD = (dy * u_).sum((0, 2)) if D_ is not None else None
    du = dy * D_[:, None] if D_ is not None else torch.zeros_like(u_)
    dC = torch.einsum('lbdn,bdl->bnl', hs, dy)

    dy_l = dy.permute(2, 0, 1)[..., None]  # (L, B, D, 1)
    dh_direct = dy_l * C_.permute(2, 0, 1)[:, :, None, :]
    gs = _scan_bwd_loop(dA, dh_direct.contiguous())
    del dh_direct
    # d(dA)[t] = g[t] * h[t-1]
    h_prev = torch.cat([torch.zeros_like(hs[:1]), hs[:-1]], dim=0)
    ddA_dA = gs * h_prev * dA  # gradient w.r.t. (dt * A)
    del h_prev, hs
    B_l = B_.permute(2, 0, 1)[:, :, None, :]  # (L, B, 1, N)
    dt_l = dt.permute(2, 0, 1)  # (L, B, D)
    u_l = u_.permute(2, 0, 1)
    g_dot_B = (gs * B_l).sum(-1)  # (L, B, D)
    ddt = (ddA_dA * A_).sum(-1) + g_dot_B * u_l
    du = du + (g_dot_B * dt_l).permute(1, 2, 0)
    dB = torch.einsum('lbdn,lbd->bnl', gs, dt_l * u_l)
    dA_param = torch.einsum('lbdn,lbd->dn', ddA_dA, dt_l)
    ddt = ddt.permute(1, 2, 0)  # (B, D, L)
    if delta_softplus:
        ddt = ddt * torch.sigmoid(dt_raw)
    ddelta_bias = ddt.sum((0, 2)) if db_ is not None else None

    grads = tuple(None if g is None or ref is None else g.to(ref.dtype)
                  for g, ref in zip((du, ddt, dA_param, dB, dC, dD, dz, ddelta_bias),
                                    (u, delta, A, B, C, D, z, delta_bias)))
    return (*grads, out) if return_out else grads


class _SelectiveScanTorch(torch.autograd.Function):

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.delta_softplus = delta_softplus
        return scan_torch_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

    @staticmethod
    def backward(ctx, dout):
        return (*scan_torch_bwd(*ctx.saved_tensors, ctx.delta_softplus, dout), None)


def selective_scan_torch(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                         D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                         delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                         reverse: bool = False) -> Tensor:
    """Pure-PyTorch selective scan with a memory-light hand-written backward.

    Same arguments and result as :func:`selective_scan_ref`.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias, 'selective_scan_torch')
    return _scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)


def _scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    """:func:`selective_scan_torch` on checked arguments."""
    if reverse:
        u, delta, B, C, z = _flip_time(u, delta, B, C, z)
    with autocast_off(u.device):
        out = _SelectiveScanTorch.apply(u, delta, A, B, C, D, z, delta_bias,
                                        bool(delta_softplus))
    return out.flip(-1) if reverse else out


def _cpu_args(u, delta, A, B, C, D, z, delta_bias, reverse):
    """The compiled kernel's arguments in the compute dtype: (B, D, L) tensors as they
    are (any layout), B and C time-major (B, L, N) in scan order, the rest contiguous."""
    ct = kernel_dtype(u)

    def time_major(t):
        t = t.to(ct).transpose(1, 2)
        return (t.flip(1) if reverse else t).contiguous()

    A, D, delta_bias = (None if t is None else t.contiguous()
                        for t in _to(ct, A, D, delta_bias))
    u, delta, z = _to(ct, u, delta, z)
    return u, delta, A, time_major(B), time_major(C), D, z, delta_bias


def scan_cpu_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    """Forward of the compiled CPU kernel without autograd; the output comes in ``u``'s
    memory layout, in the compute dtype (float32, or float64 for float64 inputs)."""
    args = _cpu_args(u, delta, A, B, C, D, z, delta_bias, reverse)
    return library.selective_scan_fwd(*args, bool(delta_softplus), bool(reverse))


def scan_cpu_bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, dout,
                 return_out=False):
    """Gradients of :func:`scan_cpu_fwd`: ``(du, ddelta, dA, dB, dC, dD, dz,
    ddelta_bias)`` in the compute dtype; dB, dC as (B, N, L) views (None for absent
    inputs). With ``return_out``, a ninth element: the output of :func:`scan_cpu_fwd`
    (its layout and dtype), computed from the recomputed states (equal up to rounding)."""
    args = _cpu_args(u, delta, A, B, C, D, z, delta_bias, reverse)
    du, ddelta, dA, dBt, dCt, dD, dz, ddb, *out = library.selective_scan_bwd(
        *args, bool(delta_softplus), bool(reverse), dout.to(args[0].dtype),
        bool(return_out))
    if reverse:
        dBt, dCt = dBt.flip(1), dCt.flip(1)
    grads = (du, ddelta, dA, dBt.transpose(1, 2), dCt.transpose(1, 2),
             dD if D is not None else None, dz if z is not None else None,
             ddb if delta_bias is not None else None)
    return (*grads, *out) if return_out else grads


class _SelectiveScanCPU(torch.autograd.Function):

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.flags = (bool(delta_softplus), bool(reverse))
        return scan_cpu_fwd(u, delta, A, B, C, D, z, delta_bias, *ctx.flags).to(u.dtype)

    @staticmethod
    def backward(ctx, dout):
        saved = ctx.saved_tensors
        grads = scan_cpu_bwd(*saved, *ctx.flags, dout)
        return (*(None if g is None else g.to(t.dtype) for g, t in zip(grads, saved)),
                None, None)


def selective_scan_cpu(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                       D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                       delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                       reverse: bool = False) -> Tensor:
    """Compiled CPU selective scan (same arguments as :func:`selective_scan_ref`).

    ``reverse=True`` runs natively from the last time step (no flipped copies).

    Raises:
        RuntimeError: if the extension was not built (see ``setup.py``).
    """
    require_cpu_extension('the compiled CPU selective scan', "kernel='torch'")
    _check_shapes(u, delta, A, B, C, D, z, delta_bias, 'selective_scan_cpu')
    if u.device.type != 'cpu':
        raise ShapeError(f'selective_scan_cpu needs CPU tensors, got u on {u.device}')
    return _scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)


def _scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    """:func:`selective_scan_cpu` on checked CPU arguments (extension built)."""
    with torch.autocast(device_type='cpu', enabled=False):
        return _SelectiveScanCPU.apply(u, delta, A, B, C, D, z, delta_bias,
                                       bool(delta_softplus), bool(reverse))


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                   delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                   reverse: bool = False, kernel: str = 'auto') -> Tensor:
    """Selective scan dispatching to mamba-ssm's fused kernel, the compiled CPU kernel
    or the PyTorch path (the arguments are checked once, here).

    Args:
        kernel (str): 'auto' (mamba-ssm's fused kernel for CUDA tensors when it
            imports; the compiled CPU kernel for CPU tensors when built; the
            pure-PyTorch path otherwise), 'cuda' (fused kernel or a clear error) or
            'torch' (always the pure-PyTorch path). Defaults to 'auto'.
        Other arguments: see :func:`selective_scan_ref`.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    if get_cuda_kernel('selective_scan_cuda', kernel, u.is_cuda, u.dtype) is not None:
        if reverse:
            u, delta, B, C, z = _flip_time(u, delta, B, C, z)
        dtype = u.dtype if u.dtype in (torch.float16, torch.bfloat16) else torch.float32
        with torch.autocast(device_type='cuda', enabled=False):
            out = _SelectiveScanCUDA.apply(
                u.to(dtype), delta.to(dtype), A.float(), B.to(dtype), C.to(dtype),
                None if D is None else D.float(), None if z is None else z.to(dtype),
                None if delta_bias is None else delta_bias.float(), bool(delta_softplus))
        out = out.to(u.dtype)
        return out.flip(-1) if reverse else out
    if use_cpu_extension(kernel, u.is_cuda) \
            and u.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        return _scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    return _scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
