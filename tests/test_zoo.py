"""Model zoo: the plain rows of the paper's Table 3 (UperNet on ADE20K) as configs.

Every config is checked against the paper's recipe kept here (so a config cannot
drift), each row's official checkpoint layout loads into its config's backbone with
only the path set, the segmentors have the paper's parameter counts (counted from 4- and
5-block builds at full width; the full-size builds are slow tests),
multi-scale + flip testing runs through tools/test.py --tta, and the FLOPs counter
agrees with a count by hand.
"""
import argparse
import ast
import copy
import json
import os
import os.path as osp
import re
import subprocess
import sys
from collections import Counter

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmplugin_shufflemamba  # noqa: F401
from mmplugin_shufflemamba import ShuffleMamba
from mmplugin_shufflemamba.checkpoint import CheckpointError
from mmplugin_shufflemamba.utils.flops import (causal_conv1d_flops, count_flops,
                                               deform_attn_flops, model_complexity,
                                               selective_scan_flops)
from mmplugin_shufflemamba.utils.runtime import _replace_syncbn

from helpers.official_reference import make_official_state_dict, official_features
from helpers.tools import load_tool

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# Paper Table 3 (params of the whole segmentor in M, GFLOPs, mIoU SS / MS) and the
# official downstream recipe per row (REFERENCE.md); `ckpt` is the layout of the row's
# ImageNet checkpoint: official factory name, format, registers, norm.
ZOO = {
    'upernet_shufflemamba_m.py': dict(
        arch='m', depth=32, dims=576, norm='LN', lr=6e-5, drop_path=0.3,
        out_indices=(7, 15, 23, 31), params=106, gflops=384, miou=(47.2, 48.2),
        base='./upernet_shufflemamba_b.py',
        ckpt=dict(name='mambar_middle_patch16_224', fmt='shufflemamba', registers=0)),
    'upernet_shufflemamba_b.py': dict(
        arch='b', depth=24, dims=768, norm='RMSNorm', lr=6e-5, drop_path=0.2,
        out_indices=(5, 11, 17, 23), params=131, gflops=477, miou=(47.0, 48.3),
        base='mmseg::',
        ckpt=dict(name='mambar_base_patch16_224', fmt='shufflemamba', registers=0)),
    'upernet_shufflemamba_reg-b.py': dict(
        arch='b', depth=24, dims=768, norm='RMSNorm', lr=6e-5, drop_path=0.2,
        out_indices=(5, 11, 17, 23), params=131, gflops=477, miou=(48.2, 48.9),
        base='./upernet_shufflemamba_b.py',
        ckpt=dict(name='mambar_base_patch16_224', fmt='reg', registers=12)),
    'upernet_shufflemamba_l1.py': dict(
        arch='l1', depth=40, dims=1024, norm='RMSNorm', lr=3e-5, drop_path=0.2, clip=3.0,
        out_indices=(9, 19, 29, 39), params=320, gflops=1168, miou=(48.8, 49.9),
        base='./upernet_shufflemamba_b.py',
        ckpt=dict(name='mambar_large_patch16_224_40', fmt='shufflemamba', registers=0)),
    'upernet_shufflemamba_reg-l2.py': dict(
        arch='l2', depth=48, dims=1024, norm='RMSNorm', lr=3e-5, drop_path=0.3, clip=5.0,
        out_indices=(11, 23, 35, 47), params=376, gflops=1373, miou=(49.4, 50.1),
        base='./upernet_shufflemamba_l1.py',
        ckpt=dict(name='mambar_large_patch16_224', fmt='reg', registers=16)),
}
QUICKSTART = osp.join(ROOT, 'configs', 'quickstart',
                      'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')


def load(name):
    return Config.fromfile(osp.join(ROOT, 'configs', name))


def own_settings(name):
    """What the config file assigns itself, before mmengine merges its ``_base_``: its
    top-level names and, for ``model = dict(...)``, the nested keys it sets, read from the
    code with ``ast`` (comments play no part)."""
    with open(osp.join(ROOT, 'configs', name)) as f:
        tree = ast.parse(f.read())

    def keys(node):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'dict':
            return {k.arg: keys(k.value) for k in node.keywords if k.arg}
        return node

    return {t.id: keys(node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def seg_models():
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return MODELS


# ------------------------------------------------------------------------- recipe
@pytest.mark.parametrize('name', sorted(ZOO))
def test_zoo_config_follows_the_paper_recipe(name):
    row = ZOO[name]
    cfg = load(name)
    bb = cfg.model.backbone
    assert bb.type == 'ShuffleMamba'
    assert ShuffleMamba.arch_zoo[bb.arch] == dict(embed_dims=row['dims'],
                                                  num_layers=row['depth'])
    assert 'embed_dims' not in bb and 'num_layers' not in bb
    assert dict(bb.norm_cfg) == dict(type=row['norm'], eps=1e-5)
    assert bb.drop_path_rate == row['drop_path']
    assert tuple(bb.out_indices) == row['out_indices']
    # evenly spaced levels ending at the last block
    step = row['depth'] // 4
    assert tuple(bb.out_indices) == tuple(step * (i + 1) - 1 for i in range(4))
    assert (bb.img_size, bb.patch_size, bb.shuffle_rate, bb.num_registers) == (224, 16, 0.0, 0)
    assert (bb.out_type, bb.final_norm) == ('mixer', True)
    assert bb.get('init_cfg') is None  # only the checkpoint path is for the user to set
    # UperNet without a neck, 512 channels; FCN auxiliary head on the last level
    model = cfg.model
    assert model.type == 'EncoderDecoder' and model.get('neck') is None
    assert model.decode_head.type == 'UPerHead' and model.decode_head.channels == 512
    assert list(model.decode_head.in_channels) == [row['dims']] * 4
    assert list(model.decode_head.in_index) == [0, 1, 2, 3]
    assert model.decode_head.num_classes == 150
    aux = model.auxiliary_head
    assert (aux.type, aux.in_channels, aux.in_index, aux.num_classes) == (
        'FCNHead', row['dims'], 3, 150)
    assert model.test_cfg.mode == 'slide'
    assert tuple(model.test_cfg.crop_size) == (512, 512)
    assert tuple(model.test_cfg.stride) == (341, 341)
    assert tuple(model.data_preprocessor.size) == (512, 512)
    # AdamW lr per size, wd 0.01; 1500-iteration linear warmup then poly to 160k
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay, tuple(opt.betas)) == (
        'AdamW', row['lr'], 0.01, (0.9, 0.999))
    # no layer decay in the official runs: MMEngine's constructor reading the no-decay mark
    assert cfg.optim_wrapper.constructor == 'ShuffleMambaOptimWrapperConstructor'
    assert 'paramwise_cfg' not in cfg.optim_wrapper
    # gradient clipping only in the official large configs (L1: 3.0, Reg-L2: 5.0)
    clip = cfg.optim_wrapper.get('clip_grad')
    assert (clip and dict(clip)) == (row.get('clip') and dict(max_norm=row['clip']))
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end, warmup.by_epoch) == (
        'LinearLR', 0, 1500, False)
    assert warmup.start_factor <= 1e-3
    assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end, poly.by_epoch) == (
        'PolyLR', 1.0, 0.0, 1500, 160000, False)
    assert cfg.train_cfg.max_iters == 160000
    # 8 GPUs x 2 images of 512 x 512
    assert cfg.train_dataloader.batch_size == 2
    crops = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomCrop']
    assert crops and tuple(crops[0].crop_size) == (512, 512)
    # mmseg's ADE20KDataset with the data checks, label values checked after loading
    assert cfg.train_dataloader.dataset.type == 'CheckedADE20KDataset'
    assert [t.type for t in cfg.train_dataloader.dataset.pipeline][:3] == [
        'LoadImageFromFile', 'LoadAnnotations', 'CheckSegLabels']
    # multi-scale + flip test ("MS") from mmseg's bases
    assert cfg.tta_model.type == 'SegTTAModel'
    tta = [t for t in cfg.tta_pipeline if t.type == 'TestTimeAug'][0]
    assert [t.scale_factor for t in tta.transforms[0]] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert [t.prob for t in tta.transforms[1]] == [0.0, 1.0]
    # inherits, not a copy: the recipe above comes from the base, the file sets the row
    own = own_settings(name)
    bases = ast.literal_eval(own['_base_'])
    assert any(row['base'] in b for b in bases), bases
    if row['base'] != 'mmseg::':
        assert 'param_scheduler' not in own and 'train_dataloader' not in own, sorted(own)
        decode_head = own.get('model', {}).get('decode_head', {})
        assert isinstance(decode_head, dict) and 'type' not in decode_head, decode_head


@pytest.mark.parametrize('name', sorted(ZOO))
def test_segmentor_params_match_the_paper(name):
    """Table 3's parameter count of the whole segmentor, at the row's full width: the
    segmentor is built with 4 and 5 blocks and the count extended linearly to the row's
    depth (the blocks are identical; the full-depth build is the slow test below)."""
    row = ZOO[name]

    def params(depth):
        cfg = load(name)
        bb = cfg.model.backbone
        bb.arch = dict(embed_dims=row['dims'], num_layers=depth)
        bb.out_indices = tuple(range(depth - 4, depth))
        _replace_syncbn(cfg.model)
        with DefaultScope.overwrite_default_scope('mmseg'):
            model = seg_models().build(cfg.model)
        return sum(p.numel() for p in model.parameters())

    p4, p5 = params(4), params(5)
    total = (p4 + (p5 - p4) * (row['depth'] - 4)) / 1e6
    assert abs(total - row['params']) / row['params'] < 0.01, (name, total, row['params'])


def test_slws_variant_differs_from_b_only_in_the_shuffle_rate():
    b, slws = load('upernet_shufflemamba_b.py'), load('upernet_shufflemamba_b-slws.py')
    rate = slws.model.backbone.shuffle_rate
    assert b.model.backbone.shuffle_rate == 0.0 and rate == 0.5
    slws.model.backbone.shuffle_rate = 0.0
    skip = ('filename', 'text')
    assert {k: v for k, v in slws.to_dict().items() if k not in skip} == \
        {k: v for k, v in b.to_dict().items() if k not in skip}
    # not a paper row: its rate is the B pretraining recipe's SLWS rate (paper: P = 0.5)
    assert 'upernet_shufflemamba_b-slws.py' not in ZOO
    pretrain = Config.fromfile(osp.join(ROOT, 'configs', 'pretrain',
                                        'shufflemamba-b_8xb256-300e_in1k.py'))
    assert rate == pretrain.model.backbone.shuffle_rate


def test_quickstart_keeps_its_layernorm():
    cfg = Config.fromfile(QUICKSTART)
    assert cfg.model.backbone.norm_cfg.type == 'LN'
    assert cfg.model.backbone.get('init_cfg') is None


# --------------------------------------------------------------- checkpoints per row
def tiny_backbone_cfg(name, **init):
    """The config's backbone, shrunk to 4 blocks of width 32 (norm, registers, image
    size, out type as configured); init_cfg with only what is given."""
    bb = copy.deepcopy(load(name).model.backbone)
    bb.arch = dict(embed_dims=32, num_layers=4)
    bb.out_indices = (0, 1, 2, 3)
    if init:
        bb.init_cfg = dict(type='Pretrained', **init)
    return bb


def save_row_checkpoint(path, row, seed=0, ema=True):
    """An official training checkpoint of the row's layout (tiny)."""
    c = row['ckpt']
    kw = dict(depth=4, dim=32, grid=14, fmt=c['fmt'], rms_norm=row['norm'] == 'RMSNorm')
    if c['registers']:
        kw['registers'] = c['registers']
    raw = make_official_state_dict(seed=seed, **kw)
    torch.save(dict(model=raw, model_ema=make_official_state_dict(seed=seed + 1, **kw)
                    if ema else None,
                    optimizer=dict(state={}, param_groups=[]), epoch=299,
                    args=argparse.Namespace(model=c['name'], lr=5e-4)), path)
    return raw


def build_backbone(bb):
    with DefaultScope.overwrite_default_scope('mmseg'):
        m = seg_models().build(bb)
    m.init_weights()
    return m.eval()


@pytest.mark.parametrize('name', sorted(ZOO))
def test_row_checkpoint_loads_with_only_the_path(tmp_path, name):
    row = ZOO[name]
    path = tmp_path / 'in1k.pth'
    raw = save_row_checkpoint(path, row)
    model = build_backbone(tiny_backbone_cfg(name, checkpoint=str(path)))
    assert model.num_registers == 0 and not hasattr(model, 'cls_token')
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = model(x)
    ref = official_features(raw, x, row['ckpt']['fmt'], (0, 1, 2, 3), out_type='mixer')
    for a, b in zip(ours, ref):  # the raw 'model' weights, cls/registers dropped
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize('name,other', [('upernet_shufflemamba_m.py', 'b'),
                                        ('upernet_shufflemamba_b.py', 'm')])
def test_row_with_the_other_norm_names_the_fix(tmp_path, name, other):
    other_row = ZOO[f'upernet_shufflemamba_{other}.py']
    path = tmp_path / 'other.pth'
    save_row_checkpoint(path, other_row)
    with pytest.raises(CheckpointError) as e:
        build_backbone(tiny_backbone_cfg(name, checkpoint=str(path)))
    want = "type='RMSNorm', eps=1e-5)" if other_row['norm'] == 'RMSNorm' else \
        "type='LN', eps=1e-5)"
    assert 'norm mismatch' in str(e.value) and f'set norm_cfg=dict({want}' in str(e.value)


def test_ambiguous_cls_position_asks_for_ckpt_format(tmp_path):
    row = ZOO['upernet_shufflemamba_b.py']
    sd = make_official_state_dict(depth=4, dim=32, grid=14, rms_norm=True, seed=3)
    torch.save(sd, tmp_path / 'bare.pth')  # no args.model, no marker: first or middle?
    with pytest.raises(CheckpointError, match="cannot tell where the cls token sits.*"
                       "ckpt_format='shufflemamba'.*ckpt_format='vim'"):
        build_backbone(tiny_backbone_cfg('upernet_shufflemamba_b.py',
                                         checkpoint=str(tmp_path / 'bare.pth')))
    model = build_backbone(tiny_backbone_cfg(
        'upernet_shufflemamba_b.py', checkpoint=str(tmp_path / 'bare.pth'),
        ckpt_format='shufflemamba'))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), official_features(sd, x, 'shufflemamba', (0, 1, 2, 3),
                                                    out_type='mixer')):
            torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)
    assert row['ckpt']['fmt'] == 'shufflemamba'


# The placeholder forms the documentation uses for the checkpoint path.
PLACEHOLDERS = ('path/to/shufflemamba_b_in1k.pth', 'your_model_path', '<checkpoint>')


@pytest.mark.parametrize('placeholder', PLACEHOLDERS)
@pytest.mark.parametrize('name', sorted(ZOO) + ['upernet_shufflemamba_b-slws.py'])
def test_documented_placeholder_fails_with_a_clear_message(name, placeholder):
    with pytest.raises(CheckpointError, match='is the documented placeholder, not a file'):
        build_backbone(tiny_backbone_cfg(name, checkpoint=placeholder))


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(ZOO))
def test_full_size_segmentor_params_match_the_paper(name):
    cfg = load(name)
    _replace_syncbn(cfg.model)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = seg_models().build(cfg.model)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    expected = ZOO[name]['params']
    assert abs(params - expected) / expected < 0.02, (name, params, expected)


# ------------------------------------------------------------------------------ FLOPs
def test_flops_of_a_tiny_backbone_by_hand():
    D, L, n_tok, p = 32, 2, 16, 16
    m = ShuffleMamba(arch=dict(embed_dims=D, num_layers=L), img_size=64, out_indices=(1, ),
                     norm_cfg=dict(type='LN')).eval()
    x = torch.randn(1, 3, 64, 64)
    res = count_flops(m, (x, ))
    d_inner, N, R, K = 2 * D, 16, 2, 4
    patch_embed = n_tok * D * 3 * p * p
    norms = (L + 1) * n_tok * D * 5  # MMEngine: 5 per element for an affine LayerNorm
    in_proj, out_proj = L * n_tok * D * 2 * d_inner, L * n_tok * d_inner * D
    in_out = in_proj + out_proj
    x_dt = L * 2 * n_tok * (d_inner * (R + 2 * N) + R * d_inner)
    scan = L * 2 * n_tok * d_inner * (4 * N + 3)
    conv = L * 2 * n_tok * d_inner * K
    assert scan == L * 2 * selective_scan_flops(1, d_inner, n_tok, N)
    assert conv == L * 2 * causal_conv1d_flops(1, d_inner, n_tok, K)
    assert res['paper'] == patch_embed + norms + in_out
    # MMEngine alone sees the mixer's in_proj, not the fused function after it
    assert res['mmengine'] == patch_embed + norms + in_proj
    assert res['total'] == patch_embed + norms + in_out + x_dt + scan + conv
    assert res['by_operator']['selective_scan'] == scan
    assert res['by_operator']['causal_conv1d'] == conv
    assert res['by_operator']['bimamba_proj'] == x_dt
    assert res['by_operator']['bimamba_out_proj'] == out_proj
    from mmengine.analysis import get_model_complexity_info
    plain = get_model_complexity_info(m, inputs=(x, ), show_table=False, show_arch=False)
    assert plain['flops'] == res['mmengine']  # "without the handlers" is MMEngine's count
    # RMSNorm (no MMEngine handle): 4 per element with a weight
    m_rms = ShuffleMamba(arch=dict(embed_dims=D, num_layers=L), img_size=64,
                         out_indices=(1, ), norm_cfg=dict(type='RMSNorm')).eval()
    res = count_flops(m_rms, (x, ))
    assert res['by_operator']['rms_norm'] == (L + 1) * n_tok * D * 4
    assert res['total'] - res['mmengine'] == scan + conv + x_dt + out_proj + \
        (L + 1) * n_tok * D * 4


def test_deformable_attention_handle():

    class MultiScaleDeformableAttnFunction(torch.autograd.Function):  # mmcv's CUDA op name

        @staticmethod
        def forward(ctx, value, shapes, level_start, locations, weights, im2col_step):
            bs, _, heads, dims = value.shape
            return value.new_zeros(bs, locations.shape[1], heads * dims)

    class Attn(torch.nn.Module):

        def forward(self, value, shapes, level_start, locations, weights):
            return MultiScaleDeformableAttnFunction.apply(value, shapes, level_start,
                                                          locations, weights, 64)

    bs, keys, heads, dims, queries, levels, points = 2, 21, 4, 8, 10, 3, 4
    inputs = (torch.randn(bs, keys, heads, dims), torch.tensor([[4, 4], [2, 2], [1, 1]]),
              torch.tensor([0, 16, 20]), torch.rand(bs, queries, heads, levels, points, 2),
              torch.rand(bs, queries, heads, levels, points))
    res = count_flops(Attn(), inputs)
    expected = deform_attn_flops(bs, queries, heads, dims, levels, points)
    assert expected == 4 * bs * queries * heads * dims * levels * points
    assert res['by_operator'] == Counter(deform_attn=expected)
    assert (res['total'], res['mmengine']) == (expected, 0)
    # mmcv's CPU path (grid_sample) counts the same 4 per sampled value in MMEngine
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

    class CPUAttn(torch.nn.Module):

        def forward(self, value, shapes, level_start, locations, weights):
            return multi_scale_deformable_attn_pytorch(value, shapes, locations, weights)

    assert count_flops(CPUAttn(), inputs)['mmengine'] == expected


def test_adapter_flops_conventions():
    from mmplugin_shufflemamba import ShuffleMambaAdapter
    D, L = 48, 4
    model = ShuffleMambaAdapter(arch=dict(embed_dims=D, num_layers=L), img_size=64,
                                deform_num_heads=4, conv_inplane=8,
                                adapter_norm_cfg=dict(type='BN')).eval()
    d_inner, N, R, n_tok = 2 * D, 16, 3, 16  # patch tokens only, no cls token
    x_dt = L * 2 * n_tok * (d_inner * (R + 2 * N) + R * d_inner)
    # mmcv's PyTorch path (grid_sample) is counted by MMEngine; the official runs used its
    # CUDA kernel, which the paper's count does not see, like the fused mixer kernel
    os.environ['SHUFFLEMAMBA_MSDA_CPU'] = 'torch'
    try:
        ref = count_flops(model, (torch.randn(1, 3, 64, 64), ))
    finally:
        del os.environ['SHUFFLEMAMBA_MSDA_CPU']
    ops = ref['by_operator']
    assert ops['grid_sampler'] > 0
    assert ops['bimamba_proj'] == x_dt
    assert ops['bimamba_out_proj'] == L * n_tok * d_inner * D
    assert ref['paper'] == ref['mmengine'] + ops['bimamba_out_proj'] - ops['grid_sampler']
    assert ref['total'] - ref['mmengine'] == ops['selective_scan'] + ops['causal_conv1d'] \
        + ops['bimamba_proj'] + ops['bimamba_out_proj']
    assert ops['selective_scan'] == L * 2 * selective_scan_flops(1, d_inner, n_tok, N)
    # The fused CPU kernel: MMEngine sees no sampling, our handle counts what
    # grid_sampler counted; the paper's figure does not change.
    from mmplugin_shufflemamba.ops import has_ms_deform_attn_cpu
    if has_ms_deform_attn_cpu():
        res = count_flops(model, (torch.randn(1, 3, 64, 64), ))
        fused = res['by_operator']
        assert fused['grid_sampler'] == 0
        assert fused['deform_attn'] == ops['grid_sampler']
        assert res['paper'] == ref['paper']
        assert res['total'] == ref['total'] - ops['grid_sampler'] + fused['deform_attn']


def test_flops_tool_on_a_shrunk_zoo_config(tmp_path):
    cfg = load('upernet_shufflemamba_l1.py')
    cfg.model.backbone.arch = dict(embed_dims=32, num_layers=4)
    cfg.model.backbone.out_indices = (0, 1, 2, 3)
    cfg.model.decode_head.in_channels = [32] * 4
    cfg.model.decode_head.channels = 16
    cfg.model.auxiliary_head.in_channels = 32
    res = model_complexity(cfg, (64, 128))
    assert res['framework'] == 'mmseg' and res['shape'] == (64, 128)
    assert res['total'] > res['paper'] > res['mmengine'] > 0
    ops = res['by_operator']
    assert res['total'] - res['mmengine'] == ops['selective_scan'] + ops['causal_conv1d'] + \
        ops['rms_norm'] + ops['bimamba_proj'] + ops['bimamba_out_proj']
    # 4 blocks x 2 directions over the 4 x 8 token grid
    assert ops['selective_scan'] == 8 * selective_scan_flops(1, 64, 32, 16)


def test_flops_tool_on_a_pretraining_config():
    """mmpretrain's ImageClassifier configs build in their own scope; backbone and head
    are counted."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'pretrain',
                                   'shufflemamba-b_8xb256-300e_in1k.py'))
    cfg.model.backbone.arch = dict(embed_dims=32, num_layers=2)
    cfg.model.head.in_channels = 32
    res = model_complexity(cfg, (64, ))
    assert res['framework'] == 'mmpretrain' and res['shape'] == (64, 64)
    assert res['by_operator']['selective_scan'] == 4 * selective_scan_flops(1, 64, 17, 16)
    assert res['by_operator']['linear'] > 0


def test_flops_of_a_register_model():
    """Registers spread through the sequence: the FLOPs trace (sizes are tensors under
    torch.jit.trace) places them as the forward does; 16 patches + 2 registers."""
    m = ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=64, num_registers=2,
                     kernel='torch').eval()
    res = count_flops(m, (torch.randn(1, 3, 64, 64), ))
    assert res['by_operator']['selective_scan'] == 4 * selective_scan_flops(1, 64, 18, 16)


@pytest.mark.slow
def test_b_gflops_match_the_paper_at_512x2048(tmp_path):
    out = tmp_path / 'b.json'
    run = subprocess.run(
        [sys.executable, 'tools/analysis/get_flops.py', 'configs/upernet_shufflemamba_b.py',
         '--shape', '512', '2048', '--json', str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'GFLOPs (paper convention)' in run.stdout
    res = json.loads(out.read_text())
    assert abs(res['gflops_paper'] - 477) / 477 < 0.10, res
    assert res['gflops_total'] > res['gflops_paper'] > res['gflops_mmengine']
    assert abs(res['params'] / 1e6 - 131) / 131 < 0.02


# ------------------------------------------------------------------------------- TTA
TTA_DRIVER = r'''
import json, runpy, sys
from mmseg.models.segmentors import EncoderDecoder
calls = []
_orig = EncoderDecoder.encode_decode
def encode_decode(self, inputs, batch_img_metas):
    calls.append([list(inputs.shape[-2:]), bool(batch_img_metas[0].get('flip', False))])
    return _orig(self, inputs, batch_img_metas)
EncoderDecoder.encode_decode = encode_decode
sys.argv = [sys.argv[1]] + sys.argv[2:]
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
finally:
    print('CALLS ' + json.dumps(calls), flush=True)
'''


TINY_MODEL = {
    'model.backbone.num_layers': 4, 'model.backbone.embed_dims': 32,
    'model.backbone.out_indices': [0, 1, 2, 3],
    'model.decode_head.in_channels': [32] * 4, 'model.decode_head.channels': 16,
    'model.auxiliary_head.in_channels': 32, 'model.auxiliary_head.channels': 8,
}


def tiny_overrides(data_root):
    opts = [f'{k}={json.dumps(v).replace(" ", "")}' for k, v in TINY_MODEL.items()]
    for loader in ('val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={data_root}', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False', f'{loader}.batch_size=2']
    return opts


def tiny_checkpoint(path):
    """A checkpoint of the shrunk quickstart segmentor, as MMEngine saves one."""
    cfg = Config.fromfile(QUICKSTART)
    cfg.merge_from_dict(TINY_MODEL)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = seg_models().build(cfg.model)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(iter=0)), path)


def test_multi_scale_flip_testing_with_tta(tmp_path):
    from mmplugin_shufflemamba.datasets import generate_synthetic_ade20k
    data_root = str(tmp_path / 'data')
    generate_synthetic_ade20k(data_root, num_train=1, num_val=2, size=(64, 64))
    opts = tiny_overrides(data_root)
    ckpt = tmp_path / 'tiny.pth'
    tiny_checkpoint(ckpt)
    driver = tmp_path / 'driver.py'
    driver.write_text(TTA_DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    run = subprocess.run(
        [sys.executable, str(driver), osp.join(ROOT, 'tools', 'test.py'), QUICKSTART,
         str(ckpt), '--tta', '--work-dir', str(tmp_path / 'work'), '--cfg-options'] + opts,
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-5000:]
    assert 'Test-time augmentation: SegTTAModel over 12 views per image' in log
    assert re.search(r'mIoU: [0-9.]+', log), log[-3000:]
    calls = json.loads(re.search(r'^CALLS (.*)$', log, re.M).group(1))
    # one batch of 2 images, at 6 scales x {no flip, flip} of 64 x 64
    assert len(calls) == 12
    sizes = sorted({tuple(c[0]) for c in calls})
    assert sizes == [(s, s) for s in (32, 48, 64, 80, 96, 112)], sizes
    assert sum(flip for _, flip in calls) == 6


def test_tta_needs_the_config_entries():
    mod = load_tool('test.py')
    cfg = load('upernet_shufflemamba_b.py')
    inner = copy.deepcopy(cfg.model)
    assert mod.enable_tta(cfg) == 12
    assert cfg.model.type == 'SegTTAModel' and cfg.model.module == inner
    assert cfg.test_dataloader.dataset.pipeline[1].type == 'TestTimeAug'
    cfg = load('upernet_shufflemamba_b.py')
    cfg.pop('tta_pipeline')
    with pytest.raises(ValueError, match='--tta needs tta_pipeline'):
        mod.enable_tta(cfg)


def test_tta_refuses_instance_segmentation():
    """mmdet's DetTTAModel merges boxes only (mmdet 3.3 asserts on masks): --tta on the
    Mask R-CNN configs stops before the test with that reason, even with TTA settings."""
    mod = load_tool('test.py')
    cfg = load('mask-rcnn_shufflemamba_reg-adapter-b.py')
    cfg.tta_model = dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms')))
    cfg.tta_pipeline = [dict(type='LoadImageFromFile')]
    with pytest.raises(ValueError, match='merges boxes only'):
        mod.enable_tta(cfg)


@pytest.mark.parametrize('name', [
    'upernet_shufflemamba_b.py', 'upernet_shufflemamba_reg-adapter-b.py',
    'mask-rcnn_shufflemamba_reg-adapter-b.py',
    'pretrain/shufflemamba-b_8xb256-300e_in1k.py',
    'pretrain/shufflemamba-reg-b_8xb64-20e_in1k-224px-ft.py'])
def test_configs_resume_exactly_without_the_tools(name):
    """The RNG state hook is in the configs, so a Runner built from them directly (not
    through tools/train.py) also saves and restores torch's generator."""
    hooks = [h['type'] for h in load(name).get('custom_hooks', [])]
    assert 'RNGStateHook' in hooks and 'FiniteLossHook' in hooks, hooks


@pytest.mark.parametrize('model,masks', [
    (dict(type='SOLO', mask_head=dict(type='SOLOHead')), True),
    (dict(type='RTMDet', bbox_head=dict(type='RTMDetInsSepBNHead')), True),
    (dict(type='FasterRCNN', roi_head=dict(type='StandardRoIHead', mask_head=None)), False),
    (dict(type='RetinaNet', bbox_head=dict(type='RetinaHead')), False)])
def test_which_detectors_predict_masks(model, masks):
    assert load_tool('test.py').predicts_masks(model) is masks
