"""ShuffleMamba as a dense backbone (feature maps of chosen blocks)."""
import enum
from typing import Dict, Sequence, Tuple, Union

import torch
from mmengine.registry import MODELS

from ...ops.kernels import autocast_dtype
from ..layers.arg_checks import check_bool, check_choice
from ..layers.token_layout import to_map
from .encoder import ShuffleMambaEncoder
from .shuffle_mamba_checks import (check_out_cls, reject_args, resolve_out_indices,
                                   token_layout)


class OutType(str, enum.Enum):
    """What :class:`ShuffleMamba` returns at an intermediate ``out_indices`` block."""
    #: the full token state after the block (residual + mixer output), as a ViT gives
    RESIDUAL = 'residual'
    #: the block's mixer output alone, as the official downstream code
    MIXER = 'mixer'


@MODELS.register_module()
class ShuffleMamba(ShuffleMambaEncoder):
    """ShuffleMamba backbone (Vim with stochastic layer-wise shuffle): the encoder
    returning feature maps of chosen blocks (arguments in docs/backbone.md).

    Args:
        out_indices (int | Sequence[int]): returned blocks, negatives from the end,
            in the order given. Defaults to -1.
        out_type (str | OutType): 'residual' (block output) or 'mixer' (mixer output
            at intermediate indices, official). Defaults to 'residual'.
        final_norm (bool): ``norm_f`` on the last block's output. Defaults to True.
        num_registers (int): Mamba-Reg register tokens (not in the maps). Defaults to 0.
        with_cls_token (bool): one cls token in front (not in the maps); not with
            ``num_registers``. Defaults to False.
        out_cls (bool): also return :meth:`cls_feature` last (alone with
            ``out_indices=()``); needs ``final_norm``. Defaults to False.
        cls_reduce (int): register reduction (Reg-B 4, Reg-L2 8). Defaults to 1.
        shuffle_cls (bool): SLWS moves the cls / register tokens. Defaults to True.
        **kwargs: see :class:`~.encoder.ShuffleMambaEncoder`.
    """

    def __init__(self, arch: Union[str, dict] = 'b',
                 img_size: Union[int, Sequence[int]] = 224, patch_size: int = 16, *,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_type: Union[str, OutType] = 'residual', final_norm: bool = True,
                 num_registers: int = 0, with_cls_token: bool = False,
                 out_cls: bool = False, cls_reduce: int = 1, shuffle_cls: bool = True,
                 **kwargs):
        reject_args(ShuffleMamba, kwargs,
                    {'tokens': 'pass with_cls_token or num_registers'})
        out_type = OutType(check_choice('out_type', out_type, [t.value for t in OutType]))
        tokens = token_layout(with_cls_token, num_registers)
        final_norm = check_bool('final_norm', final_norm)
        out_cls = check_out_cls(out_cls, tokens, final_norm)
        super().__init__(arch=arch, img_size=img_size, patch_size=patch_size,
                         tokens=tokens, cls_reduce=cls_reduce, shuffle_cls=shuffle_cls,
                         final_norm=final_norm, **kwargs)
        self.out_type, self.out_cls = out_type, out_cls
        self.out_indices = resolve_out_indices(out_indices, self.num_layers,
                                               allow_empty=out_cls)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """x: (B, C, H, W), H and W >= ``patch_size`` (:meth:`check_input`) -> one
        (B, D, ceil(H/p), ceil(W/p)) map per out index, then with ``out_cls`` the
        classification feature (B, :attr:`cls_feature_dims`); in the weights' dtype
        outside autocast (the residual stream runs in float32 at least)."""
        hidden, grid, _ = self.embed(x)  # checks x
        out_dtype = (None if autocast_dtype(x.device) else
                     self.patch_embed.proj.weight.dtype)
        perms = self.draw_permutations(hidden.shape[1], hidden.device)
        residual, final, last = None, None, self.num_layers - 1
        feats: Dict[int, torch.Tensor] = {}
        # The blocks after the deepest out index change no output: not run.
        stop = self.num_layers if self.out_cls else max(self.out_indices) + 1
        for i in range(stop):
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
            feat = feat if out_dtype is None else feat.to(out_dtype)
            feats[i] = to_map(self.tokens.patches(feat, grid[0] * grid[1]), grid)
        outs = [feats[i] for i in self.out_indices]  # in the order asked for
        if self.out_cls:
            outs.append(self.cls_feature(final))
        return tuple(outs)


__all__ = ['OutType', 'ShuffleMamba']
