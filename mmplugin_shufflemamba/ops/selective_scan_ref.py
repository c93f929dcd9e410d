"""The readable reference of the selective scan: a direct sequential loop differentiated
by autograd, which every other implementation is tested against (slow, and it keeps
(B, D, L, N) tensors for its backward)."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .kernels import kernel_dtype
from .selective_scan import _check_shapes, _flip_time


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                       D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                       delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                       reverse: bool = False) -> Tensor:
    """Sequential reference selective scan.

    Args:
        u (Tensor): (B, D, L) input.
        delta (Tensor): (B, D, L) time steps (before bias / softplus).
        A (Tensor): (D, N) state matrix (diagonal, negative real).
        B (Tensor): (B, N, L) input matrix.
        C (Tensor): (B, N, L) output matrix.
        D (Tensor, optional): (D, ) skip connection.
        z (Tensor, optional): (B, D, L) gate, applied as ``y * silu(z)``.
        delta_bias (Tensor, optional): (D, ) added to delta.
        delta_softplus (bool): apply softplus to delta. Defaults to False.
        reverse (bool): scan from the last time step to the first, i.e.
            ``flip(scan(flip(inputs)))`` along L. Defaults to False.

    Returns:
        Tensor: (B, D, L) in the dtype of ``u``.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias, 'selective_scan_ref')
    if reverse:
        u, delta, B, C, z = _flip_time(u, delta, B, C, z)
    dtype_in = u.dtype
    ct = kernel_dtype(u)
    u, delta, A, B, C = (t.to(ct) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        dt = delta[:, :, t, None]  # (B, D, 1)
        h = torch.exp(dt * A) * h + dt * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(u.shape)  # (an empty sequence)
    if D is not None:
        y = y + u * D.to(ct)[:, None]
    if z is not None:
        y = y * F.silu(z.to(ct))
    y = y.to(dtype_in)
    return y.flip(-1) if reverse else y
