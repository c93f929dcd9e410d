"""ShuffleMambaAdapter: a ViT-Adapter-style multi-scale adapter around ShuffleMamba."""
import math
from functools import partial
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model.weight_init import constant_init, normal_init, trunc_normal_init
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers.adapter_modules import InteractionBlock, SpatialPriorModule, TokenUpsample2x
from ..layers.deform_attn import DeformInputs, MSDeformAttn
from ...errors import ArgumentTypeError, ArgumentValueError
from ..layers.arg_checks import (check_bool, check_int, check_real, check_width_ratio,
                                 is_int)
from ..layers.bimamba import mark_no_weight_decay
from ..layers.token_layout import to_map
from .encoder import ShuffleMambaEncoder
from .shuffle_mamba_checks import reject_args


@MODELS.register_module()
class ShuffleMambaAdapter(ShuffleMambaEncoder):
    """ShuffleMamba with a ViT-Adapter-style multi-scale adapter: four normed
    ``(B, D, ceil(H/s), ceil(W/s))`` maps, s = 4, 8, 16, 32 (docs/adapter.md).

    The blocks run on the stride-16 patch tokens (no extra tokens, no final norm) in
    ``interaction_indexes`` groups, each between an injector
    ``x = x + gamma * MSDA(LN(x), LN(c))`` and an extractor ``c = c + MSDA(LN(c),
    LN(x))``, ``c = c + drop_path(ConvFFN(LN(c)))`` over the spatial prior ``c``.

    Args:
        conv_inplane (int): spatial prior stem width. Defaults to 64.
        n_points (int): deformable attention sampling points. Defaults to 4.
        deform_num_heads (int, optional): deformable attention heads; None: 12 below
            width 1024, else 16 (official). Defaults to None.
        init_values (float): initial injector gamma. Defaults to 0.
        interaction_indexes (Sequence[Sequence[int]], optional): consecutive inclusive
            ``[first, last]`` block groups. Defaults to 4 equal groups.
        with_cffn (bool): ConvFFN in the extractors. Defaults to True.
        cffn_ratio (float): ConvFFN hidden width / D. Defaults to 0.25.
        deform_ratio (float): deformable attention value width / D. Defaults to 0.5.
        add_backbone_feature (bool): add each group's tokens to its level (needs 4
            groups). Defaults to True.
        use_extra_extractor (bool): two extractors after the last group.
            Defaults to True.
        adapter_norm_cfg (dict): norm of the spatial prior and the outputs.
            Defaults to ``dict(type='SyncBN', requires_grad=True)``.
        **kwargs: see :class:`~.encoder.ShuffleMambaEncoder` (``patch_size`` 16;
            ``drop_path_rate`` also drops the ConvFFN branch; ``with_cp`` also
            checkpoints the injectors and extractors).
    """
    NOT_PRETRAINED = ('level_embed', 'spm', 'interactions', 'up', 'norm1', 'norm2',
                      'norm3', 'norm4')
    #: arguments of the dense backbone that a config moved to the adapter may carry
    DENSE_ONLY_ARGS = {
        'out_indices': 'the outputs are always the four adapter levels (strides 4, 8, '
                       '16, 32); choose the blocks with interaction_indexes',
        'out_type': 'the outputs are the adapter levels, not block outputs',
        'final_norm': 'the adapter has no final norm (each output level has its own '
                      'norm, adapter_norm_cfg)',
        'num_registers': 'the adapter runs on patch tokens only; register/cls tokens of '
                         'a checkpoint are dropped at load',
        'with_cls_token': 'the adapter runs on patch tokens only; the cls token of a '
                          'checkpoint is dropped at load',
        'out_cls': 'the adapter is a dense backbone without classification tokens',
        'cls_reduce': 'the adapter has no register tokens to reduce',
        'shuffle_cls': 'the adapter has no cls / register tokens',
        'tokens': 'the adapter runs on patch tokens only',
    }

    def __init__(self, conv_inplane: int = 64, n_points: int = 4,
                 deform_num_heads: Optional[int] = None, init_values: float = 0.0,
                 interaction_indexes: Optional[Sequence[Sequence[int]]] = None,
                 with_cffn: bool = True, cffn_ratio: float = 0.25,
                 deform_ratio: float = 0.5, add_backbone_feature: bool = True,
                 use_extra_extractor: bool = True,
                 adapter_norm_cfg: dict = dict(type='SyncBN', requires_grad=True),
                 **kwargs):
        reject_args(ShuffleMambaAdapter, kwargs, self.DENSE_ONLY_ARGS)
        super().__init__(final_norm=False, **kwargs)
        if self.patch_size != 16:
            raise ArgumentValueError(
                f'ShuffleMambaAdapter needs patch_size=16 (its levels are at strides 4, '
                f'8, 16 and 32 around the stride-16 tokens), got {self.patch_size}.')
        D = self.embed_dims
        if deform_num_heads is None:
            deform_num_heads = 16 if D >= 1024 else 12
        check_int('conv_inplane', conv_inplane, 1,
                  hint='the spatial prior stem width, 64 in every config')
        check_int('n_points', n_points, 1,
                  hint='deformable attention sampling points, 4 in every config')
        check_int('deform_num_heads', deform_num_heads, 1,
                  hint='None picks the official value for embed_dims')
        check_real('init_values', init_values,
                   hint="the injectors' initial gamma, 0 in every config")
        for name, value in (('with_cffn', with_cffn),
                            ('add_backbone_feature', add_backbone_feature),
                            ('use_extra_extractor', use_extra_extractor)):
            check_bool(name, value)
        check_width_ratio('deform_ratio', deform_ratio, D,
                          width='deformable attention value width',
                          empty='no value channels', fix=' (0.5 in every config)')
        check_width_ratio('cffn_ratio', cffn_ratio, D, width='ConvFFN hidden width',
                          empty='a ConvFFN without hidden channels',
                          fix=' (0.25 in every config) or with_cffn=False',
                          need_width=with_cffn)
        self.deform_num_heads = deform_num_heads
        self.interaction_indexes = self._check_interaction_indexes(
            interaction_indexes, add_backbone_feature)
        self.add_backbone_feature = add_backbone_feature
        self.init_values = init_values

        self.level_embed = mark_no_weight_decay(nn.Parameter(torch.zeros(3, D)))
        self.spm = SpatialPriorModule(self.in_channels, conv_inplane, D, adapter_norm_cfg)
        num_groups = len(self.interaction_indexes)
        self.interactions = nn.ModuleList([
            InteractionBlock(
                D, deform_num_heads, n_points, deform_ratio, init_values, with_cffn,
                cffn_ratio, self.drop_path_rate,
                extra_extractor=use_extra_extractor and i == num_groups - 1,
                with_cp=self.with_cp) for i in range(num_groups)
        ])
        self.up = TokenUpsample2x(D)
        for i in range(1, 5):
            self.add_module(f'norm{i}', mark_no_weight_decay(
                build_norm_layer(adapter_norm_cfg, D)[1]))
        self.init_adapter_weights()

    def _check_interaction_indexes(self, indexes, add_backbone_feature
                                   ) -> Tuple[Tuple[int, int], ...]:
        L = self.num_layers
        if indexes is None:
            if L < 4:
                raise ArgumentValueError(f'the default interaction_indexes split the blocks into '
                                         f'4 groups, but there are only {L}; pass '
                                         'interaction_indexes.')
            return tuple((i * L // 4, (i + 1) * L // 4 - 1) for i in range(4))
        if isinstance(indexes, (str, bytes)) or not isinstance(indexes, Sequence) \
                or len(indexes) == 0:
            raise ArgumentTypeError('interaction_indexes must be a non-empty sequence of '
                                    f'inclusive [first, last] block index pairs, got {indexes!r}')
        groups = []
        for g in indexes:
            if isinstance(g, (str, bytes)) or not isinstance(g, Sequence) or len(g) != 2 \
                    or not all(map(is_int, g)):
                raise ArgumentValueError('interaction_indexes must be inclusive [first, last] '
                                         f'pairs of block indices, got {list(indexes)}')
            groups.append((int(g[0]), int(g[1])))
        expected = 0
        for first, last in groups:
            if first != expected or last < first:
                raise ArgumentValueError(
                    f'interaction_indexes {list(map(list, groups))} must be consecutive, '
                    f'non-empty [first, last] groups that run every one of the {L} '
                    f'blocks once, starting at 0 (e.g. [[0, {L // 4 - 1}], ...]); a '
                    f'group starting at {first} was found where {expected} was expected.')
            expected = last + 1
        if expected != L:
            raise ArgumentValueError(f'interaction_indexes {list(map(list, groups))} end at '
                                     f'block {expected - 1}, but the backbone has {L} blocks '
                                     f'(last index {L - 1}).')
        if add_backbone_feature and len(groups) != 4:
            raise ArgumentValueError('add_backbone_feature adds each group\'s tokens to one of '
                                     'the four output levels, so it needs exactly 4 interaction '
                                     f'groups, got {len(groups)}.')
        return tuple(groups)

    def init_adapter_weights(self) -> None:
        """The adapter's own initialisation (as the official adapter)."""

        def init(m):
            if isinstance(m, nn.Linear):
                trunc_normal_init(m, std=0.02)
            elif isinstance(m, (nn.LayerNorm, _BatchNorm)):
                constant_init(m, 1)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                normal_init(m, std=math.sqrt(2.0 / fan_out))

        for module in (self.up, self.spm, self.interactions):
            module.apply(init)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.init_weights()
        nn.init.normal_(self.level_embed)
        for block in self.interactions:
            nn.init.constant_(block.injector.gamma, self.init_values)

    def init_weights(self) -> None:
        summary = super().init_weights()  # the backbone part (plain or pretrained)
        # (otherwise reset_parameters did it; an adapter's own file loaded it all)
        if summary is not None and summary['loaded'] < len(self.state_dict()):
            self.init_adapter_weights()

    def reset_parameters(self) -> None:
        """The backbone's default initialisation, then the adapter's."""
        super().reset_parameters()
        self.init_adapter_weights()

    def _check_batch_norm_size(self, B: int, H: int, W: int) -> None:
        """BatchNorm in training needs more than one value per channel; the stride-32
        level (``spm.conv4``, ``norm4``) has ``B * ceil(H / 32) * ceil(W / 32)``."""
        h, w = -(-H // 32), -(-W // 32)
        if B * h * w > 1:
            return
        for m in (*self.spm.conv4.modules(), self.norm4):
            if isinstance(m, _BatchNorm) and (m.training or m.running_mean is None):
                raise ValueError(
                    f'ShuffleMambaAdapter in training mode normalises its stride-32 '
                    f'level with BatchNorm ({type(m).__name__}), which needs more than '
                    f'one value per channel; a batch of {B} image(s) of {H}x{W} gives '
                    f'a {h}x{w} stride-32 level, {B * h * w} value per channel. Use a '
                    'batch of at least 2, or images larger than 32 pixels in height or '
                    'width (e.g. 64x32), or call model.eval() for inference.')

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """x: (B, C, H, W), any H, W >= 1 (padded to a multiple of 32, every level
        cropped back) -> four (B, D, ceil(H/s), ceil(W/s)) maps, s = 4, 8, 16, 32. With
        BatchNorm in training, ``B * ceil(H/32) * ceil(W/32) >= 2``."""
        self.check_input(x, min_size=1)
        B, _, H, W = x.shape
        self._check_batch_norm_size(B, H, W)
        if H % 32 or W % 32:
            x = F.pad(x, (0, (-W) % 32, 0, (-H) % 32))

        hidden, grid, _ = self.embed(x)  # checks the input's channels
        c1, c2, c3, c4 = self.spm(x)
        c_shapes = [tuple(c.shape[-2:]) for c in (c2, c3, c4)]
        c = torch.cat([lvl.flatten(2).transpose(1, 2) + self.level_embed[i]
                       for i, lvl in enumerate((c2, c3, c4))], dim=1)
        device = hidden.device
        inject_inputs = DeformInputs([grid], c_shapes, device)
        extract_inputs = DeformInputs(c_shapes, [grid], device)
        perms = self.draw_permutations(hidden.shape[1], device)
        residual, group_maps = None, []
        for block, (first, last) in zip(self.interactions, self.interaction_indexes):
            run = partial(self.forward_blocks, perms=perms, start=first, end=last + 1)
            hidden, residual, c = block(hidden, residual, c, run, inject_inputs,
                                        extract_inputs, c_shapes)
            if self.add_backbone_feature:
                group_maps.append(to_map(hidden, grid))

        B, _, D = c.shape
        tokens = c.split([h * w for h, w in c_shapes], dim=1)
        levels = [self.up.forward_tokens(tokens[0], c_shapes[0]) + c1] + [
            lvl.transpose(1, 2).reshape(B, D, h, w) for lvl, (h, w) in zip(tokens, c_shapes)]
        if self.add_backbone_feature:
            levels = [
                lvl + (g.to(lvl.dtype) if g.shape[-2:] == lvl.shape[-2:] else
                       F.interpolate(g.to(lvl.dtype), size=lvl.shape[-2:],
                                     mode='bilinear', align_corners=False))
                for lvl, g in zip(levels, group_maps)
            ]
        norms = (self.norm1, self.norm2, self.norm3, self.norm4)
        return tuple(norm(lvl)[..., :math.ceil(H / s), :math.ceil(W / s)].contiguous()
                     for norm, lvl, s in zip(norms, levels, (4, 8, 16, 32)))
