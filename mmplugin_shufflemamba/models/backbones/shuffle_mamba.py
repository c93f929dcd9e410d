"""ShuffleMamba: plain Vision Mamba trained with stochastic layer-wise shuffle, as a
dense backbone (multi-level feature maps)."""
import enum
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmengine.registry import MODELS

from ..layers.token_layout import to_map
from ..layers.arg_checks import check_bool
from .encoder import ShuffleMambaEncoder
from .shuffle_mamba_checks import (check_out_cls, reject_args, resolve_out_indices,
                                   token_layout)


class OutType(str, enum.Enum):
    """What :class:`ShuffleMamba` returns at an intermediate ``out_indices`` block
    (the last block's output is final-normed with ``final_norm``)."""
    #: the full token state after the block (residual + mixer output), as a ViT gives
    RESIDUAL = 'residual'
    #: the block's mixer output alone, as the official downstream code
    MIXER = 'mixer'

    @classmethod
    def parse(cls, value: Union[str, 'OutType']) -> 'OutType':
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f'out_type must be one of {[t.value for t in cls]}, got '
                             f'{value!r}') from None


@MODELS.register_module()
class ShuffleMamba(ShuffleMambaEncoder):
    """ShuffleMamba backbone (Vim with stochastic layer-wise shuffle).

    The :class:`~.encoder.ShuffleMambaEncoder` (patch embedding, absolute position
    embedding, optional cls / register tokens, bidirectional Mamba blocks, SLWS in
    training only, final norm) returning feature maps of chosen blocks.

    Args:
        out_indices (int | Sequence[int]): blocks whose output is returned;
            negative values count from the end. Defaults to -1.
        out_type (str | OutType): 'residual' (the full token state after the block,
            as a ViT gives) or 'mixer' (the block's mixer output alone at
            intermediate indices, as the official downstream code).
            Defaults to 'residual'.
        final_norm (bool): apply ``norm_f`` to the last block's output.
            Defaults to True.
        num_registers (int): register tokens spread evenly through the sequence
            (Mamba-Reg); never in the dense outputs. Defaults to 0.
        with_cls_token (bool): one learnable cls token at the front of the sequence,
            with its own position in ``pos_embed`` (``(1, N + 1, D)``), as the
            official plain ImageNet classifiers (ShuffleMamba-M/B/L1); never in the
            dense outputs. Not with ``num_registers``. Defaults to False.
        out_cls (bool): also return the classification feature
            (:meth:`~.encoder.ShuffleMambaEncoder.cls_feature`), as the last element
            of the output tuple. ``out_indices=()`` returns it alone. Needs
            ``final_norm``. Defaults to False.
        cls_reduce (int): Mamba-Reg's register reduction for classification; with
            ``num_registers`` only. Official: 4 for Reg-B, 8 for Reg-L2. Defaults to 1.
        shuffle_cls (bool): whether SLWS shuffles the cls / register tokens with the
            patches (the paper's default, True). Defaults to True.
        **kwargs: the encoder's arguments (``arch``, ``img_size``, ``patch_size``,
            ``in_channels``, ``embed_dims``, ``num_layers``, ``d_state``, ``d_conv``,
            ``expand``, ``drop_rate``, ``drop_path_rate``, ``shuffle_rate``,
            ``shuffle_draw``, ``norm_cfg``, ``interpolate_mode``, ``kernel``,
            ``with_cp``, ``frozen_stages``, ``init_cfg``), see
            :class:`~.encoder.ShuffleMambaEncoder`.

    Every argument is checked at construction: a value of the wrong type is a
    ``TypeError`` and one out of range a ``ValueError``, both naming the argument.
    """
    OUT_TYPES = tuple(t.value for t in OutType)

    def __init__(self,
                 arch: Union[str, dict] = 'b',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 *,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_type: Union[str, OutType] = 'residual',
                 final_norm: bool = True,
                 num_registers: int = 0,
                 with_cls_token: bool = False,
                 out_cls: bool = False,
                 cls_reduce: int = 1,
                 shuffle_cls: bool = True,
                 **kwargs):
        reject_args('ShuffleMamba', kwargs,
                    {'tokens': 'pass with_cls_token or num_registers'})
        out_type = OutType.parse(out_type)
        tokens = token_layout(with_cls_token, num_registers)
        final_norm = check_bool('final_norm', final_norm)
        out_cls = check_out_cls(out_cls, tokens, final_norm)
        super().__init__(arch=arch, img_size=img_size, patch_size=patch_size, tokens=tokens, cls_reduce=cls_reduce, shuffle_cls=shuffle_cls,
                         final_norm=final_norm, **kwargs)
        self.out_type = out_type
        self.out_cls = out_cls
        self.out_indices = resolve_out_indices(out_indices, self.num_layers,
                                               allow_empty=self.out_cls)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """x: (B, C, H, W) -> one (B, D, ceil(H/p), ceil(W/p)) map per out index, then
        with ``out_cls`` the classification feature (B, :attr:`cls_feature_dims`).

        ``x`` must have ``in_channels`` channels, B >= 1, H and W >= ``patch_size``
        (other sizes are padded to a multiple of it) and the weights' dtype, or any
        floating dtype under ``torch.autocast`` (:meth:`check_input`)."""
        hidden, grid, _ = self.embed(x)
        perms = self.draw_permutations(hidden.shape[1], hidden.device)
        residual = None
        outs: List[torch.Tensor] = []
        last = self.num_layers - 1
        final: Optional[torch.Tensor] = None
        for i in range(self.num_layers):
            hidden, residual = self.forward_blocks(hidden, residual, perms, i, i + 1)
            if i == last and self.final_norm and (i in self.out_indices or self.out_cls):
                final = self.final_tokens(hidden, residual)  # one drop-path draw
            if i not in self.out_indices:
                continue
            if final is not None:
                feat = final
            elif i != last and self.out_type == OutType.MIXER:
                feat = hidden
            else:
                feat = residual + hidden
            outs.append(to_map(self.tokens.patches(feat, grid[0] * grid[1]), grid))
        if self.out_cls:
            outs.append(self.cls_feature(final))
        return tuple(outs)


__all__ = ['OutType', 'ShuffleMamba']
