"""A file in this project's layout that records its position grid (a converted file's
``meta['target_grid']``, an MMEngine checkpoint's saved config) is resized from that
grid, also when its position count equals the model's on another grid (16x16 and 8x32
are both 256 positions)."""
import argparse
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from helpers.official_reference import make_official_state_dict
from helpers.tools_convert import convert_main
from mmengine.config import Config

from mmplugin_shufflemamba.checkpoint import recorded_grid
from mmplugin_shufflemamba.models.backbones import ShuffleMamba

DIM, DEPTH = 32, 2


def backbone(img_size, checkpoint=None, **kw):
    init_cfg = None if checkpoint is None else dict(type='Pretrained',
                                                    checkpoint=checkpoint)
    m = ShuffleMamba(arch=dict(embed_dims=DIM, num_layers=DEPTH), img_size=img_size,
                     out_indices=(DEPTH - 1, ), init_cfg=init_cfg, **kw)
    m.init_weights()
    return m


def grid_resize(pos, src, dst):
    """Bicubic resize of a (1, H*W, C) row-major grid, as the official code does it."""
    img = pos.reshape(1, src[0], src[1], -1).permute(0, 3, 1, 2)
    out = F.interpolate(img, size=dst, mode='bicubic', align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(1, dst[0] * dst[1], -1)


def mmengine_checkpoint(path, model, img_size, **kw):
    cfg = Config(dict(model=dict(type='EncoderDecoder', backbone=dict(
        type='ShuffleMamba', arch=dict(embed_dims=DIM, num_layers=DEPTH),
        img_size=img_size, **kw))))
    ckpt = dict(meta=dict(cfg=cfg.pretty_text, iter=1),
                state_dict={'backbone.' + k: v for k, v in model.state_dict().items()},
                message_hub=dict(log_scalars={}))
    torch.save(ckpt, path)
    return ckpt


def test_converted_square_file_into_a_rectangular_grid_of_the_same_count(tmp_path):
    official = tmp_path / 'official.pth'
    sd = make_official_state_dict(depth=DEPTH, dim=DIM, grid=16, registers=0)
    args = argparse.Namespace(model='shufflemamba_middle_patch16_224')
    torch.save(dict(model=sd, args=args), official)
    converted = tmp_path / 'converted.pth'
    convert_main([str(official), str(converted)])
    assert recorded_grid(torch.load(converted)) == (16, 16)

    from_official = backbone((128, 512), str(official)).pos_embed
    from_converted = backbone((128, 512), str(converted)).pos_embed
    torch.testing.assert_close(from_converted, from_official, rtol=0, atol=0)
    torch.testing.assert_close(from_official,
                               grid_resize(sd['pos_embed'][:, 1:], (16, 16), (8, 32)))


def test_mmengine_checkpoint_of_a_rectangular_grid_into_a_square_one(tmp_path):
    rect = backbone((128, 512))
    with torch.no_grad():
        rect.pos_embed.normal_()
    path = tmp_path / 'iter_1.pth'
    ckpt = mmengine_checkpoint(path, rect, (128, 512))
    assert recorded_grid(ckpt) == (8, 32)
    want = grid_resize(rect.pos_embed.detach(), (8, 32), (16, 16))

    loaded = ShuffleMamba(arch=dict(embed_dims=DIM, num_layers=DEPTH), img_size=256,
                          out_indices=(DEPTH - 1, ),
                          init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                        prefix='backbone.'))
    loaded.init_weights()
    torch.testing.assert_close(loaded.pos_embed.detach(), want)

    # The whole checkpoint through load_state_dict (the backbones' pre-hook).
    square = backbone(256)
    square.load_state_dict(dict(ckpt, state_dict=rect.state_dict()))
    torch.testing.assert_close(square.pos_embed.detach(), want)


def test_a_plain_state_dict_keeps_the_models_grid():
    """Control: without a record, this project's layout at the model's position count
    is read on the model's grid (what load_state_dict of its own state dict does)."""
    rect = backbone((128, 512))
    with torch.no_grad():
        rect.pos_embed.normal_()
    square = backbone(256)
    square.load_state_dict(rect.state_dict())
    torch.testing.assert_close(square.pos_embed, rect.pos_embed, rtol=0, atol=0)
    assert recorded_grid(dict(state_dict=rect.state_dict())) is None


def test_saved_config_grid_defaults_and_other_backbones():
    def ckpt(backbone):
        text = Config(dict(model=dict(type='ImageClassifier', backbone=backbone))).pretty_text
        return dict(meta=dict(cfg=text), state_dict={})

    assert recorded_grid(ckpt(dict(type='ShuffleMamba', arch='b'))) == (14, 14)
    assert recorded_grid(ckpt(dict(type='mmplugin_shufflemamba.ShuffleMambaAdapter',
                                   img_size=(512, 1024)))) == (32, 64)
    assert recorded_grid(ckpt(dict(type='ShuffleMamba', img_size=96, patch_size=8))) == \
        (12, 12)
    assert recorded_grid(ckpt(dict(type='ResNet', depth=50))) is None


def test_the_grid_of_the_backbone_at_a_prefix():
    text = Config(dict(model=dict(
        type='Distiller', backbone=dict(type='ResNet'),
        student=dict(type='ImageClassifier', backbone=dict(
            type='ShuffleMamba', img_size=(128, 512), patch_size=16))))).pretty_text
    ckpt = dict(meta=dict(cfg=text), state_dict={})
    assert recorded_grid(ckpt, 'student.backbone.') == (8, 32)
    assert recorded_grid(ckpt, 'module.student.backbone') == (8, 32)
    assert recorded_grid(ckpt) is None  # model.backbone is a ResNet
    assert recorded_grid(ckpt, 'teacher.backbone.') is None


class Segmentor(torch.nn.Module):

    def __init__(self, img_size, **kw):
        super().__init__()
        self.backbone = backbone(img_size, **kw)
        self.head = torch.nn.Linear(DIM, 2)


@pytest.mark.parametrize('tokens', [{}, dict(with_cls_token=True)])
def test_the_runner_loads_a_whole_checkpoint_from_its_recorded_grid(tmp_path, tokens):
    """MMEngine's runner hands the model the state dict alone: the fit check and the
    load (load_from, tools/test.py) read it from the grid the file records (a cls token
    in front, as its saved config says)."""
    from mmengine.runner.checkpoint import load_state_dict

    from mmplugin_shufflemamba.checkpoint import check_checkpoint_fit
    from mmplugin_shufflemamba.checkpoint.runner import BackboneLayoutHook

    rect = Segmentor((128, 512), **tokens)
    with torch.no_grad():
        rect.backbone.pos_embed.normal_()
    ckpt = mmengine_checkpoint(tmp_path / 'seg.pth', rect.backbone, (128, 512), **tokens)
    ckpt['state_dict'].update({'head.' + k: v for k, v in rect.head.state_dict().items()})
    ckpt['state_dict'] = OrderedDict(ckpt['state_dict'])  # as torch.load gives it
    ckpt['state_dict']._metadata = {'': dict(version=1)}
    cls = 1 if tokens else 0
    for img_size, grid in ((256, (16, 16)), (384, (24, 24))):
        model = Segmentor(img_size, **tokens)
        check_checkpoint_fit(model, ckpt)  # (384: 576 positions, not 256)

        class Runner:
            pass
        runner = Runner()
        runner.model = model
        sd = OrderedDict(ckpt['state_dict'])
        sd._metadata = ckpt['state_dict']._metadata
        loaded = dict(ckpt, state_dict=sd)
        BackboneLayoutHook().after_load_checkpoint(runner, loaded)
        assert loaded['state_dict']._metadata == {'': dict(version=1)}
        load_state_dict(model, loaded['state_dict'], strict=True)
        pos = rect.backbone.pos_embed.detach()
        torch.testing.assert_close(model.backbone.pos_embed.detach()[:, cls:], grid_resize(
            pos[:, cls:], (8, 32), grid))
        torch.testing.assert_close(model.backbone.pos_embed.detach()[:, :cls], pos[:, :cls])
        torch.testing.assert_close(model.head.weight, rect.head.weight, rtol=0, atol=0)
    assert set(ckpt['state_dict']) == set(loaded['state_dict'])
    assert ckpt['state_dict']['backbone.pos_embed'].shape[1] == 256 + cls  # not changed
