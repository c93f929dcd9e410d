"""Every published ImageNet checkpoint of the family loads, as published, into the
backbone of the config the weights table names: a file in the family's layout (its
keys and shapes at the real size, its factory name in ``args.model``, the raw weights
in ``model`` beside ``model_ema``) is built here from that family's classifier layout
and loaded through the config's ``init_cfg``."""
import argparse
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from mmplugin_shufflemamba import ShuffleMamba
from mmplugin_shufflemamba.models.archs import ARCHS, PUBLISHED_WEIGHTS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SMALL = [n for n, w in PUBLISHED_WEIGHTS.items() if ARCHS[w['arch']]['embed_dims'] <= 384]


def published_file(path, name, info, grid=14, seed=0):
    """The family's classifier state dict (224 px, patch 16) saved as the official
    training scripts save it."""
    dims = ARCHS[info['arch']]['embed_dims']
    torch.manual_seed(seed)
    layout = info['layout']
    src = ShuffleMamba(arch=info['arch'], img_size=grid * 16, kernel='torch',
                       norm_cfg=dict(type=info['norm']),
                       with_cls_token=layout in ('shufflemamba', 'videomamba'),
                       num_registers=0 if layout in ('shufflemamba', 'videomamba')
                       else info['registers'],
                       cls_reduce=info['cls_reduce'])
    for p in src.parameters():
        nn.init.normal_(p, std=0.02)
    sd = dict(src.state_dict())
    if layout == 'vim':  # one cls token in the middle, its position inside pos_embed
        n = grid * grid
        pos = sd.pop('pos_embed_cls')
        sd['pos_embed'] = torch.cat([sd['pos_embed'][:, :n // 2], pos,
                                     sd['pos_embed'][:, n // 2:]], dim=1)
    feat = dims if layout != 'reg' else dims * info['registers'] // info['cls_reduce']
    sd['head.weight'], sd['head.bias'] = torch.randn(1000, feat), torch.randn(1000)
    if layout == 'videomamba':  # VideoMamba's image files hold only the weights
        if info['arch'] in ('m', 'b'):  # self-distilled students: their distill_head
            sd['distill_head.0.weight'] = torch.ones(dims)
            sd['distill_head.1.weight'] = torch.randn(dims, dims)
            sd['distill_head.1.bias'] = torch.randn(dims)
        torch.save(dict(model=sd), path)
    else:
        torch.save(dict(model=sd, model_ema=None, epoch=299,
                        args=argparse.Namespace(model=name)), path)
    return sd


def _check(tmp_path, name):
    info = PUBLISHED_WEIGHTS[name]
    cfg = Config.fromfile(osp.join(ROOT, info['config']))
    path = str(tmp_path / f'{name}.pth')
    sd = published_file(path, name, info)
    bb = dict(cfg.model.backbone)
    bb.pop('type')
    bb['init_cfg'] = dict(type='Pretrained', checkpoint=path)
    if info['layout'] == 'videomamba':
        bb['init_cfg']['ckpt_format'] = 'videomamba'
    model = ShuffleMamba(**bb)
    model.init_weights()
    assert model.norm_f.__class__.__name__ == ('RMSNorm' if info['norm'] == 'RMSNorm'
                                               else 'LayerNorm')
    for k in ('patch_embed.proj.weight', 'layers.3.mixer.A_b_log', 'layers.3.mixer.in_proj.weight',
              'layers.0.norm.weight', 'norm_f.weight'):
        torch.testing.assert_close(model.state_dict()[k], sd[k], rtol=0, atol=0, msg=k)
    # VideoMamba sums the two directions, the backbone averages them
    scale = 2 if info['layout'] == 'videomamba' else 1
    torch.testing.assert_close(model.layers[2].mixer.out_proj.weight,
                               sd['layers.2.mixer.out_proj.weight'] * scale, rtol=0, atol=0)
    assert model.pos_embed.shape[1] == 196  # the 14 x 14 grid of img_size 224
    assert cfg.model.decode_head.in_channels == [model.embed_dims] * 4


@pytest.mark.parametrize('name', SMALL)
def test_published_weights_load_into_their_config(tmp_path, name):
    _check(tmp_path, name)


@pytest.mark.slow
@pytest.mark.parametrize('name', [n for n in PUBLISHED_WEIGHTS if n not in SMALL])
def test_published_weights_load_into_their_config_full_size(tmp_path, name):
    _check(tmp_path, name)


def test_every_published_config_exists_and_names_its_arch():
    for name, info in PUBLISHED_WEIGHTS.items():
        cfg = Config.fromfile(osp.join(ROOT, info['config']))
        assert cfg.model.backbone.arch == info['arch'], name
        assert cfg.model.backbone.norm_cfg['type'] == info['norm'], name
