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
                      activation: Optional[str] = None) -> torch.Tensor:
    """Pure-PyTorch depthwise causal convolution.

    Args:
        x (Tensor): (B, D, L).
        weight (Tensor): (D, K).
        bias (Tensor, optional): (D, ).
        activation (str, optional): None, 'silu' or 'swish'.

    Returns:
        Tensor: (B, D, L); output t only sees inputs 0..t.
    """
    if activation not in (None, 'silu', 'swish'):
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    dim, width = weight.shape
    seqlen = x.shape[-1]
    out = F.conv1d(x, weight.unsqueeze(1).to(x.dtype),
                   None if bias is None else bias.to(x.dtype),
                   padding=width - 1, groups=dim)[..., :seqlen]
    return F.silu(out) if activation is not None else out


def causal_conv1d(x: torch.Tensor,
                  weight: torch.Tensor,
                  bias: Optional[torch.Tensor] = None,
                  activation: Optional[str] = None,
                  kernel: str = 'auto') -> torch.Tensor:
    """Dispatch to the fused kernel (CUDA) or :func:`causal_conv1d_ref`."""
    fn = get_cuda_kernel('causal_conv1d_fn', kernel, x.is_cuda)
    if fn is not None:
        return fn(x.contiguous(), weight.contiguous(), bias, activation=activation)
    return causal_conv1d_ref(x, weight, bias, activation)
