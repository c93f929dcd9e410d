"""The interaction modules of the ViT-Adapter-style adapter (official parameter names).

``x``: the (B, h * w, D) stride-16 backbone patch tokens; ``c``: the
(B, sum(h_l * w_l), D) spatial prior levels at strides 8, 16 and 32, concatenated.
The interaction block gets a callable that runs the backbone's blocks of its group.
"""
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath

from .arg_checks import (check_bool, check_int, check_map_norm_cfg, check_rate, check_real,
                         check_width_ratio)
from .bimamba import mark_no_weight_decay
from .deform_attn import MSDeformAttn, Shapes


class SpatialPriorModule(nn.Module):
    """Conv stem giving the spatial prior at strides 4, 8, 16 and 32.

    ``stem``: three 3x3 conv-norm-ReLU (the first stride 2) and a 3x3 s2 max pool;
    ``conv2``..``conv4``: 3x3 s2 conv-norm-ReLU; ``fc1``..``fc4``: 1x1 projections of
    the ``inplanes * (1, 2, 4, 4)`` channels to ``embed_dims``.

    Args:
        in_channels (int): image channels. Defaults to 3.
        inplanes (int): stem width. Defaults to 64.
        embed_dims (int): output width D. Defaults to 384.
        norm_cfg (dict): norm after every conv. Defaults to ``dict(type='BN')``.
    """

    def __init__(self, in_channels: int = 3, inplanes: int = 64, embed_dims: int = 384,
                 norm_cfg: dict = dict(type='BN', requires_grad=True)):
        super().__init__()
        check_int('in_channels', in_channels, 1)
        check_int('conv_inplane', inplanes, 1, hint='the stem width')
        check_int('embed_dims', embed_dims, 1)
        check_map_norm_cfg('adapter_norm_cfg', norm_cfg)

        def conv_norm_act(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                    build_norm_layer(norm_cfg, cout)[1], nn.ReLU(inplace=True)]

        self.stem = nn.Sequential(
            *conv_norm_act(in_channels, inplanes, 2), *conv_norm_act(inplanes, inplanes, 1),
            *conv_norm_act(inplanes, inplanes, 1), nn.MaxPool2d(3, 2, 1))
        widths = [inplanes * m for m in (1, 2, 4, 4)]
        for i in range(2, 5):
            self.add_module(f'conv{i}', nn.Sequential(
                *conv_norm_act(widths[i - 2], widths[i - 1], 2)))
        for i, width in enumerate(widths, 1):
            self.add_module(f'fc{i}', nn.Conv2d(width, embed_dims, 1))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """x: (B, 3, H, W), H and W multiples of 32 -> four (B, D, H/s, W/s) maps."""
        feats = [self.stem(x)]
        for conv in (self.conv2, self.conv3, self.conv4):
            feats.append(conv(feats[-1]))
        return [getattr(self, f'fc{i}')(f) for i, f in enumerate(feats, 1)]


class TokenUpsample2x(nn.ConvTranspose2d):
    """``ConvTranspose2d(C, C, 2, 2)`` (same parameters and keys) that reads a
    token-major (B, h * w, C) sequence: its outputs do not overlap, so it is one matmul
    with the (C, C * 4) weight (no slow CPU transposed conv, no input transpose).

    Args:
        channels (int): C.
    """

    def __init__(self, channels: int):
        check_int('channels', channels, 1)
        super().__init__(channels, channels, 2, 2)

    def forward_tokens(self, tokens: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        """tokens: (B, h * w, C) in row-major order -> (B, C, 2h, 2w)."""
        B, _, C = tokens.shape
        h, w = hw
        y = tokens @ self.weight.reshape(C, -1).to(tokens.dtype)  # (B, hw, C_out * 4)
        y = y.reshape(B, h, w, self.out_channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
        y = y.reshape(B, self.out_channels, 2 * h, 2 * w)
        return y + self.bias.to(y.dtype)[None, :, None, None]


class MultiLevelDWConv(nn.Module):
    """One 3x3 depthwise conv applied to each level of a multi-level token set.

    Args:
        channels (int): width C.
    """

    def __init__(self, channels: int):
        super().__init__()
        check_int('channels', channels, 1)
        self.dwconv = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels)

    def forward(self, x: torch.Tensor, shapes: Shapes) -> torch.Tensor:
        """x: (B, sum(h * w), C), levels in order -> same shape."""
        B, _, C = x.shape
        outs = []
        for part, (h, w) in zip(x.split([h * w for h, w in shapes], dim=1), shapes):
            part = part.transpose(1, 2).reshape(B, C, h, w)
            outs.append(self.dwconv(part).flatten(2).transpose(1, 2))
        return torch.cat(outs, dim=1)


class ConvFFN(nn.Module):
    """``fc2(GELU(dwconv(fc1(x))))`` with the depthwise conv per level.

    Args:
        embed_dims (int): input/output width.
        hidden_dims (int): hidden width.
    """

    def __init__(self, embed_dims: int, hidden_dims: int):
        super().__init__()
        check_int('embed_dims', embed_dims, 1)
        check_int('hidden_dims', hidden_dims, 1,
                  hint='int(embed_dims * cffn_ratio) in the extractors')
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.dwconv = MultiLevelDWConv(hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x: torch.Tensor, shapes: Shapes) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), shapes)))


def _adapter_norm(embed_dims: int) -> nn.LayerNorm:
    return mark_no_weight_decay(nn.LayerNorm(embed_dims, eps=1e-6))


class _CrossAttention(nn.Module):
    """``MSDA(LN(query), LN(feat))`` with optional gradient checkpointing: the part
    shared by :class:`Injector` and :class:`Extractor` (same arguments)."""

    def __init__(self, embed_dims: int, num_heads: int, n_points: int, n_levels: int,
                 deform_ratio: float, with_cp: bool):
        super().__init__()
        self.with_cp = check_bool('with_cp', with_cp)
        self.query_norm = _adapter_norm(embed_dims)
        self.feat_norm = _adapter_norm(embed_dims)
        self.attn = MSDeformAttn(embed_dims, num_heads, n_levels, n_points, deform_ratio)

    def cross_attend(self, query, feat, deform_inputs, identity=None) -> torch.Tensor:
        return self.attn(self.query_norm(query), self.feat_norm(feat), deform_inputs,
                         identity=identity).to(query.dtype)

    def _checkpointed(self, fn: Callable, *args):
        if self.with_cp and self.training and any(
                isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return cp.checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)


class Injector(_CrossAttention):
    """Spatial prior -> backbone tokens: ``x + gamma * MSDA(LN(x), LN(c))``.

    Args:
        embed_dims (int): width D.
        num_heads (int): deformable attention heads.
        n_points (int): sampling points.
        n_levels (int): levels of ``c``. Defaults to 3.
        deform_ratio (float): value width ratio. Defaults to 1.0.
        init_values (float): initial ``gamma``. Defaults to 0.
        with_cp (bool): gradient checkpointing. Defaults to False.
    """

    def __init__(self, embed_dims: int, num_heads: int, n_points: int, n_levels: int = 3,
                 deform_ratio: float = 1.0, init_values: float = 0.0,
                 with_cp: bool = False):
        super().__init__(embed_dims, num_heads, n_points, n_levels, deform_ratio, with_cp)
        check_real('init_values', init_values, hint="the injector's initial gamma")
        self.gamma = mark_no_weight_decay(
            nn.Parameter(torch.full((embed_dims, ), float(init_values))))

    def _inner(self, query, feat, *deform_inputs):
        return query + self.gamma * self.cross_attend(query, feat, deform_inputs)

    def forward(self, query: torch.Tensor, feat: torch.Tensor,
                deform_inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """query: (B, h * w, D) backbone tokens, feat: (B, Lc, D) -> like query."""
        return self._checkpointed(self._inner, query, feat, *deform_inputs)


class Extractor(_CrossAttention):
    """Backbone tokens -> spatial prior: ``c + MSDA(LN(c), LN(x))``, then
    ``c + drop_path(ConvFFN(LN(c)))`` with ``with_cffn``.

    Args:
        embed_dims, num_heads, n_points, deform_ratio, with_cp: see :class:`Injector`.
        n_levels (int): levels of ``x``. Defaults to 1.
        with_cffn (bool): the ConvFFN branch. Defaults to True.
        cffn_ratio (float): ConvFFN hidden width / D. Defaults to 0.25.
        drop_path (float): drop path of the ConvFFN branch. Defaults to 0.
    """

    def __init__(self, embed_dims: int, num_heads: int, n_points: int, n_levels: int = 1,
                 deform_ratio: float = 1.0, with_cffn: bool = True,
                 cffn_ratio: float = 0.25, drop_path: float = 0.0, with_cp: bool = False):
        super().__init__(embed_dims, num_heads, n_points, n_levels, deform_ratio, with_cp)
        self.with_cffn = check_bool('with_cffn', with_cffn)
        check_rate('drop_path', drop_path, hint="the ConvFFN branch's drop path rate, "
                   'drop_path_rate of the backbone')
        if with_cffn:
            self.ffn = ConvFFN(embed_dims, check_width_ratio(
                'cffn_ratio', cffn_ratio, embed_dims, width='ConvFFN hidden width',
                empty='a ConvFFN without hidden channels', fix=' or with_cffn=False'))
            self.ffn_norm = _adapter_norm(embed_dims)
            self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _inner(self, query, feat, shapes, *deform_inputs):
        query = self.cross_attend(query, feat, deform_inputs, identity=query)
        if self.with_cffn:
            query = query + self.drop_path(self.ffn(self.ffn_norm(query), shapes))
        return query

    def forward(self, query: torch.Tensor, feat: torch.Tensor,
                deform_inputs: Sequence[torch.Tensor], shapes: Shapes) -> torch.Tensor:
        """query: (B, Lc, D) spatial tokens with level ``shapes``, feat: (B, h * w, D)."""
        return self._checkpointed(lambda q, f, *d: self._inner(q, f, shapes, *d),
                                  query, feat, *deform_inputs)


class InteractionBlock(nn.Module):
    """Injector, a group of backbone blocks, extractor (and two extra extractors).

    Args:
        embed_dims, num_heads, n_points, deform_ratio, init_values: see
            :class:`Injector`.
        with_cffn, cffn_ratio, drop_path: see :class:`Extractor`.
        extra_extractor (bool): two more extractors after the first.
            Defaults to False.
        with_cp (bool): gradient checkpointing of injector and extractors.
            Defaults to False.
    """

    def __init__(self, embed_dims: int, num_heads: int, n_points: int,
                 deform_ratio: float, init_values: float, with_cffn: bool,
                 cffn_ratio: float, drop_path: float, extra_extractor: bool = False,
                 with_cp: bool = False):
        super().__init__()
        check_bool('extra_extractor', extra_extractor)
        self.injector = Injector(embed_dims, num_heads, n_points, 3, deform_ratio,
                                 init_values, with_cp)
        ext = dict(embed_dims=embed_dims, num_heads=num_heads, n_points=n_points,
                   n_levels=1, deform_ratio=deform_ratio, with_cffn=with_cffn,
                   cffn_ratio=cffn_ratio, drop_path=drop_path, with_cp=with_cp)
        self.extractor = Extractor(**ext)
        self.extra_extractors = nn.ModuleList(
            [Extractor(**ext) for _ in range(2)]) if extra_extractor else None

    def forward(self, x: torch.Tensor, r: Optional[torch.Tensor], c: torch.Tensor,
                run_blocks: Callable, inject_inputs: Sequence[torch.Tensor],
                extract_inputs: Sequence[torch.Tensor], c_shapes: Shapes):
        """Inject, run the blocks, extract; returns ``(x, r, c)``.

        Args:
            x (Tensor): (B, h * w, D) backbone hidden state (mixer output).
            r (Tensor, optional): (B, h * w, D) residual stream (None before block 0).
            c (Tensor): (B, Lc, D) spatial tokens.
            run_blocks (callable): ``(x, r) -> (x, r)``, this group's blocks.
            inject_inputs, extract_inputs: :class:`DeformInputs` of both directions.
            c_shapes (Sequence[tuple]): (h, w) of the levels of ``c``.
        """
        x = self.injector(x, c, inject_inputs)
        x, r = run_blocks(x, r)
        c = self.extractor(c, x, extract_inputs, c_shapes)
        for extractor in self.extra_extractors or ():
            c = extractor(c, x, extract_inputs, c_shapes)
        return x, r, c
