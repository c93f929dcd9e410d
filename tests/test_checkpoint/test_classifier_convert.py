"""tools/convert_checkpoint.py --to official | mmpretrain: a whole classifier between
the official / timm layout and mmpretrain's ImageClassifier, both ways, same logits."""
import argparse

import pytest
import timm
import torch
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint

import mmplugin_shufflemamba  # noqa: F401
from mmplugin_shufflemamba.checkpoint import CheckpointError, official_to_mmpretrain

from helpers.tools_convert import convert_main

TINY = dict(embed_dims=32, num_layers=2, img_size=32, patch_size=8, kernel='torch')


def classifier(tokens):
    import mmpretrain.models  # noqa: F401
    from mmpretrain.registry import MODELS
    bb = dict(type='ShuffleMamba', arch=dict(embed_dims=32, num_layers=2), img_size=32,
              patch_size=8, kernel='torch', out_cls=True, out_indices=(),
              norm_cfg=dict(type='RMSNorm', eps=1e-5), **tokens)
    in_channels = 32 if tokens.get('with_cls_token') else \
        tokens['num_registers'] * 32 // tokens['cls_reduce']
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(dict(type='ImageClassifier', backbone=bb,
                                 head=dict(type='LinearClsHead', num_classes=5,
                                           in_channels=in_channels))).eval()


@pytest.mark.parametrize('name,tokens', [
    ('shufflemamba_b_patch16_224', dict(with_cls_token=True)),
    ('shufflemamba_reg_b_patch16_224', dict(num_registers=4, cls_reduce=2)),
])
def test_official_to_mmpretrain_and_back(tmp_path, name, tokens):
    torch.manual_seed(0)
    timm_model = timm.create_model(name, num_classes=5, **TINY,
                                   **({} if 'with_cls_token' in tokens else
                                      dict(num_registers=4, cls_reduce=2))).eval()
    src = str(tmp_path / 'official.pth')
    torch.save(dict(model=timm_model.state_dict(), model_ema=None,
                    args=argparse.Namespace(model=name)), src)
    dst = str(tmp_path / 'mmpretrain.pth')
    convert_main([src, dst, '--to', 'mmpretrain'])
    model = classifier(tokens)
    load_checkpoint(model, dst, map_location='cpu', strict=True)  # what tools/test.py does
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x, mode='tensor'), timm_model(x))
    back = str(tmp_path / 'back.pth')
    convert_main([dst, back, '--to', 'official'])
    saved = torch.load(back, map_location='cpu', weights_only=False)
    assert saved['args'].model.startswith('shufflemamba')
    want = timm_model.state_dict()
    assert list(saved['model']) == list(want)
    for k, v in want.items():
        torch.testing.assert_close(saved['model'][k], v)


def test_backbone_only_checkpoints_do_not_convert_to_a_classifier(tmp_path):
    bb = timm.create_model('shufflemamba_b_patch16_224', num_classes=0, **TINY)
    src = str(tmp_path / 'features.pth')
    sd = {k: v for k, v in bb.state_dict().items()}
    torch.save(dict(model=sd, args=argparse.Namespace(model='shufflemamba_b_patch16_224')),
               src)
    with pytest.raises(CheckpointError, match='no classifier head'):
        convert_main([src, str(tmp_path / 'x.pth'), '--to', 'mmpretrain'])
    with pytest.raises(SystemExit):
        convert_main([src, str(tmp_path / 'x.pth'), '--to', 'official', '--img-size', '64'])


def test_wrong_format_for_a_classifier_names_the_fix(tmp_path):
    """A timm classifier's bare state dict read as this project's backbone layout is
    refused with the formats that read it."""
    model = timm.create_model('shufflemamba_b_patch16_224', num_classes=5, **TINY)
    src = str(tmp_path / 'timm_state_dict.pth')
    torch.save(model.state_dict(), src)
    with pytest.raises(CheckpointError, match='--format shufflemamba or --format reg'):
        convert_main([src, str(tmp_path / 'x.pth'), '--to', 'official',
                      '--format', 'mmplugin'])
    convert_main([src, str(tmp_path / 'x.pth'), '--to', 'official', '--format', 'shufflemamba'])
    saved = torch.load(str(tmp_path / 'x.pth'), map_location='cpu', weights_only=False)
    assert list(saved['model']) == list(model.state_dict())


@pytest.mark.parametrize('dst', ['same', 'link'])
def test_output_that_is_the_source_is_refused(tmp_path, dst, capsys):
    """Converting keeps only the weights: writing over the source (the same path, or a
    link to it) would lose the training checkpoint's optimizer, EMA and args."""
    model = timm.create_model('shufflemamba_b_patch16_224', num_classes=5, **TINY)
    src = tmp_path / 'checkpoint.pth'
    torch.save(dict(model=model.state_dict(), model_ema=None,
                    args=argparse.Namespace(model='shufflemamba_b_patch16_224')), src)
    before = src.read_bytes()
    out = src
    if dst == 'link':
        out = tmp_path / 'alias.pth'
        out.symlink_to(src)
    with pytest.raises(SystemExit):
        convert_main([str(out), str(src) if dst == 'link' else str(out)])
    assert 'is the source checkpoint' in capsys.readouterr().err
    assert src.read_bytes() == before


def test_to_official_keeps_the_raw_and_the_ema_weights(tmp_path):
    """The official layout holds both: ``model`` the raw weights, ``model_ema`` the EMA
    ones, each loading as such (use_ema); a source without EMA gives model_ema=None;
    --use-ema has nothing to choose."""
    torch.manual_seed(0)
    name = 'shufflemamba_b_patch16_224'
    raw, ema = (timm.create_model(name, num_classes=5, **TINY).state_dict() for _ in 'ab')
    # an MMEngine checkpoint as EMAHook leaves it: the EMA weights in 'state_dict', the
    # raw ones as the averaged model's 'module.' entries of 'ema_state_dict'
    src = str(tmp_path / 'mmpretrain.pth')
    torch.save(dict(state_dict=official_to_mmpretrain(ema), meta=dict(epoch=1),
                    ema_state_dict={'module.' + k: v for k, v in
                                    official_to_mmpretrain(raw).items()}), src)
    dst = str(tmp_path / 'official.pth')
    convert_main([src, dst, '--to', 'official', '--format', 'shufflemamba'])
    saved = torch.load(dst, map_location='cpu', weights_only=False)
    for entry, want in (('model', raw), ('model_ema', ema)):
        assert all(torch.equal(saved[entry][k], v) for k, v in want.items()), entry
    for use_ema, want in ((False, raw), (True, ema)):
        model = timm.create_model(name, num_classes=5, pretrained=True, use_ema=use_ema,
                                  pretrained_cfg_overlay=dict(file=dst), **TINY)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in want.items())
    with pytest.raises(SystemExit):
        convert_main([src, str(tmp_path / 'x.pth'), '--to', 'official', '--use-ema'])
    no_ema = str(tmp_path / 'no_ema.pth')
    torch.save(dict(model=raw, model_ema=None, args=argparse.Namespace(model=name)), no_ema)
    convert_main([no_ema, dst, '--to', 'official'])
    assert torch.load(dst, map_location='cpu', weights_only=False)['model_ema'] is None


def test_ema_weights_keep_their_label_through_conversions(tmp_path):
    """Weights read with --use-ema stay labelled 'ema' through every later conversion
    (which reads the converted file's one set without --use-ema); an official / timm
    file made from them holds them in both entries."""
    name = 'shufflemamba_b_patch16_224'
    torch.manual_seed(0)
    raw = timm.create_model(name, num_classes=5, **TINY).state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in raw.items()}
    src = str(tmp_path / 'official.pth')
    torch.save(dict(model=raw, model_ema=ema, args=argparse.Namespace(model=name)), src)

    def load(path):
        return torch.load(path, map_location='cpu', weights_only=False)

    mm = str(tmp_path / 'ema_mmpretrain.pth')
    assert convert_main([src, mm, '--to', 'mmpretrain', '--use-ema'])['weights'] == 'ema'
    official = str(tmp_path / 'ema_official.pth')
    assert convert_main([mm, official, '--to', 'official'])['weights'] == 'ema'
    saved = load(official)
    for entry in ('model', 'model_ema'):
        torch.testing.assert_close(saved[entry]['pos_embed'], ema['pos_embed'])
    again = str(tmp_path / 'again.pth')
    assert convert_main([official, again, '--to', 'mmpretrain'])['weights'] == 'ema'
    bb = str(tmp_path / 'backbone.pth')
    convert_main([official, bb])
    assert load(bb)['meta']['weights'] == 'ema'
    torch.testing.assert_close(load(bb)['state_dict']['layers.0.mixer.A_log'],
                               ema['layers.0.mixer.A_log'])

    # Control: the raw weights with their EMA pair.
    pair = str(tmp_path / 'pair.pth')
    assert convert_main([src, pair, '--to', 'official'])['weights'] == 'raw and ema'
    saved = load(pair)
    torch.testing.assert_close(saved['model']['pos_embed'], raw['pos_embed'])
    torch.testing.assert_close(saved['model_ema']['pos_embed'], ema['pos_embed'])
