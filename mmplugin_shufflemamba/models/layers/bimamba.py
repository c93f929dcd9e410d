"""The bidirectional Vim mixer ("bimamba") and its pre-norm residual block."""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath

from ...ops import causal_conv1d, check_kernel_backend, selective_scan


def build_token_norm(norm_cfg: dict, num_features: int) -> nn.Module:
    """Build a norm over the last axis: ``type`` 'LN' (LayerNorm) or 'RMSNorm'."""
    cfg = dict(norm_cfg)
    norm_type = cfg.pop('type', 'LN')
    eps = cfg.pop('eps', 1e-5)
    if cfg:
        raise ValueError(f'unsupported norm_cfg keys {sorted(cfg)} in {norm_cfg}')
    if norm_type in ('LN', 'LayerNorm'):
        return nn.LayerNorm(num_features, eps=eps)
    if norm_type == 'RMSNorm':  # weight only, as in the Mamba-Reg checkpoints
        return nn.RMSNorm(num_features, eps=eps)
    raise ValueError(f"norm_cfg type must be 'LN' or 'RMSNorm', got {norm_type!r}")


class BiMambaMixer(nn.Module):
    """Bidirectional Mamba mixer of Vision Mamba (Vim ``bimamba`` v2).

    ``in_proj`` maps to x and gate z; a forward and a backward (flipped sequence)
    branch each run causal depthwise conv + SiLU, input-dependent (dt, B, C)
    projections and a selective scan gated by SiLU(z); the two are averaged and
    projected back by ``out_proj``. Parameter names follow the official checkpoints.

    Args:
        embed_dims (int): model width D.
        d_state (int): SSM state size N. Defaults to 16.
        d_conv (int): causal conv width. Defaults to 4.
        expand (int): d_inner = expand * D. Defaults to 2.
        dt_rank (int | str): 'auto' = ceil(D / 16).
        dt_min, dt_max, dt_init_floor (float): dt bias initialisation range.
        kernel (str): 'auto' | 'cuda' | 'torch', see :mod:`mmplugin_shufflemamba.ops`.
    """

    def __init__(self,
                 embed_dims: int,
                 d_state: int = 16,
                 d_conv: int = 4,
                 expand: int = 2,
                 dt_rank='auto',
                 dt_min: float = 0.001,
                 dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4,
                 kernel: str = 'auto'):
        super().__init__()
        self.embed_dims = embed_dims
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = int(expand * embed_dims)
        self.dt_rank = math.ceil(embed_dims / 16) if dt_rank == 'auto' else int(dt_rank)
        self.kernel = check_kernel_backend(kernel)

        self.in_proj = nn.Linear(embed_dims, self.d_inner * 2, bias=False)
        self.out_proj = nn.Linear(self.d_inner, embed_dims, bias=False)
        for suffix in ('', '_b'):
            conv = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv,
                             groups=self.d_inner, padding=d_conv - 1, bias=True)
            x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
            dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
            self._init_dt_proj(dt_proj, dt_min, dt_max, dt_init_floor)
            A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
            setattr(self, f'conv1d{suffix}', conv)
            setattr(self, f'x_proj{suffix}', x_proj)
            setattr(self, f'dt_proj{suffix}', dt_proj)
            a_name = 'A_log' if suffix == '' else 'A_b_log'
            setattr(self, a_name, nn.Parameter(torch.log(A)))
            setattr(self, f'D{suffix}', nn.Parameter(torch.ones(self.d_inner)))

    def _init_dt_proj(self, dt_proj: nn.Linear, dt_min: float, dt_max: float,
                      floor: float) -> None:
        std = self.dt_rank**-0.5
        nn.init.uniform_(dt_proj.weight, -std, std)
        dt = torch.exp(
            torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) +
            math.log(dt_min)).clamp(min=floor)
        inv_dt = dt + torch.log(-torch.expm1(-dt))  # inverse of softplus
        with torch.no_grad():
            dt_proj.bias.copy_(inv_dt)
        dt_proj.bias._no_reinit = True

    def _ssm(self, x: torch.Tensor, z: torch.Tensor, suffix: str,
             reverse: bool = False) -> torch.Tensor:
        """One direction. x, z: (B, d_inner, L) -> (B, d_inner, L).

        ``reverse=True`` is the backward branch: the Vim mixer runs it on the flipped
        sequence and flips the result back, which equals an anti-causal conv and a
        reverse-time scan on the original order (computed without flipped copies).
        """
        conv = getattr(self, f'conv1d{suffix}')
        x_proj = getattr(self, f'x_proj{suffix}')
        dt_proj = getattr(self, f'dt_proj{suffix}')
        A_log = self.A_log if suffix == '' else self.A_b_log
        D = getattr(self, f'D{suffix}')
        x = causal_conv1d(x, conv.weight.squeeze(1), conv.bias, activation='silu',
                          reverse=reverse, kernel=self.kernel)
        # Projections on the token-major (B, L, .) memory behind the (B, d_inner, L)
        # views: plain matmuls, and dt, B, C come out time-major as the scan reads them.
        # The dt bias is added (and softplus applied) inside the scan.
        x_dbl = F.linear(x.transpose(1, 2), x_proj.weight)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, dt_proj.weight).transpose(1, 2)
        A = -torch.exp(A_log.float())
        return selective_scan(
            x, delta, A, B.transpose(1, 2), C.transpose(1, 2), D.float(), z=z,
            delta_bias=dt_proj.bias.float(), delta_softplus=True, reverse=reverse,
            kernel=self.kernel)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, L, D) -> (B, L, D)."""
        # x and z are (B, d_inner, L) views of token-major (B, L, d_inner) memory: the
        # CPU kernels read that layout directly and keep it, so every projection stays
        # a plain matmul with no layout copies. in_proj runs as two matmuls, not one and
        # a split, so that dx and dz reach the weight and the input without a concat.
        w_x, w_z = self.in_proj.weight.chunk(2, dim=0)
        x = F.linear(hidden, w_x).transpose(1, 2)
        z = F.linear(hidden, w_z).transpose(1, 2)
        y_fwd = self._ssm(x, z, '')
        y_bwd = self._ssm(x, z, '_b', reverse=True)
        # out_proj((y_fwd + y_bwd) / 2): the exact power-of-two 1/2 is applied to the
        # (narrower) output in place, not to y, and no scaled weight copy is kept for
        # the backward.
        y = (y_fwd + y_bwd).to(hidden.dtype).transpose(1, 2)
        return self.out_proj(y).mul_(0.5)


class MambaBlock(nn.Module):
    """Vim block: ``residual += drop_path(hidden); hidden = mixer(norm(residual))``.

    Args:
        embed_dims (int): width D.
        mixer_cfg (dict): kwargs of :class:`BiMambaMixer`.
        norm_cfg (dict): 'LN' or 'RMSNorm' (eps 1e-5).
        drop_path (float): drop path rate applied to the incoming hidden state.
        residual_in_fp32 (bool): keep the residual stream in float32. Defaults to True.
    """

    def __init__(self,
                 embed_dims: int,
                 mixer_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='LN', eps=1e-5),
                 drop_path: float = 0.0,
                 residual_in_fp32: bool = True):
        super().__init__()
        self.norm = build_token_norm(norm_cfg, embed_dims)
        self.mixer = BiMambaMixer(embed_dims, **(mixer_cfg or {}))
        self.drop_path = DropPath(drop_path)
        self.residual_in_fp32 = residual_in_fp32

    def forward(self, hidden: torch.Tensor,
                residual: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """hidden, residual: (B, L, D) (residual None for the first block)."""
        residual = hidden if residual is None else residual + self.drop_path(hidden)
        hidden = self.norm(residual.to(self.norm.weight.dtype))
        if self.residual_in_fp32:
            residual = residual.float()
        return self.mixer(hidden), residual
