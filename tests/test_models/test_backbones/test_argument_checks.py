"""Every argument of the public backbone / layer / classifier classes is range-checked at
construction, with a message that names it (tiny sizes, CPU)."""
import math

import pytest
import timm
import torch

import mmplugin_shufflemamba  # noqa: F401  (registers the timm models)
from mmplugin_shufflemamba import ShuffleMamba, ShuffleMambaAdapter
from mmplugin_shufflemamba.models.classifiers import ShuffleMambaClassifier
from mmplugin_shufflemamba.models.layers import (ConvFFN, DeformInputs, Extractor, Injector,
                                                 InteractionBlock, MSDeformAttn, PatchEmbed,
                                                 SpatialPriorModule, register_layout,
                                                 resize_pos_embed)
from mmplugin_shufflemamba.models.layers.adapter_modules import (MultiLevelDWConv,
                                                                 TokenUpsample2x)

BN = dict(type='BN', requires_grad=True)
D = 16


def tiny(**kw):
    cfg = dict(arch=dict(embed_dims=D, num_layers=2), img_size=32, patch_size=16,
               kernel='torch')
    cfg.update(kw)
    return ShuffleMamba(**cfg)


def tiny_adapter(**kw):
    cfg = dict(arch=dict(embed_dims=D, num_layers=4), img_size=32, deform_num_heads=2,
               conv_inplane=4, adapter_norm_cfg=BN, kernel='torch')
    cfg.update(kw)
    return ShuffleMambaAdapter(**cfg)


# ------------------------------------------------------------------ ShuffleMamba
@pytest.mark.parametrize('kw,exc,msg', [
    # stochastic rates
    (dict(drop_path_rate=1.5), ValueError, r'drop_path_rate must be in \[0, 1\), got 1.5'),
    (dict(drop_path_rate=-0.1), ValueError, r'drop_path_rate must be in \[0, 1\), got -0.1'),
    (dict(drop_path_rate=1.0), ValueError, r'drop_path_rate must be in \[0, 1\)'),
    (dict(drop_path_rate=float('nan')), ValueError, 'drop_path_rate must be in'),
    (dict(drop_path_rate='0.1'), TypeError, 'drop_path_rate must be a number'),
    (dict(drop_rate=1.0), ValueError, r'drop_rate must be in \[0, 1\), got 1.0'),
    (dict(drop_rate=-0.5), ValueError, 'drop_rate must be in'),
    (dict(shuffle_rate=1.5), ValueError, r'shuffle_rate must be in \[0, 1\], got 1.5'),
    (dict(shuffle_rate=-0.1), ValueError, r'shuffle_rate must be in \[0, 1\]'),
    (dict(shuffle_rate=None), TypeError, 'shuffle_rate must be a number'),
    # what --cfg-options model.backbone.init_cfg.checkpoint=... alone makes
    (dict(init_cfg=dict(checkpoint='x.pth')), ValueError,
     r"has no type: for pretrained weights give init_cfg=dict\(type='Pretrained'"),
    # patches and the position embedding grid
    (dict(patch_size=0), ValueError, 'patch_size must be >= 1, got 0'),
    (dict(patch_size=-16), ValueError, 'patch_size must be >= 1, got -16'),
    (dict(patch_size=16.0), TypeError, 'patch_size must be an int'),
    (dict(img_size=8), ValueError, r'img_size \(8, 8\) must be at least patch_size=16'),
    (dict(img_size=(32, 8)), ValueError, 'must be at least patch_size=16'),
    (dict(img_size=(32, 0)), ValueError, r'img_size\[1\] must be >= 1, got 0'),
    (dict(img_size=(32, 32, 32)), TypeError, 'img_size must be an int or a pair'),
    (dict(img_size='32'), TypeError, 'img_size must be an int or a pair'),
    (dict(img_size=40), ValueError, 'must be a multiple of patch_size 16'),
    # widths and depths
    (dict(embed_dims=0), ValueError, 'embed_dims must be positive, got 0'),
    (dict(num_layers=0), ValueError, 'num_layers must be positive, got 0'),
    (dict(num_layers=-2), ValueError, 'num_layers must be positive, got -2'),
    (dict(embed_dims=16.5), TypeError, 'embed_dims must be an int'),
    (dict(arch=dict(embed_dims=D, num_layers=2, depth=4)), ValueError,
     r"arch has unknown keys \['depth'\]"),
    (dict(in_channels=0), ValueError, 'in_channels must be >= 1, got 0'),
    # mixer sizes (what reaches BiMambaMixer)
    (dict(d_state=0), ValueError, 'd_state must be >= 1, got 0'),
    (dict(d_state=8.0), TypeError, 'd_state must be an int'),
    (dict(d_conv=0), ValueError, 'd_conv must be >= 1, got 0'),
    (dict(expand=0), ValueError, 'expand must be >= 1, got 0'),
    (dict(expand=0.5), ValueError, 'expand must be >= 1, got 0.5'),
    # classification / register tokens
    (dict(num_registers=-1), ValueError, 'num_registers must be >= 0, got -1'),
    (dict(num_registers=1.5), TypeError, 'num_registers must be an int'),
    (dict(num_registers=2, cls_reduce=3), ValueError, 'must divide embed_dims=16'),
    (dict(num_registers=2, cls_reduce=0), ValueError, 'cls_reduce must be an int >= 1'),
    (dict(with_cls_token='False'), TypeError, "with_cls_token must be True or False, got 'False'"),
    (dict(final_norm=None), TypeError, 'final_norm must be True or False'),
    (dict(out_cls=2), TypeError, 'out_cls must be True or False'),
    (dict(shuffle_cls='yes'), TypeError, 'shuffle_cls must be True or False'),
    (dict(shuffle_draw='gpu'), ValueError, "shuffle_draw must be one of \\('host', 'device'\\)"),
    (dict(with_cp='no'), TypeError, 'with_cp must be True or False'),
    # outputs, norms, modes, freezing
    (dict(out_indices=(2, )), ValueError, 'out_indices entry 2 is out of range for 2 blocks'),
    (dict(out_indices=-3), ValueError, 'out of range'),
    (dict(out_type='hidden'), ValueError, 'out_type must be one of'),
    (dict(interpolate_mode='cubic'), ValueError, "interpolate_mode must be one of .*'cubic'"),
    (dict(norm_cfg='LN'), TypeError, "norm_cfg must be a dict with a 'type'"),
    (dict(norm_cfg=dict(type='GN')), ValueError, 'norm_cfg'),
    (dict(kernel='triton'), ValueError, 'kernel must be one of'),
    (dict(frozen_stages=-2), ValueError, 'frozen_stages must be >= -1, got -2'),
    (dict(frozen_stages=3), ValueError, 'frozen_stages=3 exceeds num_layers=2'),
    (dict(frozen_stages=1.0), TypeError, 'frozen_stages must be an int'),
])
def test_shuffle_mamba_arguments(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        tiny(**kw)


def test_out_indices_take_any_integral_type():
    """numpy integers (as from np.arange or a config computed with numpy) are ints,
    as for every other int argument; bools are not."""
    np = pytest.importorskip('numpy')
    assert tiny(out_indices=[np.int64(0), np.int32(-1)]).out_indices == (0, 1)
    assert tiny(out_indices=np.int64(1)).out_indices == (1, )
    with pytest.raises(TypeError, match='out_indices entries must be ints, got True'):
        tiny(out_indices=[True])


def test_shuffle_mamba_valid_edge_values():
    # The smallest and largest accepted values build and run.
    m = tiny(drop_path_rate=0.0, drop_rate=0.0, shuffle_rate=1.0, img_size=16,
             d_state=1, d_conv=2, expand=1, frozen_stages=-1, with_cls_token=1)
    m.init_weights()
    assert m.drop_path.drop_prob == 0.0
    assert all(blk.drop_path.drop_prob == 0.0 for blk in m.layers)
    m.train()
    outs = m(torch.randn(2, 3, 32, 48))
    assert outs[0].shape == (2, D, 2, 3)
    outs[0].sum().backward()
    # drop_path_rate = 0 in training is the identity: train == eval without SLWS.
    m = tiny(drop_path_rate=0.0, out_indices=(0, 1))
    m.init_weights()
    x = torch.randn(2, 3, 32, 32)
    train = m.train()(x)
    with torch.no_grad():
        ev = m.eval()(x)
    for a, b in zip(train, ev):
        torch.testing.assert_close(a.detach(), b)
    # The largest drop-path probability below 1 keeps the block outputs finite.
    m = tiny(drop_path_rate=0.99, img_size=(32, 48), frozen_stages=2).train()
    assert all(torch.isfinite(o).all() for o in m(torch.randn(2, 3, 32, 48)))
    assert m.img_size == (32, 48)


def test_interpolate_modes_without_align_corners_resize():
    # 'nearest' / 'area' take no align_corners: resizing the position embedding works.
    for mode in ('nearest', 'area', 'bilinear'):
        m = tiny(interpolate_mode=mode).eval()
        with torch.no_grad():
            assert m(torch.randn(1, 3, 48, 64))[0].shape == (1, D, 3, 4)


# ------------------------------------------------------------------ adapter
@pytest.mark.parametrize('kw,exc,msg', [
    (dict(conv_inplane=0), ValueError, 'conv_inplane must be >= 1, got 0'),
    (dict(conv_inplane=4.0), TypeError, 'conv_inplane must be an int'),
    (dict(n_points=0), ValueError, 'n_points must be >= 1, got 0'),
    (dict(deform_num_heads=0), ValueError, 'deform_num_heads must be >= 1, got 0'),
    (dict(deform_num_heads=3), ValueError, 'deform_num_heads=3 must divide'),
    (dict(deform_ratio=0), ValueError, 'deform_ratio must be > 0, got 0'),
    (dict(deform_ratio=0.01), ValueError, r'deform_ratio=0.01 gives no value channels'),
    (dict(cffn_ratio=-0.25), ValueError, 'cffn_ratio must be > 0, got -0.25'),
    (dict(cffn_ratio=0.01), ValueError, 'cffn_ratio=0.01 gives a ConvFFN without hidden'),
    (dict(init_values=float('nan')), ValueError, 'init_values must be finite'),
    (dict(init_values='0'), TypeError, 'init_values must be a number'),
    (dict(with_cffn='False'), TypeError, 'with_cffn must be True or False'),
    (dict(add_backbone_feature=None), TypeError, 'add_backbone_feature must be True or'),
    (dict(use_extra_extractor='yes'), TypeError, 'use_extra_extractor must be True or'),
    (dict(adapter_norm_cfg='BN'), TypeError, "adapter_norm_cfg must be a dict with a 'type'"),
    (dict(interaction_indexes=3), TypeError, 'interaction_indexes must be a non-empty'),
    (dict(interaction_indexes=[]), TypeError, 'interaction_indexes must be a non-empty'),
    (dict(interaction_indexes=[[0, 1], [2, '3']]), ValueError, r'\[first, last\] pairs'),
    (dict(interaction_indexes=[[0, 1], [2, 4]]), ValueError, 'end at block 4'),
    (dict(interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 4]]), ValueError,
     'end at block 4'),
    (dict(arch=dict(embed_dims=D, num_layers=3)), ValueError, 'only 3'),
    (dict(drop_path_rate=1.5), ValueError, r'drop_path_rate must be in \[0, 1\), got 1.5'),
    (dict(shuffle_rate=2), ValueError, r'shuffle_rate must be in \[0, 1\]'),
    (dict(patch_size=0), ValueError, 'patch_size must be >= 1, got 0'),
    (dict(patch_size=8), ValueError, 'needs patch_size=16'),
    (dict(num_registers=2), TypeError, "does not take 'num_registers'"),
])
def test_adapter_arguments(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        tiny_adapter(**kw)


def test_adapter_valid_edge_values():
    m = tiny_adapter(drop_path_rate=0.0, init_values=-1e-6, n_points=1, cffn_ratio=0.0625,
                     deform_ratio=0.25, with_cffn=True, add_backbone_feature=False,
                     interaction_indexes=[[0, 3]]).eval()
    assert m.interactions[0].extractor.ffn.fc1.out_features == 1
    with torch.no_grad():
        outs = m(torch.randn(1, 3, 32, 32))
    assert [tuple(o.shape[-2:]) for o in outs] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=32, init_cfg={})  # none
    import numpy as np  # numpy integers (e.g. from np.linspace-built groups) are integers
    m = tiny_adapter(interaction_indexes=[[np.int64(0), 1], [2, np.int32(3)]],
                     add_backbone_feature=False)
    assert m.interaction_indexes == ((0, 1), (2, 3))
    # with_cffn=False: the ConvFFN ratio is not used, any positive value passes.
    assert not tiny_adapter(with_cffn=False, cffn_ratio=0.01).interactions[0].extractor \
        .with_cffn


# ------------------------------------------------------------------ adapter modules
@pytest.mark.parametrize('build,exc,msg', [
    (lambda: MSDeformAttn(D, 0, 3, 4), ValueError, 'deform_num_heads must be >= 1'),
    (lambda: MSDeformAttn(D, 2, 0, 4), ValueError, 'num_levels must be >= 1'),
    (lambda: MSDeformAttn(D, 2, 3, 0), ValueError, 'n_points must be >= 1'),
    (lambda: MSDeformAttn(0, 2, 3, 4), ValueError, 'embed_dims must be >= 1'),
    (lambda: MSDeformAttn(D, 2, 3, 4, ratio=-1.0), ValueError, 'deform_ratio must be > 0'),
    (lambda: MSDeformAttn(D, 3, 3, 4, ratio=0.5), ValueError,
     r'deform_num_heads=3 must divide .* = 8'),
    (lambda: Injector(D, 2, 4, init_values=float('inf')), ValueError,
     'init_values must be finite'),
    (lambda: Injector(D, 2, 4, with_cp='True'), TypeError, 'with_cp must be True or False'),
    (lambda: Extractor(D, 2, 4, drop_path=1.5), ValueError,
     r'drop_path must be in \[0, 1\), got 1.5'),
    (lambda: Extractor(D, 2, 4, drop_path=-0.1), ValueError, r'drop_path must be in \[0, 1\)'),
    (lambda: Extractor(D, 2, 4, cffn_ratio=0.0), ValueError, 'cffn_ratio must be > 0'),
    (lambda: Extractor(D, 2, 4, cffn_ratio=0.01), ValueError, 'without hidden channels'),
    (lambda: InteractionBlock(D, 2, 4, 1.0, 0.0, True, 0.25, drop_path=1.0), ValueError,
     r'drop_path must be in \[0, 1\)'),
    (lambda: InteractionBlock(D, 2, 4, 1.0, 0.0, True, 0.25, 0.0, extra_extractor='no'),
     TypeError, 'extra_extractor must be True or False'),
    (lambda: ConvFFN(D, 0), ValueError, 'hidden_dims must be >= 1, got 0'),
    (lambda: SpatialPriorModule(3, 0, D), ValueError, 'conv_inplane must be >= 1'),
    (lambda: SpatialPriorModule(0, 4, D), ValueError, 'in_channels must be >= 1'),
    (lambda: SpatialPriorModule(3, 4, D, norm_cfg=None), TypeError,
     'adapter_norm_cfg must be a dict'),
    (lambda: TokenUpsample2x(0), ValueError, 'channels must be >= 1'),
    (lambda: MultiLevelDWConv(-1), ValueError, 'channels must be >= 1'),
    (lambda: DeformInputs([(0, 2)], [(2, 2)]), ValueError, 'level shapes'),
    (lambda: DeformInputs([(2, 2)], []), ValueError, 'level shapes'),
])
def test_adapter_module_arguments(build, exc, msg):
    with pytest.raises(exc, match=msg):
        build()


# ------------------------------------------------------------------ pos-embed helpers
def test_pos_embed_helper_arguments():
    with pytest.raises(ValueError, match='patch_size must be >= 1, got 0'):
        PatchEmbed(3, D, 0)
    with pytest.raises(ValueError, match='embed_dims must be >= 1'):
        PatchEmbed(3, 0, 16)
    with pytest.raises(ValueError, match='in_channels must be >= 1'):
        PatchEmbed(0, D, 16)
    pe = torch.randn(1, 4 * 4, 8)
    with pytest.raises(ValueError, match=r'dst_shape\[0\] must be >= 1, got 0'):
        resize_pos_embed(pe, (4, 4), (0, 3))
    with pytest.raises(TypeError, match='src_shape must be an int or a pair'):
        resize_pos_embed(pe, (4, 4, 1), (2, 2))
    with pytest.raises(ValueError, match="mode must be one of .*'cubic'"):
        resize_pos_embed(pe, (4, 4), (2, 2), mode='cubic')
    with pytest.raises(ValueError, match='patch grid'):
        resize_pos_embed(pe, (3, 3), (2, 2))
    with pytest.raises(ValueError, match='num_patches must be >= 1, got 0'):
        register_layout(0, 2)
    with pytest.raises(ValueError, match='num_registers must be >= 0, got -1'):
        register_layout(4, -1)
    # valid edges
    assert resize_pos_embed(pe, (4, 4), (1, 1), mode='nearest').shape == (1, 1, 8)
    assert resize_pos_embed(pe, (4, 4), 2, mode='area').shape == (1, 4, 8)
    token_idx, patch_pos = register_layout(1, 0)
    assert token_idx.tolist() == [0] and patch_pos.tolist() == [0]


# ------------------------------------------------------------------ timm classifier
CLS = dict(embed_dims=D, num_layers=2, img_size=32, kernel='torch', with_cls_token=True)


@pytest.mark.parametrize('kw,exc,msg', [
    (dict(num_classes=-1), ValueError, 'num_classes must be >= 0, got -1'),
    (dict(num_classes=10.0), TypeError, 'num_classes must be an int'),
    (dict(in_chans=0), ValueError, 'in_chans must be >= 1, got 0'),
    (dict(in_channels=3), TypeError, "in_chans, not in_channels"),
    (dict(drop_path_rate=1.5), ValueError, r'drop_path_rate must be in \[0, 1\), got 1.5'),
    (dict(drop_rate=-0.1), ValueError, r'drop_rate must be in \[0, 1\)'),
    (dict(shuffle_rate=1.5), ValueError, r'shuffle_rate must be in \[0, 1\]'),
    (dict(patch_size=0), ValueError, 'patch_size must be >= 1'),
    (dict(with_cls_token='True'), TypeError, 'with_cls_token must be True or False'),
    (dict(with_cls_token=False, num_registers='2'), TypeError,
     'num_registers must be an int'),
])
def test_classifier_arguments(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        ShuffleMambaClassifier(**dict(CLS, **kw))


def test_classifier_through_timm_and_edges():
    with pytest.raises(ValueError, match=r'drop_path_rate must be in \[0, 1\)'):
        timm.create_model('shufflemamba_b_patch16_224', embed_dims=D, num_layers=2,
                          img_size=32, drop_path_rate=-0.1)
    m = timm.create_model('shufflemamba_b_patch16_224', embed_dims=D, num_layers=2,
                          img_size=32, num_classes=0, drop_path_rate=0.0, kernel='torch')
    assert isinstance(m.head, torch.nn.Identity)
    with pytest.raises(ValueError, match='num_classes must be >= 0, got -3'):
        m.reset_classifier(-3)
    m.reset_classifier(4)
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    assert math.isclose(m.drop_path.drop_prob, 0.0)


def test_stock_mmseg_config_pretrained_names_the_fix(tmp_path):
    """A stock mmseg config's ``model.pretrained`` reaches the backbone as ``pretrained``:
    refused with the fix; with ``pretrained=None`` the README's swap builds and runs."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg_file = tmp_path / 'swap.py'
    cfg_file.write_text(
        "_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']\n"
        "custom_imports = dict(imports=['mmplugin_shufflemamba'], "
        "allow_failed_imports=False)\n"
        "norm_cfg = dict(type='BN', requires_grad=True)\n"
        "model = dict(backbone=dict(_delete_=True, type='ShuffleMamba', "
        "arch=dict(embed_dims=32, num_layers=4), img_size=32, kernel='torch', "
        "out_indices=(0, 1, 2, 3)),\n"
        "    decode_head=dict(in_channels=[32] * 4, channels=16, norm_cfg=norm_cfg),\n"
        "    auxiliary_head=dict(in_channels=32, channels=16, norm_cfg=norm_cfg))\n")
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.model.pretrained  # mmseg's ResNet weights
    with DefaultScope.overwrite_default_scope('mmseg'):
        with pytest.raises(TypeError, match='model.pretrained=None'):
            MODELS.build(cfg.model)
        cfg = Config.fromfile(str(cfg_file))  # mmseg wrote it into the backbone's dict
        cfg.model.pretrained = None
        model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), mode='tensor')
    assert out.shape == (1, 150, 4, 4)  # the logits of the ADE20K classes, stride 16


@pytest.mark.parametrize('build,kw,words', [
    (tiny, dict(drop_path=0.2), ["ShuffleMamba got unknown argument: 'drop_path' (did you "
                                 "mean 'drop_path_rate'"]),
    (tiny, dict(drop_path=0.2, shufle_rate=0.5),
     ["got unknown arguments: 'drop_path' (did you", "'shufle_rate' (did you mean "
      "'shuffle_rate'"]),
    (tiny, dict(out_indice=[1]), ["'out_indice' (did you mean 'out_indices'?)"]),
    (tiny_adapter, dict(interaction_index=[[0, 3]]),
     ["ShuffleMambaAdapter got unknown argument", "did you mean 'interaction_indexes'"]),
    # no near name: the accepted ones are listed
    (tiny, dict(zzz=1), ["'zzz'.", 'It takes ', 'drop_path_rate', 'shuffle_rate']),
])
def test_unknown_arguments_are_named_with_the_nearest(build, kw, words):
    """A misspelt argument is an ArgumentTypeError naming it and the nearest accepted
    names (not Python's bare 'unexpected keyword argument' from inside the encoder)."""
    from mmplugin_shufflemamba.errors import ArgumentTypeError
    with pytest.raises(ArgumentTypeError) as info:
        build(**kw)
    for word in words:
        assert word in str(info.value)
    # the names refused for a reason are not offered
    assert 'tokens' not in str(info.value).replace('_tokens', '')


def test_classifier_unknown_arguments_are_named():
    from mmplugin_shufflemamba.errors import ArgumentTypeError
    with pytest.raises(ArgumentTypeError, match="'shuffle_rat' \\(did you mean 'shuffle_rate'"):
        ShuffleMambaClassifier(arch=dict(embed_dims=D, num_layers=2), with_cls_token=True,
                               shuffle_rat=0.1)
