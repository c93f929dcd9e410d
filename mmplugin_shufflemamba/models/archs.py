"""The architecture registry (``ARCHS``: sizes by name and alias) and the published
ImageNet checkpoints of the family (``PUBLISHED_WEIGHTS``)."""
from typing import Dict, Optional, Union

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
    if isinstance(arch, str):
        key = arch.lower()
        if key not in ARCHS:
            raise KeyError(f'Unknown ShuffleMamba arch {arch!r}; choose one of '
                           f'{sorted(ARCHS)} or pass a dict with '
                           "'embed_dims' and 'num_layers'.")
        settings = dict(ARCHS[key])
    elif isinstance(arch, dict):
        settings = dict(arch)
        unknown = set(settings) - {'embed_dims', 'num_layers'}
        if unknown:
            raise ValueError(f'arch has unknown keys {sorted(unknown)}: an arch dict '
                             "holds 'embed_dims' and 'num_layers' only (pass the "
                             'other settings as arguments of the backbone).')
    else:
        raise TypeError(f'arch must be a str or dict, got {type(arch).__name__}')
    settings.update({k: v for k, v in (('embed_dims', embed_dims),
                                       ('num_layers', num_layers)) if v is not None})
    missing = {'embed_dims', 'num_layers'} - set(settings)
    if missing:
        raise ValueError(f'arch is missing {sorted(missing)}: {settings}')
    for name in ('embed_dims', 'num_layers'):
        value = check_int(name, settings[name])
        if value <= 0:
            raise ValueError(f'{name} must be positive, got {value} (arch settings '
                             f'{settings})')
    return dict(embed_dims=int(settings['embed_dims']),
                num_layers=int(settings['num_layers']))


#: Published ImageNet checkpoints of the family that load as they are (factory name in
#: the file's ``args.model`` -> what it is and the config that fits; ``layout``: the
#: checkpoint format). VideoMamba's files hold no model name: ``ckpt_format='videomamba'``.
#: Vim's stride-8 variants (overlapping patches) have no counterpart here.
PUBLISHED_WEIGHTS: Dict[str, dict] = {
    'mambar_small_patch16_224': dict(
        family='Mamba-Reg', arch='s', norm='RMSNorm', layout='reg', registers=12,
        cls_reduce=2, config='configs/upernet_mambar_s.py'),
    'mambar_base_patch16_224': dict(
        family='Mamba-Reg', arch='b', norm='RMSNorm', layout='reg', registers=12,
        cls_reduce=4, config='configs/upernet_shufflemamba_reg-b.py'),
    'mambar_large_patch16_224': dict(
        family='Mamba-Reg', arch='l2', norm='RMSNorm', layout='reg', registers=16,
        cls_reduce=8, config='configs/upernet_shufflemamba_reg-l2.py'),
    'vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2': dict(
        family='Vim', arch='t', norm='RMSNorm', layout='vim', registers=1, cls_reduce=1,
        config='configs/upernet_vim_t.py'),
    'vim_small_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2': dict(
        family='Vim', arch='s', norm='RMSNorm', layout='vim', registers=1, cls_reduce=1,
        config='configs/upernet_vim_s.py'),
    'vim_base_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_middle_cls_token_div2':
        dict(family='Vim', arch='b', norm='RMSNorm', layout='vim', registers=1,
             cls_reduce=1, config='configs/upernet_vim_b.py'),
    'videomamba_tiny': dict(
        family='VideoMamba', arch='t', norm='RMSNorm', layout='videomamba', registers=1,
        cls_reduce=1, config='configs/upernet_videomamba_t.py'),
    'videomamba_small': dict(
        family='VideoMamba', arch='s', norm='RMSNorm', layout='videomamba', registers=1,
        cls_reduce=1, config='configs/upernet_videomamba_s.py'),
    'videomamba_middle': dict(
        family='VideoMamba', arch='m', norm='RMSNorm', layout='videomamba', registers=1,
        cls_reduce=1, config='configs/upernet_videomamba_m.py'),
    'videomamba_base': dict(
        family='VideoMamba', arch='b', norm='RMSNorm', layout='videomamba', registers=1,
        cls_reduce=1, config='configs/upernet_videomamba_b.py'),
}

__all__ = ['ARCHS', 'PUBLISHED_WEIGHTS', 'resolve_arch']
