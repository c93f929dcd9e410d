"""Depthwise causal 1D convolution, as used by the Mamba mixer."""
from typing import Optional

import torch
import torch.nn.functional as F

from .kernels import get_cuda_kernel


def has_causal_conv1d_cuda() -> bool:
    """Whether the fused causal-conv1d CUDA kernel can be imported."""
    from .kernels import _try_import
    return _try_import('causal_conv1d_fn')[0] is not None


def causal_conv1d_ref(x: torch.Tensor,
                      weight: torch.Tensor,
                      bias: Optional[torch.Tensor] = None,
                      activation: Optional[str] = None,
                      reverse: bool = False) -> torch.Tensor:
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
    if activation not in (None, 'silu', 'swish'):
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    dim, width = weight.shape
    seqlen = x.shape[-1]
    w = weight.flip(-1) if reverse else weight
    out = F.conv1d(x, w.unsqueeze(1).to(x.dtype), None if bias is None else bias.to(x.dtype),
                   padding=width - 1, groups=dim)
    out = out[..., width - 1:] if reverse else out[..., :seqlen]
    return F.silu(out) if activation is not None else out


def causal_conv1d(x: torch.Tensor,
                  weight: torch.Tensor,
                  bias: Optional[torch.Tensor] = None,
                  activation: Optional[str] = None,
                  reverse: bool = False,
                  kernel: str = 'auto') -> torch.Tensor:
    """Dispatch to the fused kernel (CUDA) or :func:`causal_conv1d_ref`."""
    fn = get_cuda_kernel('causal_conv1d_fn', kernel, x.is_cuda)
    if fn is not None:
        if reverse:
            return fn(x.flip(-1).contiguous(), weight.contiguous(), bias,
                      activation=activation).flip(-1)
        return fn(x.contiguous(), weight.contiguous(), bias, activation=activation)
    return causal_conv1d_ref(x, weight, bias, activation, reverse)
