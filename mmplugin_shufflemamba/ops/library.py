"""The compiled CPU kernels as ``torch.library`` custom ops (``torch.ops.shufflemamba``).

Registered ops are opaque nodes to ``torch.compile``: dynamo traces the Python around
them (argument preparation, the projections, :class:`~.bimamba_inner.BiMambaInnerFn`)
into one graph instead of breaking it at every kernel call, and the fake
implementations give the outputs' shapes, dtypes and strides (the layouts the kernels
write) without running them. Absent optional outputs (no ``D``, ``z`` or bias) come
back as empty tensors from the ops; the Python functions of :mod:`.selective_scan` and
:mod:`.causal_conv1d` turn them into None.
"""
from typing import List, Optional

import torch

from .kernels import cpu_extension

NS = 'shufflemamba'


def _like_layout(u: torch.Tensor) -> torch.Tensor:
    """A new (B, D, L) tensor in ``u``'s layout: token-major (stride 1 along D) or
    channel-major, as the kernels allocate their (B, D, L) outputs."""
    batch, dim, length = u.shape
    if u.stride(1) == 1 and length > 1:
        return u.new_empty((batch, length, dim)).transpose(1, 2)
    return u.new_empty((batch, dim, length))


def _absent(ref: torch.Tensor) -> torch.Tensor:
    return ref.new_empty((0, ))


def _new(t: torch.Tensor) -> torch.Tensor:
    """A new contiguous tensor of ``t``'s shape (the kernels' per-parameter outputs)."""
    return t.new_empty(t.shape)


def _same_device(fn: str, *tensors) -> None:
    """The kernels' device check, for the shape-only implementations too."""
    first = tensors[0]
    for t in tensors[1:]:
        if t is not None and t.device != first.device:
            raise ValueError(f'{fn}: every tensor must be on {first.device}, got one on '
                             f'{t.device}')


@torch.library.custom_op(f'{NS}::selective_scan_fwd', mutates_args=(), device_types='cpu')
def selective_scan_fwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                       Bt: torch.Tensor, Ct: torch.Tensor, D: Optional[torch.Tensor],
                       z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
                       softplus: bool, reverse: bool) -> torch.Tensor:
    return cpu_extension().selective_scan_fwd(u, delta, A, Bt, Ct, D, z, delta_bias,
                                              softplus, reverse)


@selective_scan_fwd.register_fake
def _(u, delta, A, Bt, Ct, D, z, delta_bias, softplus, reverse):
    _same_device('selective_scan_fwd', u, delta, A, Bt, Ct, D, z, delta_bias)
    return _like_layout(u)


@torch.library.custom_op(f'{NS}::selective_scan_bwd', mutates_args=(), device_types='cpu')
def selective_scan_bwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                       Bt: torch.Tensor, Ct: torch.Tensor, D: Optional[torch.Tensor],
                       z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
                       softplus: bool, reverse: bool, dout: torch.Tensor,
                       return_out: bool) -> List[torch.Tensor]:
    grads = cpu_extension().selective_scan_bwd(u, delta, A, Bt, Ct, D, z, delta_bias,
                                               softplus, reverse, dout, return_out)
    return [_absent(u) if g is None else g for g in grads]


@selective_scan_bwd.register_fake
def _(u, delta, A, Bt, Ct, D, z, delta_bias, softplus, reverse, dout, return_out):
    _same_device('selective_scan_bwd', u, delta, A, Bt, Ct, D, z, delta_bias, dout)
    out = [_like_layout(u), _like_layout(u), _new(A), _new(Bt), _new(Ct),
           _absent(u) if D is None else _new(D),
           _absent(u) if z is None else _like_layout(u),
           _absent(u) if delta_bias is None else _new(delta_bias)]
    return out + [_like_layout(u)] if return_out else out


@torch.library.custom_op(f'{NS}::causal_conv1d_fwd', mutates_args=(), device_types='cpu')
def causal_conv1d_fwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      silu: bool, reverse: bool) -> torch.Tensor:
    return cpu_extension().causal_conv1d_fwd(x, weight, bias, silu, reverse)


@causal_conv1d_fwd.register_fake
def _(x, weight, bias, silu, reverse):
    _same_device('causal_conv1d_fwd', x, weight, bias)
    batch, dim, length = x.shape
    if x.stride(1) == 1 and length > 1 and dim > 1:
        return x.new_empty((batch, length, dim)).transpose(1, 2)
    return x.new_empty((batch, dim, length))


@torch.library.custom_op(f'{NS}::causal_conv1d_bwd', mutates_args=(), device_types='cpu')
def causal_conv1d_bwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      silu: bool, reverse: bool, dout: torch.Tensor) -> List[torch.Tensor]:
    dx, dw, db = cpu_extension().causal_conv1d_bwd(x, weight, bias, silu, reverse, dout)
    return [dx, dw, _absent(x) if db is None else db]


@causal_conv1d_bwd.register_fake
def _(x, weight, bias, silu, reverse, dout):
    _same_device('causal_conv1d_bwd', x, weight, bias, dout)
    return [_like_layout(x), _new(weight), _absent(x) if bias is None else _new(bias)]


__all__ = ['causal_conv1d_bwd', 'causal_conv1d_fwd', 'selective_scan_bwd',
           'selective_scan_fwd']
