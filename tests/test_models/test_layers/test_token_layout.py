"""TokenLayout: insert and split are exact inverses, positions agree with the
sequence, and Vim's middle cls token is one register."""
import pytest
import torch

from mmplugin_shufflemamba.models.layers import TokenLayout


@pytest.mark.parametrize('kind, extra', [('none', 0), ('front', 1), ('registers', 1),
                                         ('registers', 4), ('registers', 12)])
@pytest.mark.parametrize('num_patches', [1, 16, 35])
def test_insert_then_split_is_exact(kind, extra, num_patches):
    layout = TokenLayout(kind, extra)
    patches = torch.randn(2, num_patches, 3)
    tokens = torch.randn(2, extra, 3)
    seq = layout.insert(patches, tokens if extra else None)
    assert seq.shape == (2, num_patches + extra, 3)
    assert torch.equal(layout.patches(seq, num_patches), patches)
    if extra:
        assert torch.equal(layout.extra(seq), tokens)
    patch_pos, extra_pos = layout.positions(num_patches)
    assert torch.equal(seq[:, patch_pos], patches)
    assert torch.equal(seq[:, extra_pos], tokens)
    both = torch.cat([patch_pos, extra_pos]).sort().values
    assert torch.equal(both, torch.arange(num_patches + extra))


def test_front_and_middle_positions():
    assert TokenLayout('front', 1).positions(16)[1].tolist() == [0]
    # one register sits at N // 2: the Vim checkpoints' middle cls token
    assert TokenLayout('registers', 1).positions(16)[1].tolist() == [8]
    assert TokenLayout('registers', 1).positions(15)[1].tolist() == [7]


def test_movable_positions():
    layout = TokenLayout('registers', 2)
    assert layout.movable(9, extra_moves=True) is None
    assert torch.equal(layout.movable(9, extra_moves=False), layout.positions(9)[0])
    assert TokenLayout().movable(9, extra_moves=False) is None


@pytest.mark.parametrize('kind, extra', [('none', 1), ('front', 2), ('registers', 0),
                                         ('middle', 1)])
def test_bad_layouts_are_refused(kind, extra):
    with pytest.raises(ValueError):
        TokenLayout(kind, extra)
