"""The ShuffleMamba encoder (embeddings, extra tokens, Mamba blocks with SLWS, final
norm) that the dense backbone, the adapter and the ImageNet classifier share."""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_

from ..archs import ARCHS, resolve_arch
from ..layers import (LayerShuffle, MambaBlock, PatchEmbed, build_token_norm,
                      resize_pos_embed, shuffled_call)
from ...errors import ArgumentTypeError, ArgumentValueError
from ..layers.arg_checks import check_bool, check_choice, check_int, check_norm_cfg
from ..layers.bimamba import mark_no_weight_decay
from ..layers.layer_shuffle import SHUFFLE_DRAWS
from ..layers.pos_embed import INTERPOLATE_MODES
from ..layers.token_layout import TokenLayout
from .shuffle_mamba_checks import (check_cls_reduce, check_frozen_stages, check_image_input,
                                   check_mixer_args, check_patch_grid)


def reset_block_init(layers: nn.ModuleList) -> None:
    """Mamba's block initialisation (the official models' ``_init_weights``): zero Linear
    biases but ``dt_proj``'s (``_no_reinit``), ``out_proj`` Kaiming-uniform divided by
    sqrt(number of blocks), GPT-2 style."""
    for name, m in layers.named_modules():
        if isinstance(m, nn.Linear) and m.bias is not None and \
                not getattr(m.bias, '_no_reinit', False):
            nn.init.zeros_(m.bias)
        if name.endswith('mixer.out_proj'):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
            with torch.no_grad():
                m.weight /= math.sqrt(len(layers))


class ShuffleMambaEncoder(BaseModule):
    """Embedding, blocks with SLWS and final norm of a ShuffleMamba (Vim) model, with
    the official checkpoints' parameter names (arguments in docs/backbone.md).

    In training, block ``l`` shuffles the tokens (hidden state and residual, one
    permutation per batch, inverted after the block) with probability
    ``linspace(0, shuffle_rate, num_layers)[l]`` (``shuffle_schedule='constant'``:
    ``shuffle_rate`` for every block but the first); in eval it is the plain Vim.

    Args:
        arch (str | dict): a name of :data:`~..archs.ARCHS` or
            ``dict(embed_dims=, num_layers=)``. Defaults to 'b'.
        img_size (int | tuple): resolution of the position embedding. Defaults to 224.
        patch_size (int): >= 1, at most ``img_size``. Defaults to 16.
        in_channels (int): image channels. Defaults to 3.
        embed_dims (int, optional): overrides ``arch``.
        num_layers (int, optional): overrides ``arch``.
        d_state (int): SSM state size. Defaults to 16.
        d_conv (int): causal conv width. Defaults to 4.
        expand (int): mixer expansion. Defaults to 2.
        drop_rate (float): dropout after the position embedding. Defaults to 0.
        drop_path_rate (float): stochastic depth, ``[0] + linspace(0, rate, L)``.
            Defaults to 0.
        shuffle_rate (float): P of SLWS, in [0, 1]. Defaults to 0.
        tokens (TokenLayout, optional): the extra tokens. Defaults to none.
        cls_reduce (int): Mamba-Reg's register reduction (``neck``). Defaults to 1.
        shuffle_cls (bool): whether SLWS moves the extra tokens. Defaults to True.
        shuffle_draw (str): 'host' or 'device' (docs/backbone.md#slws).
            Defaults to 'host'.
        shuffle_schedule (str): SLWS's per-block probabilities: 'linear'
            (``linspace(0, shuffle_rate, num_layers)``, the paper's) or 'constant'
            (``[0] + [shuffle_rate] * (num_layers - 1)``, the paper's Table 5
            ablation). Defaults to 'linear'.
        final_norm (bool): build ``norm_f``. Defaults to True.
        norm_cfg (dict): 'LN' or 'RMSNorm'. Defaults to ``dict(type='LN', eps=1e-5)``.
        interpolate_mode (str): position-embedding resize mode. Defaults to 'bicubic'.
        kernel (str): 'auto', 'cuda' or 'torch' (:mod:`mmplugin_shufflemamba.ops`).
        with_cp (bool): gradient checkpointing of every block. Defaults to False.
        frozen_stages (int): freeze the embeddings and the first k blocks (-1: none).
            Defaults to -1.
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained', checkpoint=...)``.

    Bad arguments raise ``TypeError`` (wrong type) or ``ValueError`` (out of range).
    """
    #: the architecture registry (:mod:`mmplugin_shufflemamba.models.archs`)
    arch_zoo = ARCHS
    #: top-level modules that an ImageNet checkpoint does not provide
    NOT_PRETRAINED: Tuple[str, ...] = ()

    def __init__(self, arch: Union[str, dict] = 'b',
                 img_size: Union[int, Sequence[int]] = 224, patch_size: int = 16,
                 in_channels: int = 3, embed_dims: Optional[int] = None,
                 num_layers: Optional[int] = None, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 shuffle_rate: float = 0.0, tokens: Optional[TokenLayout] = None,
                 cls_reduce: int = 1, shuffle_cls: bool = True, shuffle_draw: str = 'host',
                 shuffle_schedule: str = 'linear', final_norm: bool = True,
                 norm_cfg: dict = dict(type='LN', eps=1e-5),
                 interpolate_mode: str = 'bicubic', kernel: str = 'auto',
                 with_cp: bool = False, frozen_stages: int = -1,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(init_cfg, dict) and init_cfg and 'type' not in init_cfg:
            raise ArgumentValueError(
                f'init_cfg={init_cfg!r} has no type: for pretrained weights give '
                "init_cfg=dict(type='Pretrained', checkpoint=...) (on the command line "
                'add model.backbone.init_cfg.type=Pretrained).')
        if self._pretrained_cfg():
            # A placeholder path fails when the model is built, not after the data.
            from ...checkpoint import check_checkpoint_path
            check_checkpoint_path(init_cfg.get('checkpoint'))
        arch_settings = resolve_arch(arch, embed_dims, num_layers)
        self.embed_dims = D = arch_settings['embed_dims']
        self.num_layers = arch_settings['num_layers']
        #: where the cls / register tokens sit (embedding, SLWS, outputs, loading).
        self.tokens = TokenLayout() if tokens is None else tokens
        if not isinstance(self.tokens, TokenLayout):
            raise ArgumentTypeError(f'tokens must be a TokenLayout, got {tokens!r}')
        self.final_norm = check_bool('final_norm', final_norm)
        self.shuffle_cls = check_bool('shuffle_cls', shuffle_cls)
        if not self.shuffle_cls and not self.tokens.num_extra:
            raise ArgumentValueError('shuffle_cls=False keeps the cls / register tokens in place, '
                                     'but this model has none (with_cls_token=True or '
                                     'num_registers=R adds them): leave shuffle_cls at True')
        self.with_cp = check_bool('with_cp', with_cp)
        self.cls_reduce = check_cls_reduce(cls_reduce, self.tokens, D)
        check_mixer_args(d_state, d_conv, expand, drop_rate, drop_path_rate)
        self.in_channels = check_int('in_channels', in_channels, 1,
                                     hint='image channels, 3 for RGB')
        self.interpolate_mode = check_choice('interpolate_mode', interpolate_mode,
                                             INTERPOLATE_MODES)
        check_choice('shuffle_draw', shuffle_draw, SHUFFLE_DRAWS)
        check_norm_cfg('norm_cfg', norm_cfg, "'LN' or 'RMSNorm'")
        self.frozen_stages = check_frozen_stages(frozen_stages, self.num_layers)
        self.patch_size, self.img_size = check_patch_grid(patch_size, img_size)
        self.patch_resolution = (self.img_size[0] // self.patch_size,
                                 self.img_size[1] // self.patch_size)
        self.drop_path_rate = drop_path_rate
        self.layer_shuffle = LayerShuffle(shuffle_rate, self.num_layers, shuffle_draw,
                                          schedule=shuffle_schedule)

        self.patch_embed = PatchEmbed(in_channels, D, self.patch_size)
        num_patches = self.patch_resolution[0] * self.patch_resolution[1]
        # Official layouts: a front cls token has its position first in pos_embed;
        # registers have their own pos_embed_cls.
        T = self.tokens.num_extra
        self.pos_embed = mark_no_weight_decay(
            nn.Parameter(torch.zeros(1, num_patches + int(self.with_cls_token), D)))
        if T:
            self.cls_token = mark_no_weight_decay(nn.Parameter(torch.zeros(1, T, D)))
        if self.num_registers:
            self.pos_embed_cls = mark_no_weight_decay(nn.Parameter(torch.zeros(1, T, D)))
        self.pos_drop = nn.Dropout(p=drop_rate)

        # Official schedule: block i gets ([0] + linspace(0, rate, L))[i]; the final
        # add before norm_f gets the full rate.
        dpr = [0.0] + [float(x) for x in torch.linspace(0, drop_path_rate, self.num_layers,
                                                        device='cpu')]
        mixer_cfg = dict(d_state=d_state, d_conv=d_conv, expand=expand, kernel=kernel)
        self.layers = nn.ModuleList([
            MambaBlock(D, mixer_cfg=mixer_cfg, norm_cfg=norm_cfg, drop_path=dpr[i])
            for i in range(self.num_layers)
        ])
        self.drop_path = DropPath(drop_path_rate)
        # Published ImageNet layouts load through load_state_dict / MMEngine as they are.
        from ...checkpoint.pre_hook import published_layout_pre_hook
        self.register_load_state_dict_pre_hook(published_layout_pre_hook)
        self.norm_f = build_token_norm(norm_cfg, D) if self.final_norm else nn.Identity()
        if self.cls_reduce > 1:
            self.neck = nn.Linear(D, D // self.cls_reduce, bias=False)
            self.norm_neck = build_token_norm(norm_cfg, self.cls_feature_dims)
        self._freeze_stages()

    @property
    def with_cls_token(self) -> bool:
        """One cls token in front of the patches."""
        return self.tokens.kind == 'front'

    @property
    def num_registers(self) -> int:
        """Register tokens spread through the patches (Mamba-Reg)."""
        return self.tokens.num_extra if self.tokens.kind == 'registers' else 0

    @property
    def num_extra_tokens(self) -> int:
        """cls / register tokens in the sequence besides the patches."""
        return self.tokens.num_extra

    @property
    def cls_feature_dims(self) -> int:
        """Width of the classification feature (:meth:`cls_feature`)."""
        return self.tokens.cls_feature_dims(self.embed_dims, self.cls_reduce)

    def _token_params(self) -> List[nn.Parameter]:
        return [getattr(self, name) for name in ('pos_embed', 'cls_token', 'pos_embed_cls')
                if hasattr(self, name)]

    def _pretrained_cfg(self) -> bool:
        return isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'

    def pretrained_state_dict(self) -> Dict[str, torch.Tensor]:
        """The state dict an ImageNet checkpoint provides (all but
        :attr:`NOT_PRETRAINED`), on which pretrained loading is strict."""
        return {k: v for k, v in self.state_dict().items()
                if k.split('.')[0] not in self.NOT_PRETRAINED}

    def init_weights(self) -> Optional[Dict[str, object]]:
        """Load the ``Pretrained`` checkpoint (returns the loader's summary), else the
        default initialisation with any other ``init_cfg`` on top."""
        if self._pretrained_cfg():
            from ...checkpoint import load_pretrained_backbone
            kwargs = {k: v for k, v in self.init_cfg.items() if k != 'type'}
            if 'official' in kwargs:  # merged in from a pretraining base config
                print_log(f"init_cfg: 'official={kwargs.pop('official')!r}' belongs to the "
                          "base config's ShuffleMambaOfficialInit, not to Pretrained: "
                          'not used (init_cfg=dict(_delete_=True, ...) leaves it out)',
                          logger='current')
            summary = load_pretrained_backbone(self, **kwargs)
            self._is_init = True
            return summary
        if not self._is_init:  # MMEngine's init runs once; so does the default
            self.reset_parameters()  # an init_cfg (e.g. Kaiming) applies on top of it
        super().init_weights()

    def reset_parameters(self) -> None:
        """The default initialisation (position embedding, cls / register tokens, block
        biases, ``out_proj`` scale), without MMEngine's logging; an ``init_cfg`` other
        than Pretrained is applied on top of it."""
        for param in self._token_params():
            trunc_normal_(param, std=0.02)
        if self.cls_reduce > 1:
            trunc_normal_(self.neck.weight, std=0.02)
        reset_block_init(self.layers)

    def _freeze_stages(self) -> None:
        if check_frozen_stages(self.frozen_stages, self.num_layers) < 0:
            return
        frozen = [self.patch_embed, self.pos_drop] + list(self.layers[:self.frozen_stages])
        if self.frozen_stages == self.num_layers:  # the last block's drop path too
            frozen += [self.norm_f, self.drop_path]
        for m in frozen:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False
        for param in self._token_params():
            param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer id of a parameter for layer-wise learning-rate decay: embeddings 0,
        block i ``i + 1``, the rest ``num_layers + 1``; returns ``(id, num_layers + 2)``.
        """
        num_layers = self.num_layers + 2
        name = param_name[len(prefix):]
        if param_name.startswith(prefix):
            if name.startswith(('patch_embed', 'pos_embed', 'cls_token')):  # + pos_embed_cls
                return 0, num_layers
            if name.startswith('layers.'):
                return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers

    def check_input(self, x: torch.Tensor, min_size: Optional[int] = None) -> None:
        """Check an image batch (B, in_channels, H, W), H and W >= ``min_size``
        (default ``patch_size``); see :func:`.shuffle_mamba_checks.check_image_input`."""
        check_image_input(self, x, min_size)

    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int], torch.Tensor]:
        """Patch-embed, add position embedding and the cls / register tokens.

        Args:
            x (Tensor): (B, C, H, W); H and W are padded up to a multiple of the patch.

        Returns:
            tuple: tokens (B, N + T, D), patch grid (h, w), patch positions (N, ).
        """
        self.check_input(x)
        H, W = x.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            x = F.pad(x, (0, (-W) % p, 0, (-H) % p))
        x, grid = self.patch_embed(x)
        if self.with_cls_token:
            # cls first, then the position embedding of the whole sequence (the cls
            # position is not resized).
            pos = torch.cat([self.pos_embed[:, :1], resize_pos_embed(
                self.pos_embed[:, 1:], self.patch_resolution, grid,
                self.interpolate_mode)], dim=1)
            cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
            x = self.pos_drop(self.tokens.insert(x, cls) + pos)
        else:
            x = self.pos_drop(x + resize_pos_embed(self.pos_embed, self.patch_resolution,
                                                   grid, self.interpolate_mode))
            if self.num_registers:
                regs = (self.cls_token + self.pos_embed_cls).expand(x.shape[0], -1, -1)
                x = self.tokens.insert(x, regs.to(x.dtype))
        patch_pos, _ = self.tokens.positions(grid[0] * grid[1])
        return x, grid, patch_pos.to(x.device)

    @property
    def shuffle_rate(self) -> float:
        """SLWS's ``P`` (:class:`LayerShuffle`); setting it sets the schedule."""
        return self.layer_shuffle.shuffle_rate

    @shuffle_rate.setter
    def shuffle_rate(self, value: float) -> None:
        self.layer_shuffle.shuffle_rate = value

    def draw_permutations(self, num_tokens: int, device: Optional[torch.device] = None
                          ) -> List[Optional[torch.Tensor]]:
        """The SLWS draw of one forward pass: a permutation or None per block (all None
        in eval). Block ``i`` uses entry ``i`` whichever blocks :meth:`forward_blocks`
        runs; with ``shuffle_cls=False`` only the patch tokens move. Frozen blocks
        (``frozen_stages``) run as in eval: they do not shuffle."""
        movable = self.tokens.movable(num_tokens - self.tokens.num_extra, self.shuffle_cls)
        return self.layer_shuffle(num_tokens, device, movable, max(self.frozen_stages, 0))

    def forward_blocks(self, hidden: torch.Tensor, residual: Optional[torch.Tensor],
                       perms: Sequence[Optional[torch.Tensor]], start: int = 0,
                       end: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run blocks ``start .. end - 1`` with SLWS, drop path and checkpointing.

        Args:
            hidden (Tensor): (B, L, D), the previous block's mixer output (the
                embedded tokens before block 0).
            residual (Tensor, optional): (B, L, D) residual stream; None before block 0.
            perms (list): :meth:`draw_permutations` of this forward pass.
            start (int): first block. Defaults to 0.
            end (int, optional): one past the last block. Defaults to all blocks.

        Returns:
            tuple: (hidden, residual) after block ``end - 1``.
        """
        end = self.num_layers if end is None else end
        if not 0 <= start < end <= self.num_layers:
            raise ValueError(f'block range [{start}, {end}) is not within the '
                             f'{self.num_layers} blocks')
        if len(perms) != self.num_layers:
            raise ValueError(f'expected {self.num_layers} permutations (one per block), '
                             f'got {len(perms)}')
        for i in range(start, end):
            args = (self.layers[i], perms[i], hidden, residual)
            if self.with_cp and self.training and hidden.requires_grad:
                # The recomputation replays the permutation (drawn outside) and drop
                # path (checkpoint's RNG state).
                hidden, residual = cp.checkpoint(shuffled_call, *args, use_reentrant=False)
            else:
                hidden, residual = shuffled_call(*args)
        return hidden, residual

    def final_tokens(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``norm_f(residual + drop_path(hidden))`` after the last block (in norm_f's
        dtype, as the block norms): the whole normed sequence (B, L, D), cls / register
        tokens included."""
        seq = residual + self.drop_path(hidden)
        weight = getattr(self.norm_f, 'weight', None)
        return self.norm_f(seq if weight is None else seq.to(weight.dtype))

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the final-normed token sequence (B, L, D) after every block,
        cls / register tokens included (SLWS in training)."""
        hidden, _, _ = self.embed(x)
        perms = self.draw_permutations(hidden.shape[1], hidden.device)
        return self.final_tokens(*self.forward_blocks(hidden, None, perms))

    def cls_feature(self, tokens: torch.Tensor) -> torch.Tensor:
        """The classification feature of a final-normed sequence (:meth:`final_tokens`):
        the cls token (B, D), or the registers reduced by ``neck`` (when
        ``cls_reduce > 1``), flattened and normed by ``norm_neck`` (B, R * D // r)."""
        if not self.tokens.num_extra:
            raise RuntimeError('this model has no cls / register tokens: build it with '
                               'with_cls_token=True or num_registers=R.')
        regs = self.tokens.extra(tokens)
        if self.with_cls_token:
            return regs[:, 0]
        if self.cls_reduce > 1:
            return self.norm_neck(self.neck(regs).flatten(1))
        return regs.flatten(1)


__all__ = ['ShuffleMambaEncoder']
