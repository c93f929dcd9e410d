"""Depthwise causal 1D convolution, as used by the Mamba mixer."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import library
from .kernels import (ShapeError, _import_kernel, check_tensors, get_cuda_kernel,
                      kernel_dtype, require_cpu_extension, use_cpu_extension)


def check_conv_args(x, weight, bias, activation, fn: str) -> bool:
    """Sizes, dtypes and devices of the conv's arguments, then the activation (a clear
    error, not a crash); returns whether the activation is silu."""
    check_tensors(fn, ('bias', ), x=x, weight=weight, bias=bias)
    if x.dim() != 3:
        raise ShapeError(f'{fn}: x must be (batch, dim, seqlen), got shape {tuple(x.shape)}')
    dim = x.shape[1]
    if weight.dim() != 2 or weight.shape[0] != dim or weight.shape[1] < 1:
        raise ShapeError(f'{fn}: weight must be (dim={dim}, width >= 1), got '
                         f'{tuple(weight.shape)}')
    if bias is not None and tuple(bias.shape) != (dim, ):
        raise ShapeError(f'{fn}: bias must be ({dim},), got {tuple(bias.shape)}')
    if activation not in (None, 'silu', 'swish'):
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    return activation is not None


def has_causal_conv1d_cuda() -> bool:
    """Whether the fused causal-conv1d CUDA kernel can be imported."""
    return _import_kernel('causal_conv1d')[0] is not None


def causal_conv1d_ref(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                      activation: Optional[str] = None, reverse: bool = False) -> Tensor:
    """Pure-PyTorch depthwise causal convolution.

    Args:
        x (Tensor): (B, D, L).
        weight (Tensor): (D, K).
        bias (Tensor, optional): (D, ).
        activation (str, optional): None, 'silu' or 'swish'.
        reverse (bool): anti-causal, i.e. ``flip(conv(flip(x)))``: output t only sees
            inputs t..L-1. Computed directly (flipped kernel), without flipped copies.

    Returns:
        Tensor: (B, D, L); output t only sees inputs 0..t (t..L-1 when reverse).
    """
    silu = check_conv_args(x, weight, bias, activation, 'causal_conv1d_ref')
    return conv_ref(x, weight, bias, silu, reverse)


def conv_ref(x, weight, bias, silu: bool, reverse: bool) -> Tensor:
    """:func:`causal_conv1d_ref` on checked arguments (``silu``: the activation)."""
    width, seqlen = weight.shape[1], x.shape[-1]
    w = weight.to(x.dtype)
    # Taps read zeros outside the sequence, and those zeros are multiplied like any
    # input (as in causal-conv1d's CUDA kernel): a NaN or inf weight makes the whole
    # channel non-finite. Written as shifted products rather than F.conv1d, whose
    # padding behaves differently per backend (float32 skips it, float64 multiplies it).
    xp = F.pad(x, (0, width - 1) if reverse else (width - 1, 0))
    out = None
    for j in range(width):  # tap K-1-j reads x[t - j] (x[t + j] when reverse)
        start = j if reverse else width - 1 - j
        term = w[:, width - 1 - j, None] * xp[..., start:start + seqlen]
        out = term if out is None else out + term
    if bias is not None:
        out = bias.to(x.dtype)[:, None] + out
    return F.silu(out) if silu else out


def conv_ref_bwd(x, weight, bias, silu: bool, reverse: bool, dout: Tensor):
    """Gradients ``(dx, dweight, dbias)`` of :func:`conv_ref`, the steps of its autograd
    backward written out (they also trace into a compiled graph, where autograd cannot
    run inside a backward)."""
    width, seqlen = weight.shape[1], x.shape[-1]
    w = weight.to(x.dtype)
    pad = (0, width - 1) if reverse else (width - 1, 0)
    dout = dout.to(x.dtype)
    if silu:
        dout = torch.ops.aten.silu_backward(dout, conv_ref(x, weight, bias, False, reverse))
    xp, dxp, dw = F.pad(x, pad), x.new_zeros(x.shape[:-1] + (seqlen + width - 1, )), []
    for j in range(width):  # tap K-1-j, as in conv_ref
        start = j if reverse else width - 1 - j
        dw.append((dout * xp[..., start:start + seqlen]).sum((0, 2)))
        dxp[..., start:start + seqlen] += w[:, width - 1 - j, None] * dout
    dx = dxp[..., :seqlen] if reverse else dxp[..., width - 1:]
    dw = torch.stack(dw[::-1], dim=1).to(weight.dtype)
    return dx, dw, None if bias is None else dout.sum((0, 2)).to(bias.dtype)


def _strided(t: Tensor) -> Tensor:
    """``t`` if it has unit stride along L or along D, else a contiguous copy: the
    channel-major and token-major layouts the kernels read as they are."""
    return t if t.stride(2) == 1 or t.stride(1) == 1 else t.contiguous()


def _cpu_conv_args(x, weight, bias):
    ct = kernel_dtype(x)
    xc = x.to(ct)
    if xc.shape[2] > 1:  # the output comes in the input's layout
        xc = _strided(xc)
    return xc, weight.to(ct).contiguous(), None if bias is None else bias.to(ct).contiguous()


def conv_cpu_fwd(x, weight, bias, silu: bool, reverse: bool):
    """Compiled CPU forward without autograd, in the compute dtype (float32 / float64)."""
    return library.causal_conv1d_fwd(*_cpu_conv_args(x, weight, bias), bool(silu),
                                     bool(reverse))


def conv_cpu_bwd(x, weight, bias, silu: bool, reverse: bool, dout):
    """Gradients ``(dx, dweight, dbias)`` of :func:`conv_cpu_fwd` (compute dtype)."""
    xc, w, b = _cpu_conv_args(x, weight, bias)
    dx, dw, db = library.causal_conv1d_bwd(xc, w, b, bool(silu), bool(reverse),
                                           dout.to(xc.dtype))
    return dx, dw, db if bias is not None else None


def conv_cuda_fwd(x, weight, bias, silu: bool):
    """causal-conv1d's fused forward (x: (B, D, L) with unit stride along L or along D)."""
    mod = _import_kernel('causal_conv1d')[0]
    return mod.fwd(_strided(x), weight.contiguous(),
                   None if bias is None else bias.contiguous(), None, None, None, bool(silu))


def conv_cuda_bwd(x, weight, bias, silu: bool, dout):
    """Gradients ``(dx, dweight, dbias)`` of :func:`conv_cuda_fwd`."""
    mod = _import_kernel('causal_conv1d')[0]
    dx, dw, db, _ = mod.bwd(_strided(x), weight.contiguous(),
                            None if bias is None else bias.contiguous(), _strided(dout), None,
                            None, None, None, False, bool(silu))
    return dx, dw, db


class _CausalConv1dCPU(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, bias, silu, reverse):
        ctx.save_for_backward(x, weight, bias)
        ctx.flags = (silu, reverse)
        return conv_cpu_fwd(x, weight, bias, silu, reverse).to(x.dtype)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        grads = conv_cpu_bwd(x, weight, bias, *ctx.flags, dout)
        return (*(None if g is None else g.to(t.dtype)
                  for g, t in zip(grads, (x, weight, bias))), None, None)


class _CausalConv1dCUDA(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        ctx.save_for_backward(x, weight, bias)
        ctx.silu = silu
        return conv_cuda_fwd(x, weight, bias, silu)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        return (*conv_cuda_bwd(x, weight, bias, ctx.silu, dout), None)


def causal_conv1d_cpu(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                      activation: Optional[str] = None, reverse: bool = False) -> Tensor:
    """Compiled CPU kernel (same arguments and result as :func:`causal_conv1d_ref`)."""
    require_cpu_extension('the compiled CPU causal conv', "kernel='torch'")
    silu = check_conv_args(x, weight, bias, activation, 'causal_conv1d_cpu')
    if x.device.type != 'cpu':
        raise ShapeError(f'causal_conv1d_cpu needs CPU tensors, got x on {x.device}')
    return _conv_cpu(x, weight, bias, silu, reverse)


def _conv_cpu(x, weight, bias, silu: bool, reverse: bool) -> Tensor:
    with torch.autocast(device_type='cpu', enabled=False):
        return _CausalConv1dCPU.apply(x, weight, bias, silu, reverse)


def causal_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                  activation: Optional[str] = None, reverse: bool = False,
                  kernel: str = 'auto') -> Tensor:
    """Dispatch: causal-conv1d's fused kernel for CUDA tensors (when it imports), the
    compiled CPU kernel for CPU tensors (when built), else :func:`causal_conv1d_ref`
    (the arguments are checked once, here)."""
    silu = check_conv_args(x, weight, bias, activation, 'causal_conv1d')
    if get_cuda_kernel('causal_conv1d', kernel, x.is_cuda, x.dtype) is not None:
        if reverse:
            return _CausalConv1dCUDA.apply(x.flip(-1), weight, bias, silu).flip(-1)
        return _CausalConv1dCUDA.apply(x, weight, bias, silu)
    if use_cpu_extension(kernel, x.is_cuda):
        return _conv_cpu(x, weight, bias, silu, reverse)
    return conv_ref(x, weight, bias, silu, reverse)
