"""The bidirectional Vim mixer ("bimamba") and its pre-norm residual block."""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmcv.cnn.bricks import DropPath

from ...ops import check_kernel_backend
from ...ops.bimamba_inner import bimamba_inner_fn
from ...errors import ArgumentValueError
from .arg_checks import check_bool, check_int, check_rate, check_real


def mark_no_weight_decay(obj):
    """Mark a parameter, or every parameter of a module, ``_no_weight_decay = True`` (as
    mamba-ssm marks ``A_log`` and ``D``): weight decay 0 in this package's optimizer
    wrapper constructors. Returns ``obj``."""
    for param in [obj] if isinstance(obj, nn.Parameter) else obj.parameters():
        param._no_weight_decay = True
    return obj


def build_token_norm(norm_cfg: dict, num_features: int) -> nn.Module:
    """Build a norm over the last axis: ``type`` 'LN' (LayerNorm) or 'RMSNorm' (its
    parameters marked ``_no_weight_decay``)."""
    cfg = dict(norm_cfg)
    norm_type = cfg.pop('type', 'LN')
    eps = cfg.pop('eps', 1e-5)
    if cfg:
        raise ArgumentValueError(f'unsupported norm_cfg keys {sorted(cfg)} in {norm_cfg}: it takes '
                                 "'type' and 'eps' only")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ArgumentValueError(f'norm_cfg eps must be a number > 0, got {eps!r} in {norm_cfg}')
    if norm_type in ('LN', 'LayerNorm'):
        return mark_no_weight_decay(nn.LayerNorm(num_features, eps=eps))
    if norm_type == 'RMSNorm':  # weight only, as in the Mamba-Reg checkpoints
        return mark_no_weight_decay(nn.RMSNorm(num_features, eps=eps))
    raise ArgumentValueError(f"norm_cfg type must be 'LN' or 'RMSNorm', got {norm_type!r}")


class BiMambaMixer(nn.Module):
    """Bidirectional Mamba mixer of Vision Mamba (Vim ``bimamba`` v2).

    ``in_proj`` gives x and gate z; a forward and a backward (flipped) branch each run
    causal depthwise conv + SiLU, (dt, B, C) projections and a selective scan gated by
    SiLU(z); their average goes through ``out_proj``. Official parameter names.

    Args:
        embed_dims (int): model width D.
        d_state (int): SSM state size N. Defaults to 16.
        d_conv (int): causal conv width. Defaults to 4.
        expand (int): d_inner = expand * D. Defaults to 2.
        dt_rank (int | str): 'auto' = ceil(D / 16).
        dt_min, dt_max, dt_init_floor (float): dt bias initialisation range.
        kernel (str): 'auto' | 'cuda' | 'torch', see :mod:`mmplugin_shufflemamba.ops`.
    """

    def __init__(self, embed_dims: int, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, dt_rank='auto', dt_min: float = 0.001,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, kernel: str = 'auto'):
        super().__init__()
        self.embed_dims = check_int('embed_dims', embed_dims, 1)
        self.d_state = check_int('d_state', d_state, 1)
        self.d_conv = check_int('d_conv', d_conv, 1)
        expand = check_real('expand', expand, 0.0, low_open=True)
        self.d_inner = int(expand * embed_dims)
        if self.d_inner < 1:
            raise ArgumentValueError(f'expand * embed_dims must be >= 1, got {expand} * '
                                     f'{embed_dims}')
        if dt_rank == 'auto':
            self.dt_rank = math.ceil(embed_dims / 16)
        else:
            self.dt_rank = check_int('dt_rank', dt_rank, 1, hint="or 'auto'")
        dt_min = check_real('dt_min', dt_min, 0.0, low_open=True)
        dt_max = check_real('dt_max', dt_max, dt_min,
                            hint=f'dt_min <= dt_max; dt_min is {dt_min:g}')
        dt_init_floor = check_real('dt_init_floor', dt_init_floor, 0.0, low_open=True)
        self.kernel = check_kernel_backend(kernel)

        self.in_proj = nn.Linear(embed_dims, self.d_inner * 2, bias=False)
        self.out_proj = nn.Linear(self.d_inner, embed_dims, bias=False)
        for sfx in ('', '_b'):
            setattr(self, f'conv1d{sfx}', nn.Conv1d(
                self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                padding=d_conv - 1, bias=True))
            setattr(self, f'x_proj{sfx}',
                    nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False))
            dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
            self._init_dt_proj(dt_proj, dt_min, dt_max, dt_init_floor)
            setattr(self, f'dt_proj{sfx}', dt_proj)
            A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
            setattr(self, 'A_b_log' if sfx else 'A_log',
                    mark_no_weight_decay(nn.Parameter(torch.log(A))))
            setattr(self, f'D{sfx}',
                    mark_no_weight_decay(nn.Parameter(torch.ones(self.d_inner))))

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

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, L, D) -> (B, L, D), one autograd function from in_proj to
        out_proj (:class:`~mmplugin_shufflemamba.ops.bimamba_inner.BiMambaInnerFn`)."""
        return bimamba_inner_fn(self, hidden, self.kernel)


class MambaBlock(nn.Module):
    """Vim block: ``residual += drop_path(hidden); hidden = mixer(norm(residual))``.

    Args:
        embed_dims (int): width D.
        mixer_cfg (dict): kwargs of :class:`BiMambaMixer`.
        norm_cfg (dict): 'LN' or 'RMSNorm' (eps 1e-5).
        drop_path (float): drop path rate applied to the incoming hidden state.
        residual_in_fp32 (bool): keep the residual stream in float32 at least (float64
            stays float64). Defaults to True.
    """

    def __init__(self, embed_dims: int, mixer_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='LN', eps=1e-5), drop_path: float = 0.0,
                 residual_in_fp32: bool = True):
        super().__init__()
        self.norm = build_token_norm(norm_cfg, embed_dims)
        self.mixer = BiMambaMixer(embed_dims, **(mixer_cfg or {}))
        self.drop_path = DropPath(check_rate('drop_path', drop_path))
        self.residual_in_fp32 = check_bool('residual_in_fp32', residual_in_fp32)

    def forward(self, hidden: torch.Tensor,
                residual: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """hidden, residual: (B, L, D) (residual None for the first block)."""
        residual = hidden if residual is None else residual + self.drop_path(hidden)
        hidden = self.norm(residual.to(self.norm.weight.dtype))
        if self.residual_in_fp32:
            residual = residual.to(torch.promote_types(residual.dtype, torch.float32))
        return self.mixer(hidden), residual
