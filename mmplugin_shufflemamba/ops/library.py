"""The compiled CPU kernels and mamba-ssm's CUDA scan as ``torch.library`` custom ops
(``torch.ops.shufflemamba``): opaque nodes to ``torch.compile`` (dynamo traces the Python
around them into one graph), with fake implementations giving the outputs' shapes,
dtypes and strides (the layouts the kernels write). Absent optional outputs (no ``D``,
``z`` or bias) are empty tensors; :mod:`.selective_scan`, :mod:`.selective_scan_cuda`
and :mod:`.causal_conv1d` turn them into None. (causal-conv1d registers its own CUDA
kernels as custom ops.)
"""
from typing import List, Optional

import torch
from torch import Tensor

from .kernels import cpu_extension, get_cuda_kernel

NS = 'shufflemamba'


def _like_layout(u: Tensor) -> Tensor:
    """A new (B, D, L) tensor in ``u``'s layout, token-major (stride 1 along D) or
    channel-major, as the kernels allocate their (B, D, L) outputs."""
    batch, dim, length = u.shape
    if u.stride(1) == 1 and length > 1:
        return u.new_empty((batch, length, dim)).transpose(1, 2)
    return u.new_empty((batch, dim, length))


def _new(t: Optional[Tensor], ref: Tensor) -> Tensor:
    """A new contiguous tensor of ``t``'s shape (the kernels' per-parameter outputs), or
    an empty one for an absent ``t``."""
    return ref.new_empty((0, )) if t is None else t.new_empty(t.shape)


def _absent_as_empty(tensors, ref: Tensor) -> List[Tensor]:
    """The kernels' outputs with each absent (None) one as an empty tensor."""
    return [_new(None, ref) if t is None else t for t in tensors]


def _same_device(fn: str, *tensors) -> None:
    """The kernels' device check, for the shape-only implementations too."""
    first = tensors[0]
    for t in tensors[1:]:
        if t is not None and t.device != first.device:
            raise ValueError(f'{fn}: every tensor must be on {first.device}, got one on '
                             f'{t.device}')


@torch.library.custom_op(f'{NS}::selective_scan_fwd', mutates_args=(), device_types='cpu')
def selective_scan_fwd(u: Tensor, delta: Tensor, A: Tensor, Bt: Tensor, Ct: Tensor,
                       D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                       softplus: bool, reverse: bool) -> Tensor:
    return cpu_extension().selective_scan_fwd(u, delta, A, Bt, Ct, D, z, delta_bias,
                                              softplus, reverse)


@selective_scan_fwd.register_fake
def _(u, delta, A, Bt, Ct, D, z, delta_bias, softplus, reverse):
    _same_device('selective_scan_fwd', u, delta, A, Bt, Ct, D, z, delta_bias)
    return _like_layout(u)


@torch.library.custom_op(f'{NS}::selective_scan_bwd', mutates_args=(), device_types='cpu')
def selective_scan_bwd(u: Tensor, delta: Tensor, A: Tensor, Bt: Tensor, Ct: Tensor,
                       D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                       softplus: bool, reverse: bool, dout: Tensor,
                       return_out: bool) -> List[Tensor]:
    grads = cpu_extension().selective_scan_bwd(u, delta, A, Bt, Ct, D, z, delta_bias,
                                               softplus, reverse, dout, return_out)
    return _absent_as_empty(grads, u)


@selective_scan_bwd.register_fake
def _(u, delta, A, Bt, Ct, D, z, delta_bias, softplus, reverse, dout, return_out):
    _same_device('selective_scan_bwd', u, delta, A, Bt, Ct, D, z, delta_bias, dout)
    out = [_like_layout(u), _like_layout(u), _new(A, u), _new(Bt, u), _new(Ct, u),
           _new(D, u), _new(None, u) if z is None else _like_layout(u),
           _new(delta_bias, u)]
    return out + [_like_layout(u)] if return_out else out


@torch.library.custom_op(f'{NS}::causal_conv1d_fwd', mutates_args=(), device_types='cpu')
def causal_conv1d_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], silu: bool,
                      reverse: bool) -> Tensor:
    return cpu_extension().causal_conv1d_fwd(x, weight, bias, silu, reverse)


@causal_conv1d_fwd.register_fake
def _(x, weight, bias, silu, reverse):
    _same_device('causal_conv1d_fwd', x, weight, bias)
    return _like_layout(x) if x.shape[1] > 1 else x.new_empty(x.shape)


@torch.library.custom_op(f'{NS}::causal_conv1d_bwd', mutates_args=(), device_types='cpu')
def causal_conv1d_bwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], silu: bool,
                      reverse: bool, dout: Tensor) -> List[Tensor]:
    return _absent_as_empty(cpu_extension().causal_conv1d_bwd(x, weight, bias, silu,
                                                              reverse, dout), x)


@causal_conv1d_bwd.register_fake
def _(x, weight, bias, silu, reverse, dout):
    _same_device('causal_conv1d_bwd', x, weight, bias, dout)
    return [_like_layout(x), _new(weight, x), _new(bias, x)]


def _scan_cuda():
    """mamba-ssm's ``selective_scan_cuda`` module (an error naming the fix without it)."""
    return get_cuda_kernel('selective_scan_cuda', 'cuda', True)


@torch.library.custom_op(f'{NS}::selective_scan_cuda_fwd', mutates_args=())
def selective_scan_cuda_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                            D: Optional[Tensor], z: Optional[Tensor],
                            delta_bias: Optional[Tensor], softplus: bool) -> List[Tensor]:
    """mamba-ssm's ``fwd``: [out, chunk states] and, with z, [out * silu(z)]."""
    return list(_scan_cuda().fwd(u, delta, A, B, C, D, z, delta_bias, softplus))


@selective_scan_cuda_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, softplus):
    _same_device('selective_scan_cuda_fwd', u, delta, A, B, C, D, z, delta_bias)
    batch, dim, length = u.shape
    n_chunks = (length + 2047) // 2048  # the kernel keeps its states every 2048 steps
    states = u.new_empty((batch, dim, n_chunks, 2 * A.shape[1]), dtype=A.dtype)
    out = [torch.empty_like(delta), states]
    return out + [torch.empty_like(z)] if z is not None else out


@torch.library.custom_op(f'{NS}::selective_scan_cuda_bwd', mutates_args=())
def selective_scan_cuda_bwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                            D: Optional[Tensor], z: Optional[Tensor],
                            delta_bias: Optional[Tensor], dout: Tensor, states: Tensor,
                            out: Optional[Tensor], softplus: bool,
                            recompute_out_z: bool) -> List[Tensor]:
    """mamba-ssm's ``bwd``: [du, ddelta, dA, dB, dC, dD, ddelta_bias], then with z [dz]
    and, with ``recompute_out_z``, [out * silu(z)]."""
    grads = _scan_cuda().bwd(u, delta, A, B, C, D, z, delta_bias, dout, states, out, None,
                             softplus, recompute_out_z)
    return _absent_as_empty(grads, u)


@selective_scan_cuda_bwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, dout, states, out, softplus, recompute_out_z):
    _same_device('selective_scan_cuda_bwd', u, delta, A, B, C, D, z, delta_bias, dout,
                 states, out)
    grads = [torch.empty_like(t) if t is not None else _new(None, u)
             for t in (u, delta, A, B, C, D, delta_bias)]
    if z is not None:
        grads.append(torch.empty_like(z))
    if recompute_out_z:  # out * silu(z); nothing to recompute without z
        grads.append(torch.empty_like(out) if z is not None else _new(None, u))
    return grads


__all__ = ['causal_conv1d_bwd', 'causal_conv1d_fwd', 'selective_scan_bwd',
           'selective_scan_cuda_bwd', 'selective_scan_cuda_fwd', 'selective_scan_fwd']
