"""The official models' from-scratch initialisation, as an MMEngine initializer for the
ImageNet pretraining configs: ``init_cfg=dict(type='ShuffleMambaOfficialInit',
official='shufflemamba' | 'reg')`` (docs/backbone.md, "Initialisation")."""
import torch.nn as nn
from mmengine.model.weight_init import BaseInit, trunc_normal_
from mmengine.registry import WEIGHT_INITIALIZERS
from timm.layers import lecun_normal_

from ...errors import ArgumentTypeError
from ..layers.arg_checks import check_choice
from .encoder import reset_block_init

#: The official model files whose initialisation each choice follows.
OFFICIAL_MODELS = ('shufflemamba', 'reg')


def _linear_default(module: nn.Module) -> None:
    """``segm_init_weights`` of the official files on one module."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def official_init(encoder: nn.Module, official: str = 'shufflemamba') -> None:
    """Initialise a :class:`~.encoder.ShuffleMambaEncoder` (the backbone, the adapter's
    core, the timm classifier) as the official model does from scratch.

    ``'shufflemamba'`` (``models_shuffle.py``, the plain rows): every Linear
    truncated-normal (std 0.02) with a zero bias, Mamba's ``dt_proj`` bias included, so
    dt starts at softplus(0); the cls token zero. ``'reg'`` (``models_reg.py``, the Reg
    rows): the mixers keep Mamba's initialisation, the registers, their positions and
    ``neck`` truncated-normal. Both: LeCun-normal patch embedding with zero bias,
    position embedding truncated-normal, the other block biases zero, ``out_proj``
    Kaiming-uniform divided by sqrt(number of blocks).
    """
    check_choice('official (ShuffleMambaOfficialInit)', official, OFFICIAL_MODELS)
    if not hasattr(encoder, 'patch_embed') or not hasattr(encoder, 'layers'):
        raise ArgumentTypeError('ShuffleMambaOfficialInit initialises a ShuffleMamba backbone; '
                                f'it was given a {type(encoder).__name__} (set it as the '
                                "backbone's init_cfg)")
    lecun_normal_(encoder.patch_embed.proj.weight)
    if encoder.patch_embed.proj.bias is not None:
        nn.init.zeros_(encoder.patch_embed.proj.bias)
    for param in encoder._token_params():
        trunc_normal_(param, std=0.02)
    if getattr(encoder, 'neck', None) is not None:
        _linear_default(encoder.neck)
    if official == 'shufflemamba':
        if hasattr(encoder, 'cls_token'):
            nn.init.zeros_(encoder.cls_token)
        encoder.layers.apply(_linear_default)
    reset_block_init(encoder.layers)


@WEIGHT_INITIALIZERS.register_module(name='ShuffleMambaOfficialInit')
class ShuffleMambaOfficialInit(BaseInit):
    """MMEngine initializer for :func:`official_init`.

    Args:
        official (str): 'shufflemamba' (``models_shuffle.py``, cls token) or 'reg'
            (``models_reg.py``, registers). Defaults to 'shufflemamba'.
    """

    def __init__(self, official: str = 'shufflemamba', **kwargs):
        super().__init__(**kwargs)
        self.official = check_choice('official (ShuffleMambaOfficialInit)', official,
                                     OFFICIAL_MODELS)

    def __call__(self, module: nn.Module) -> None:
        official_init(module, self.official)

    def _get_init_info(self) -> str:
        return f'{self.__class__.__name__}: official={self.official}'


__all__ = ['OFFICIAL_MODELS', 'ShuffleMambaOfficialInit', 'official_init']
