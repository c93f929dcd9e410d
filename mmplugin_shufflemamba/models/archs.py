"""The architecture registry (``ARCHS``: sizes by name and alias) and the published
ImageNet checkpoints of the family (``PUBLISHED_WEIGHTS``)."""
from typing import Dict, Optional, Union

from ..errors import ArgumentKeyError, ArgumentTypeError, ArgumentValueError
from .layers.arg_checks import check_int

#: name -> (embed_dims, num_layers, aliases)
_SIZES = {
    't': (192, 24, ('tiny', )),
    's': (384, 24, ('small', )),
    'm': (576, 32, ('middle', )),
    'b': (768, 24, ('base', )),
    'l1': (1024, 40, ('large1', )),
    'l2': (1024, 48, ('large2', )),
}

#: every accepted arch name (aliases included) -> dict(embed_dims=, num_layers=)
ARCHS: Dict[str, Dict[str, int]] = {}
for _name, (_dims, _depth, _aliases) in _SIZES.items():
    for _key in (_name, ) + _aliases:
        ARCHS[_key] = dict(embed_dims=_dims, num_layers=_depth)


def resolve_arch(arch: Union[str, dict], embed_dims: Optional[int] = None,
                 num_layers: Optional[int] = None) -> Dict[str, int]:
    """``dict(embed_dims=, num_layers=)`` of an arch name or dict, with overrides."""
    overrides = dict(embed_dims=embed_dims, num_layers=num_layers)
    if isinstance(arch, str):
        if arch.lower() not in ARCHS:
            raise ArgumentKeyError(f'Unknown ShuffleMamba arch {arch!r}; choose one of '
                                   f'{sorted(ARCHS)} or pass a dict with '
                                   "'embed_dims' and 'num_layers'.")
        settings = dict(ARCHS[arch.lower()])
    elif isinstance(arch, dict):
        settings = dict(arch)
        unknown = set(settings) - set(overrides)
        if unknown:
            raise ArgumentValueError(f'arch has unknown keys {sorted(unknown)}: an arch dict '
                                     "holds 'embed_dims' and 'num_layers' only (pass the "
                                     'other settings as arguments of the backbone).')
    else:
        raise ArgumentTypeError(f'arch must be a str or dict, got {type(arch).__name__}')
    settings.update({k: v for k, v in overrides.items() if v is not None})
    missing = set(overrides) - set(settings)
    if missing:
        raise ArgumentValueError(f'arch is missing {sorted(missing)}: {settings}')
    resolved = {}
    for name in overrides:
        resolved[name] = check_int(name, settings[name])
        if resolved[name] <= 0:
            raise ArgumentValueError(f'{name} must be positive, got {resolved[name]} (arch '
                                     f'settings {settings})')
    return resolved


def _published(family: str, arch: str, layout: str, config: str, registers: int = 1,
               cls_reduce: int = 1) -> dict:
    return dict(family=family, arch=arch, norm='RMSNorm', layout=layout,
                registers=registers, cls_reduce=cls_reduce, config=f'configs/{config}.py')


#: Published ImageNet checkpoints of the family that load as they are (factory name in
#: the file's ``args.model`` -> what it is and the config that fits; ``layout``: the
#: checkpoint format). VideoMamba's files hold no model name: ``ckpt_format='videomamba'``.
#: Vim's stride-8 variants (overlapping patches) have no counterpart here.
PUBLISHED_WEIGHTS: Dict[str, dict] = {
    'mambar_small_patch16_224': _published(
        'Mamba-Reg', 's', 'reg', 'upernet_mambar_s', registers=12, cls_reduce=2),
    'mambar_base_patch16_224': _published(
        'Mamba-Reg', 'b', 'reg', 'upernet_shufflemamba_reg-b', registers=12, cls_reduce=4),
    'mambar_large_patch16_224': _published(
        'Mamba-Reg', 'l2', 'reg', 'upernet_shufflemamba_reg-l2', registers=16, cls_reduce=8),
    'vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2':
        _published('Vim', 't', 'vim', 'upernet_vim_t'),
    'vim_small_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2':
        _published('Vim', 's', 'vim', 'upernet_vim_s'),
    'vim_base_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_middle_cls_token_div2':
        _published('Vim', 'b', 'vim', 'upernet_vim_b'),
    'videomamba_tiny': _published('VideoMamba', 't', 'videomamba', 'upernet_videomamba_t'),
    'videomamba_small': _published('VideoMamba', 's', 'videomamba', 'upernet_videomamba_s'),
    'videomamba_middle': _published('VideoMamba', 'm', 'videomamba', 'upernet_videomamba_m'),
    'videomamba_base': _published('VideoMamba', 'b', 'videomamba', 'upernet_videomamba_b'),
}

__all__ = ['ARCHS', 'PUBLISHED_WEIGHTS', 'resolve_arch']
