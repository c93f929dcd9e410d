"""The architecture registry: every size has its long alias, the backbone, the timm
names and the converter read the same table."""
import pytest

from mmplugin_shufflemamba import ShuffleMamba
from mmplugin_shufflemamba.models.archs import ARCHS, resolve_arch
from mmplugin_shufflemamba.models.classifiers import TIMM_ARCHS

SIZES = {'t': (192, 24), 's': (384, 24), 'm': (576, 32), 'b': (768, 24),
         'l1': (1024, 40), 'l2': (1024, 48)}
ALIASES = {'tiny': 't', 'small': 's', 'middle': 'm', 'base': 'b', 'large1': 'l1',
           'large2': 'l2'}


def test_sizes_and_aliases():
    for name, (dims, depth) in SIZES.items():
        assert ARCHS[name] == dict(embed_dims=dims, num_layers=depth)
    for alias, name in ALIASES.items():
        assert ARCHS[alias] == ARCHS[name]
    assert ShuffleMamba.arch_zoo is ARCHS


def test_backbone_and_timm_names_read_the_registry():
    m = ShuffleMamba(arch='TINY', img_size=32, patch_size=16, kernel='torch')
    assert (m.embed_dims, m.num_layers) == SIZES['t']
    for name, cfg in TIMM_ARCHS.items():
        assert cfg['arch'] in ARCHS, name


def test_overrides_and_errors():
    assert resolve_arch('b', num_layers=12) == dict(embed_dims=768, num_layers=12)
    assert resolve_arch(dict(embed_dims=8, num_layers=2)) == dict(embed_dims=8,
                                                                  num_layers=2)
    with pytest.raises(KeyError, match="Unknown ShuffleMamba arch 'xl'"):
        resolve_arch('xl')
    with pytest.raises(ValueError, match=r"arch has unknown keys \['depth'\]"):
        resolve_arch(dict(embed_dims=8, depth=2))
    with pytest.raises(ValueError, match='num_layers must be positive, got 0'):
        resolve_arch('b', num_layers=0)
    with pytest.raises(TypeError, match='arch must be a str or dict'):
        resolve_arch(3)
