"""Multi-scale deformable attention of the adapter (mmcv's, batch first, with this
package's CPU sampling kernel and a reported fallback on CUDA without mmcv's ops) and
its inputs (:class:`DeformInputs`)."""
import os
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.ops import MultiScaleDeformableAttention
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

from ...ops.kernels import autocast_off, report_fallback
from ...ops.ms_deform_attn import cpu_sampling, has_ms_deform_attn_mmcv_cuda
from ...errors import ArgumentValueError
from .arg_checks import check_int, check_real

Shapes = Sequence[Tuple[int, int]]


def _check_shapes(shapes: Shapes) -> None:
    """Every level an (h, w) pair of sizes >= 1 (cheap: a few levels of ints)."""
    if len(shapes) == 0 or any(len(s) != 2 or s[0] < 1 or s[1] < 1 for s in shapes):
        raise ValueError(f'level shapes must be a non-empty list of (h, w) pairs with '
                         f'h, w >= 1, got {list(shapes)}')


class DeformInputs(tuple):
    """(reference_points, spatial_shapes, level_start_index) of one attention direction:
    the pixel centres of the query levels as (x, y) in [0, 1] (1, sum(h * w), 1, 2), levels
    concatenated row-major (the level axis broadcasts over the value levels); the
    value levels' (levels, 2) shapes and (levels, ) start indices.

    Args:
        query_shapes (Sequence[tuple]): (h, w) of the query levels.
        value_shapes (Sequence[tuple]): (h, w) of the value levels.
    """

    def __new__(cls, query_shapes: Shapes, value_shapes: Shapes, device=None):
        _check_shapes(query_shapes)
        _check_shapes(value_shapes)
        points = []
        for h, w in query_shapes:
            ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
            xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
            ref_y, ref_x = torch.meshgrid(ys, xs, indexing='ij')
            points.append(torch.stack([ref_x.reshape(-1), ref_y.reshape(-1)], -1))
        spatial = torch.as_tensor([tuple(s) for s in value_shapes], dtype=torch.long,
                                  device=device)
        sizes = spatial.prod(1)
        start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        return super().__new__(cls, (torch.cat(points, 0)[None, :, None], spatial, start))


class MSDeformAttn(MultiScaleDeformableAttention):
    """mmcv's multi-scale deformable attention as the adapter's formula needs it.

    ``output_proj(sample(value_proj(value)))`` (``value_proj`` to ``embed_dims * ratio``
    channels) in the weights' dtype (float32 also under autocast), no dropout,
    ``identity`` added only when given. CPU sampling uses the compiled kernel
    (:func:`~mmplugin_shufflemamba.ops.ms_deform_attn_cpu`) when built (a missing one is
    reported once, :func:`~mmplugin_shufflemamba.ops.ms_deform_attn.cpu_sampling`), unless
    :attr:`cpu_kernel` or ``SHUFFLEMAMBA_MSDA_CPU`` (read at every call) is 'torch'
    (mmcv's ``multi_scale_deformable_attn_pytorch``).

    Args:
        embed_dims (int): query and output width D.
        num_heads (int): attention heads; must divide ``int(D * ratio)``.
        num_levels (int): value levels.
        num_points (int): sampling points per head and level.
        ratio (float): value projection width / D.
    """

    def __init__(self, embed_dims: int, num_heads: int, num_levels: int,
                 num_points: int, ratio: float = 1.0):
        check_int('embed_dims', embed_dims, 1)
        check_int('deform_num_heads', num_heads, 1)
        check_int('num_levels', num_levels, 1)
        check_int('n_points', num_points, 1, hint='sampling points per head and level')
        check_real('deform_ratio', ratio, 0.0, low_open=True,
                   hint='the value projection width / embed_dims')
        value_dims = int(embed_dims * ratio)
        if value_dims <= 0 or value_dims % num_heads:
            raise ArgumentValueError(
                f'deform_num_heads={num_heads} must divide the deformable attention\'s '
                f'value width int(embed_dims * deform_ratio) = int({embed_dims} * '
                f'{ratio}) = {value_dims}; choose another deform_num_heads or '
                'deform_ratio.')
        super().__init__(embed_dims=embed_dims, num_heads=num_heads,
                         num_levels=num_levels, num_points=num_points, dropout=0.0,
                         batch_first=True, value_proj_ratio=ratio)
        self.dropout = nn.Identity()

    #: CPU sampling, class-wide or per instance: 'auto' (the compiled kernel when
    #: built) or 'torch'; None: ``SHUFFLEMAMBA_MSDA_CPU`` (default 'auto').
    cpu_kernel: Optional[str] = None

    def forward(self, query: torch.Tensor, value: torch.Tensor,
                deform_inputs: Sequence[torch.Tensor],
                identity: Optional[torch.Tensor] = None) -> torch.Tensor:
        """query: (B, Lq, D), value: (B, Lv, D) -> (B, Lq, D) (+ identity)."""
        reference_points, spatial_shapes, level_start_index = deform_inputs
        dtype = self.value_proj.weight.dtype
        query, value, reference_points = (t.to(dtype) for t in (query, value, reference_points))
        identity = None if identity is None else identity.to(dtype)
        with autocast_off(query.device):
            sample = self._own_sampling(value)
            if sample is None:
                return super().forward(
                    query, value=value,
                    identity=query.new_zeros(()) if identity is None else identity,
                    reference_points=reference_points, spatial_shapes=spatial_shapes,
                    level_start_index=level_start_index)
            out = self._forward_sampled(query, value, reference_points, spatial_shapes, sample)
            return out if identity is None else out + identity

    def _own_sampling(self, value: torch.Tensor) -> Optional[Callable]:
        """The sampling function this module runs itself, or None for mmcv's forward:
        on the CPU :func:`cpu_sampling` of the chosen kernel; on CUDA without mmcv's
        CUDA ops, mmcv's PyTorch sampling. A missing kernel is reported once (an error
        under ``SHUFFLEMAMBA_STRICT_KERNELS=1``)."""
        if value.device.type == 'cuda':
            ok, err = has_ms_deform_attn_mmcv_cuda(value.device)
            if ok:
                return None
            report_fallback('ms_deform_attn_cuda', err)
            return multi_scale_deformable_attn_pytorch
        if value.device.type != 'cpu':
            return None
        choice = self.cpu_kernel or os.environ.get('SHUFFLEMAMBA_MSDA_CPU') or 'auto'
        return cpu_sampling(choice, 'MSDeformAttn.cpu_kernel / SHUFFLEMAMBA_MSDA_CPU')

    def _forward_sampled(self, query: torch.Tensor, value: torch.Tensor,
                         reference_points: torch.Tensor, spatial_shapes: torch.Tensor,
                         sample: Callable) -> torch.Tensor:
        """mmcv's forward (batch first, no query_pos, no padding mask, no identity) with
        the sampling function ``sample(value, shapes, locations, weights)``."""
        bs, num_query, _ = query.shape
        num_value = value.shape[1]
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(value).view(bs, num_value, heads, -1)
        offsets = self.sampling_offsets(query).view(bs, num_query, heads, levels, points, 2)
        weights = self.attention_weights(query).view(bs, num_query, heads, levels * points)
        weights = weights.softmax(-1).view(bs, num_query, heads, levels, points)
        if reference_points.shape[-1] == 2:
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
            locations = reference_points[:, :, None, :, None, :] \
                + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            locations = reference_points[:, :, None, :, None, :2] \
                + offsets / points * reference_points[:, :, None, :, None, 2:] * 0.5
        else:
            raise ValueError('Last dim of reference_points must be 2 or 4, got '
                             f'{reference_points.shape[-1]}.')
        out = sample(value, spatial_shapes, locations, weights)
        return self.dropout(self.output_proj(out))
