"""Classifier state-dict layouts: mmpretrain's ImageClassifier (``backbone.*`` +
``head.fc.*``) <-> the official / timm layout (backbone keys at the top + ``head.*``),
and the loader's round trips between classifiers and ShuffleMamba backbones."""
import argparse

import pytest
import torch
import torch.nn.functional as F

import mmpretrain.models  # noqa: F401  (registers ImageClassifier, LinearClsHead)
import mmplugin_shufflemamba  # noqa: F401  (registers ShuffleMamba, the timm models)
from mmplugin_shufflemamba import ShuffleMamba
from mmplugin_shufflemamba.checkpoint import (CheckpointError, convert_to_backbone,
                                              is_mmpretrain_classifier,
                                              load_pretrained_backbone,
                                              mmpretrain_to_official,
                                              official_to_mmpretrain)

from helpers.official_reference import make_official_state_dict

D = 32
RMS = dict(type='RMSNorm', eps=1e-5)
PLAIN = dict(with_cls_token=True)
REG = dict(num_registers=4, cls_reduce=2)


def backbone_cfg(img_size=32, **kw):
    cfg = dict(type='ShuffleMamba', arch=dict(embed_dims=D, num_layers=2), img_size=img_size,
               kernel='torch', norm_cfg=RMS, out_cls=True, out_indices=())
    cfg.update(kw)
    return cfg


def classifier_cfg(tokens, img_size=32, num_classes=5):
    bb = backbone_cfg(img_size, **tokens)
    in_channels = D if tokens.get('with_cls_token') else \
        tokens['num_registers'] * D // tokens.get('cls_reduce', 1)
    return dict(type='ImageClassifier', backbone=bb,
                head=dict(type='LinearClsHead', num_classes=num_classes,
                          in_channels=in_channels))


def build_classifier(tokens, img_size=32, seed=0, **kw):
    """An mmpretrain ImageClassifier built from its config, with random weights."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    clf = MODELS.build(dict(classifier_cfg(tokens, img_size), **kw))
    assert type(clf.backbone) is ShuffleMamba
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in clf.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return clf.eval()


def build_timm(tokens, img_size=32, num_classes=5):
    import timm
    name = ('shufflemamba_b_patch16_224' if tokens.get('with_cls_token') else
            'shufflemamba_reg_b_patch16_224')
    kw = dict(embed_dims=D, num_layers=2, img_size=img_size, num_classes=num_classes,
              kernel='torch')
    if not tokens.get('with_cls_token'):
        kw.update(tokens)
    return timm.create_model(name, **kw).eval()


def logits(clf, x):
    with torch.no_grad():
        return clf(x, mode='tensor')


def pre_logits(clf, x):
    with torch.no_grad():
        return clf.head.pre_logits(clf.extract_feat(x))


def cfg_text(tokens, img_size=32):
    """``meta['cfg']`` as MMEngine's runner writes it (``Config.pretty_text``)."""
    from mmengine.config import Config
    return Config(dict(model=classifier_cfg(tokens, img_size))).pretty_text


def save_mmengine(path, clf, meta):
    torch.save(dict(meta=meta, state_dict=clf.state_dict(),
                    message_hub=dict(log_scalars={})), path)
    return str(path)


# ------------------------------------------------------------------ the key maps
def assert_same_state_dict(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k] is b[k] or torch.equal(a[k], b[k]), k


@pytest.mark.parametrize('fmt', ['shufflemamba', 'reg'])
def test_maps_are_inverse(fmt):
    official = make_official_state_dict(fmt=fmt)
    mm = official_to_mmpretrain(official)
    assert is_mmpretrain_classifier(mm) and not is_mmpretrain_classifier(official)
    assert {k for k in mm if not k.startswith('backbone.')} == {'head.fc.weight',
                                                                'head.fc.bias'}
    assert mm['backbone.cls_token'] is official['cls_token']
    assert_same_state_dict(mmpretrain_to_official(mm), official)
    clf = build_classifier(PLAIN if fmt == 'shufflemamba' else REG)
    sd = clf.state_dict()
    assert is_mmpretrain_classifier(sd)
    assert_same_state_dict(official_to_mmpretrain(mmpretrain_to_official(sd)), sd)


@pytest.mark.parametrize('extra', ['neck.fc.weight', 'head.layers.0.weight',
                                   'head.pre_logits.weight', 'data_preprocessor.mean'])
def test_unknown_keys_are_named(extra):
    sd = official_to_mmpretrain(make_official_state_dict())
    sd[extra] = torch.zeros(2)
    with pytest.raises(CheckpointError, match='no official counterpart') as e:
        mmpretrain_to_official(sd)
    assert repr(extra) in str(e.value)


def test_data_preprocessor_adds_no_keys():
    clf = build_classifier(PLAIN, data_preprocessor=dict(
        type='ClsDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
        to_rgb=True))
    mmpretrain_to_official(clf.state_dict())  # no error


@pytest.mark.parametrize('tokens', [PLAIN, REG], ids=['plain', 'reg'])
def test_mmpretrain_classifier_is_the_timm_classifier(tokens):
    img_size = 32 if tokens is PLAIN else 64
    clf = build_classifier(tokens, img_size)
    tm = build_timm(tokens, img_size)
    official = mmpretrain_to_official(clf.state_dict())
    ref = tm.state_dict()
    assert set(official) == set(ref)
    assert {k: v.shape for k, v in official.items()} == {k: v.shape for k, v in ref.items()}
    # timm (official layout) -> mmpretrain: strict load, same logits
    with torch.no_grad():
        for p in tm.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    result = clf.load_state_dict(official_to_mmpretrain(tm.state_dict()), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 3, img_size, img_size + 16)
    with torch.no_grad():
        expected = tm(x)
        assert torch.equal(pre_logits(clf, x), tm.forward_head(tm.forward_features(x),
                                                               pre_logits=True))
    assert torch.equal(logits(clf, x), expected)
    # and back: mmpretrain -> official loads strictly into the timm model
    tm2 = build_timm(tokens, img_size)
    tm2.load_state_dict(mmpretrain_to_official(clf.state_dict()), strict=True)
    with torch.no_grad():
        assert torch.equal(tm2(x), expected)


# ------------------------------------------------------------------ loader round trips
def test_mmengine_classifier_into_dense_backbone(tmp_path):
    clf = build_classifier(PLAIN)
    text = cfg_text(PLAIN)
    assert "type='ShuffleMamba'" in text and 'with_cls_token=True' in text
    path = save_mmengine(tmp_path / 'epoch_3.pth', clf, dict(epoch=3, cfg=text))
    src = clf.state_dict()
    dense = ShuffleMamba(arch=dict(embed_dims=D, num_layers=2), img_size=32, kernel='torch',
                         norm_cfg=RMS, out_indices=(0, 1))
    summary = load_pretrained_backbone(dense, path)
    assert summary['format'] == 'shufflemamba' and summary['entry'] == 'state_dict'
    assert summary['checkpoint_tokens'] == 1 and summary['kept_tokens'] == 0
    assert set(summary['dropped']) == {'head.weight', 'head.bias'}
    assert not hasattr(dense, 'cls_token')
    assert torch.equal(dense.pos_embed, src['backbone.pos_embed'][:, 1:])
    for k, v in dense.state_dict().items():
        if k != 'pos_embed':
            assert torch.equal(v, src['backbone.' + k]), k
    # another resolution: the patch part resized, the cls position dropped
    big = ShuffleMamba(arch=dict(embed_dims=D, num_layers=2), img_size=64, kernel='torch',
                       norm_cfg=RMS)
    summary = load_pretrained_backbone(big, path)
    assert summary['grid'] == (2, 2) and summary['target_grid'] == (4, 4)
    grid = src['backbone.pos_embed'][:, 1:].reshape(1, 2, 2, D).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(4, 4), mode='bicubic',
                             align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(big.pos_embed, expected)


@pytest.mark.parametrize('img_size', [32, 64])
def test_mmengine_classifier_into_cls_backbone(tmp_path, img_size):
    clf = build_classifier(PLAIN)
    path = save_mmengine(tmp_path / 'epoch_3.pth', clf, dict(epoch=3, cfg=cfg_text(PLAIN)))
    m = ShuffleMamba(arch=dict(embed_dims=D, num_layers=2), img_size=img_size,
                     kernel='torch', norm_cfg=RMS, with_cls_token=True, out_cls=True,
                     init_cfg=dict(type='Pretrained', checkpoint=path))
    m.init_weights()
    m.eval()
    src = clf.state_dict()
    assert torch.equal(m.cls_token, src['backbone.cls_token'])
    assert torch.equal(m.pos_embed[:, :1], src['backbone.pos_embed'][:, :1])
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        out = m(x)
    assert len(out) == 2 and out[0].shape == (2, D, img_size // 16, img_size // 16)
    if img_size == 32:
        assert torch.equal(out[-1], pre_logits(clf, x))
        assert torch.equal(out[-1] @ src['head.fc.weight'].t() + src['head.fc.bias'],
                           logits(clf, x))
    else:  # pos_embed resized at load == resized at run time by the classifier
        torch.testing.assert_close(out[-1], pre_logits(clf, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('meta', [
    dict(epoch=3),
    dict(epoch=3, cfg="model = dict(backbone=dict(type='ShuffleMamba', out_indices=(3, )))"),
    dict(epoch=3, cfg="model = dict(backbone=dict(type='VisionTransformer', "
                      "with_cls_token=True))"),
], ids=['no-cfg', 'cfg-without-with_cls_token', 'cfg-of-another-backbone'])
def test_one_cls_token_without_evidence_asks_for_ckpt_format(tmp_path, meta):
    clf = build_classifier(PLAIN)
    path = save_mmengine(tmp_path / 'epoch_3.pth', clf, meta)
    m = ShuffleMamba(arch=dict(embed_dims=D, num_layers=2), img_size=32, kernel='torch',
                     norm_cfg=RMS, with_cls_token=True, out_cls=True)
    with pytest.raises(CheckpointError, match="cannot tell where the cls token sits.*"
                       "ckpt_format='shufflemamba'") as e:
        load_pretrained_backbone(m, path)
    assert 'epoch_3.pth' in str(e.value)
    # the user's answer loads it
    assert load_pretrained_backbone(m, path, ckpt_format='shufflemamba')['format'] == \
        'shufflemamba'
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m.eval()(x)[-1], pre_logits(clf, x))


@pytest.mark.parametrize('target', ['reduce', 'no-reduce', 'dense'])
def test_reg_classifier_round_trip(tmp_path, target):
    clf = build_classifier(REG, img_size=64)
    path = save_mmengine(tmp_path / 'reg.pth', clf, dict(epoch=1, cfg=cfg_text(REG, 64)))
    src = clf.state_dict()
    kw = dict(arch=dict(embed_dims=D, num_layers=2), img_size=64, kernel='torch',
              norm_cfg=RMS)
    if target == 'reduce':
        kw.update(REG, out_cls=True)
    elif target == 'no-reduce':
        kw.update(num_registers=4, out_cls=True)
    m = ShuffleMamba(**kw)
    if target == 'no-reduce':  # the file's feature is reduced by its neck: asked which
        with pytest.raises(CheckpointError, match='build it with cls_reduce=2, or without '
                           'out_cls.*without --keep-neck'):
            load_pretrained_backbone(m, path)
        from helpers.tools_convert import convert_main
        convert_main([path, str(tmp_path / 'no_neck.pth'), '--num-registers', '4'])
        path = str(tmp_path / 'no_neck.pth')
    summary = load_pretrained_backbone(m, path)
    assert summary['checkpoint_tokens'] == 4
    neck = {'neck.weight', 'norm_neck.weight'}
    if target == 'reduce':
        assert not neck & set(summary['dropped'])
        assert torch.equal(m.neck.weight, src['backbone.neck.weight'])
        assert torch.equal(m.norm_neck.weight, src['backbone.norm_neck.weight'])
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(m.eval()(x)[-1], pre_logits(clf, x))
    else:  # (the converter dropped the neck of the no-reduce target's file)
        assert neck <= set(summary['dropped']) or target == 'no-reduce'
        assert not hasattr(m, 'neck')
    if target == 'no-reduce':
        assert torch.equal(m.cls_token, src['backbone.cls_token'])
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert m.eval()(x)[-1].shape == (1, 4 * D)
    if target == 'dense':
        assert summary['kept_tokens'] == 0 and not hasattr(m, 'cls_token')
        assert torch.equal(m.pos_embed, src['backbone.pos_embed'])


def test_official_reg_checkpoint_keeps_its_neck(tmp_path):
    sd = make_official_state_dict(fmt='reg', registers=3, rms_norm=True, dim=D, depth=2)
    out, summary = convert_to_backbone(sd, 'reg', num_registers=3, keep_neck=True)
    assert torch.equal(out['neck.weight'], sd['neck.weight'])
    assert set(summary['dropped']) == {'head.weight', 'head.bias'}
    out, summary = convert_to_backbone(sd, 'reg', num_registers=3)
    assert 'neck.weight' not in out and 'neck.weight' in summary['dropped']


def test_convert_to_backbone_with_cls_token():
    sd = make_official_state_dict(dim=D, depth=2, grid=4)
    out, summary = convert_to_backbone(sd, 'shufflemamba', with_cls_token=True,
                                       patch_resolution=(4, 4))
    assert torch.equal(out['pos_embed'], sd['pos_embed'])
    assert torch.equal(out['cls_token'], sd['cls_token'])
    assert summary['kept_tokens'] == 1 and 'pos_embed_cls' not in out
    out, _ = convert_to_backbone(sd, 'shufflemamba', with_cls_token=True,
                                 patch_resolution=(2, 3))
    assert out['pos_embed'].shape == (1, 1 + 6, D)
    assert torch.equal(out['pos_embed'][:, :1], sd['pos_embed'][:, :1])
    out, _ = convert_to_backbone(sd, 'shufflemamba')
    assert 'cls_token' not in out and torch.equal(out['pos_embed'], sd['pos_embed'][:, 1:])


# --------------------------------------------------------- what cannot be loaded
def cls_backbone(**kw):
    return ShuffleMamba(arch=dict(embed_dims=D, num_layers=3), img_size=64, kernel='torch',
                        with_cls_token=True, **kw)


def test_vim_checkpoint_into_cls_backbone_is_an_error(tmp_path):
    sd = make_official_state_dict(fmt='vim', dim=D, depth=3)
    args = argparse.Namespace(
        model='vim_small_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok')
    torch.save(dict(model=sd, model_ema=None, args=args), tmp_path / 'vim.pth')
    with pytest.raises(CheckpointError, match="'vim' checkpoint's cls token sits in the "
                       'middle.*with_cls_token=False'):
        load_pretrained_backbone(cls_backbone(), str(tmp_path / 'vim.pth'))


def test_checkpoint_without_cls_token_into_cls_backbone_is_an_error(tmp_path):
    dense = ShuffleMamba(arch=dict(embed_dims=D, num_layers=3), img_size=64, kernel='torch')
    torch.save(dict(meta=dict(epoch=1), state_dict={f'backbone.{k}': v for k, v in
                                                    dense.state_dict().items()}),
               tmp_path / 'dense.pth')
    with pytest.raises(CheckpointError, match='checkpoint has no cls token: build the '
                       'backbone with with_cls_token=False'):
        load_pretrained_backbone(cls_backbone(), str(tmp_path / 'dense.pth'))


def test_registers_into_cls_backbone_is_an_error(tmp_path):
    sd = make_official_state_dict(fmt='reg', registers=3, dim=D, depth=3)
    torch.save(dict(model=sd, model_ema=None,
                    args=argparse.Namespace(model='mambar_base_patch16_224')),
               tmp_path / 'reg.pth')
    with pytest.raises(CheckpointError, match='3 register tokens .*num_registers=3 instead'):
        load_pretrained_backbone(cls_backbone(), str(tmp_path / 'reg.pth'))
    with pytest.raises(CheckpointError, match='with_cls_token=True'):
        convert_to_backbone(sd, 'reg', with_cls_token=True)
