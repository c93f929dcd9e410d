"""mamba-ssm's fused CUDA selective scan (its compiled ``selective_scan_cuda`` module,
called through the custom ops of :mod:`.library`): :func:`scan_cuda_fwd` /
:func:`scan_cuda_bwd` without autograd (composed by :mod:`.bimamba_inner`) and the
autograd function of :func:`~.selective_scan.selective_scan`."""
import torch

from . import library
from .kernels import _import_kernel


def has_selective_scan_cuda() -> bool:
    """Whether mamba-ssm's fused selective scan can be imported."""
    return _import_kernel('selective_scan_cuda')[0] is not None


def _unit_stride(t):
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def _cuda_B(t):
    """(B, N, L) -> mamba-ssm's variable (B, 1, N, L) with unit stride along L."""
    return _unit_stride(t).unsqueeze(1)


def scan_cuda_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """mamba-ssm's fused forward: ``(out_z, aux)``, the gated output (the plain one
    without z) and what :func:`scan_cuda_bwd` needs (chunk states, pre-gate output).
    u, delta, z: (B, D, L) (copied unless unit stride along L), B, C: (B, N, L) in u's
    dtype; A, D, delta_bias float32."""
    u, delta, z = _unit_stride(u), _unit_stride(delta), _unit_stride(z)
    out, states, *rest = library.selective_scan_cuda_fwd(
        u, delta, A, _cuda_B(B), _cuda_B(C), D, z, delta_bias, bool(delta_softplus))
    return (rest[0] if z is not None else out), (states, out)


def scan_cuda_bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout, aux,
                  return_out=False):
    """Gradients of :func:`scan_cuda_fwd` (``aux`` from its call): ``(du, ddelta, dA, dB,
    dC, dD, dz, ddelta_bias)``; with ``return_out``, a ninth element: the forward's
    (gated) output, read from ``aux`` (times silu(z) again, ``recompute_out_z``, with z)."""
    states, out = aux
    u, delta, z = _unit_stride(u), _unit_stride(delta), _unit_stride(z)
    recompute_out_z = bool(return_out) and z is not None
    du, ddelta, dA, dB, dC, dD, ddb, *rest = library.selective_scan_cuda_bwd(
        u, delta, A, _cuda_B(B), _cuda_B(C), D, z, delta_bias, _unit_stride(dout), states,
        out if z is not None else None, bool(delta_softplus), recompute_out_z)
    grads = (du, ddelta, dA, dB.squeeze(1), dC.squeeze(1), dD if D is not None else None,
             rest[0] if z is not None else None, ddb if delta_bias is not None else None)
    return (*grads, rest[1] if z is not None else out) if return_out else grads


class _SelectiveScanCUDA(torch.autograd.Function):

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        out, aux = scan_cuda_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, *aux)
        ctx.delta_softplus = delta_softplus
        return out

    @staticmethod
    def backward(ctx, dout):
        *inputs, states, out = ctx.saved_tensors
        return (*scan_cuda_bwd(*inputs, ctx.delta_softplus, dout, (states, out)), None)
