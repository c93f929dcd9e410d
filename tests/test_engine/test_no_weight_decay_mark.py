"""The ``_no_weight_decay`` mark: what the models mark, the constructor that reads it on
top of MMEngine's default one, the timm classifier's ``no_weight_decay()`` derived from
it, and the learning rate and weight decay of every parameter of every config in
configs/ (built shrunk), against the recipes written out here."""
import copy
import glob
import os.path as osp
import re

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

import mmplugin_shufflemamba  # noqa: F401
from mmplugin_shufflemamba.engine import ShuffleMambaOptimWrapperConstructor
from mmplugin_shufflemamba.models import ShuffleMamba
from mmplugin_shufflemamba.utils.runtime import _cpu_optim_wrapper

from helpers.configs import framework, registry, shrink

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(osp.relpath(c, osp.join(ROOT, 'configs')) for c in glob.glob(
    osp.join(ROOT, 'configs', '**', '*.py'), recursive=True))

# What the backbones mark _no_weight_decay (full names in a model with `backbone`): the
# embeddings and tokens, the SSM's A_log / A_b_log / D / D_b, the token norms, and the
# adapter's level embeddings, injector gammas, LayerNorms and output norms norm1-norm4
# (not the BatchNorms of its spatial prior module `spm`).
MARKED = re.compile(
    r'backbone\.(pos_embed|pos_embed_cls|cls_token|level_embed'
    r'|layers\.\d+\.mixer\.(A_log|A_b_log|D|D_b)'
    r'|(layers\.\d+\.norm|norm_f|norm_neck|norm[1-4])\.(weight|bias)'
    r'|interactions\.\d+\.injector\.gamma'
    r'|interactions\.\d+\.(injector|extractor|extra_extractors\.\d+)'
    r'\.(query_norm|feat_norm|ffn_norm)\.(weight|bias))$')


def _expected(cfg, model, name, param):
    """(lr, weight decay) of one parameter under the config's recipe."""
    opt = cfg.optim_wrapper.optimizer
    lr, wd = opt.lr, opt.weight_decay
    if cfg.model.type == 'EncoderDecoder':  # UperNet: no decay on the marked parameters
        return lr, 0.0 if MARKED.search(name) else wd
    if cfg.model.type == 'ImageClassifier':  # the official (timm) rule
        no_decay = param.ndim <= 1 or name.split('.')[-1] in ('pos_embed', 'cls_token',
                                                              'pos_embed_cls')
        return lr, 0.0 if no_decay else wd
    # Mask R-CNN: layer decay over the blocks; no decay on the 1-D parameters and the
    # biases only (the official detection constructor's rule: A_log, pos_embed and the
    # level embeddings are decayed).
    assert cfg.model.type == 'MaskRCNN'
    top = model.backbone.num_layers + 1
    rel = name[len('backbone.'):] if name.startswith('backbone.') else ''
    if rel.startswith(('patch_embed', 'pos_embed', 'cls_token')):
        layer = 0
    elif rel.startswith('layers.'):
        layer = int(rel.split('.')[1]) + 1
    else:
        layer = top
    no_decay = param.ndim <= 1 or name.endswith('.bias')
    return lr * cfg.optim_wrapper.paramwise_cfg.layer_decay_rate**(top - layer), \
        0.0 if no_decay else wd


CONSTRUCTORS = dict(EncoderDecoder='ShuffleMambaOptimWrapperConstructor',
                    MaskRCNN='ShuffleMambaLayerDecayOptimWrapperConstructor',
                    ImageClassifier=None)  # MMEngine's default, with timm's rule


def _shrink_classifier(cfg, dims=32, layers=2):
    bb = cfg.model.backbone
    bb.update(embed_dims=dims, num_layers=layers, kernel='torch')
    bb.pop('init_cfg', None)
    cfg.model.head.pop('init_cfg', None)
    cfg.model.head.in_channels = dims if bb.get('with_cls_token') else \
        bb.num_registers * dims // bb.cls_reduce
    return cfg


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_param_groups_follow_its_recipe(name):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    assert cfg.optim_wrapper.get('constructor') == CONSTRUCTORS[cfg.model.type]
    if cfg.model.type == 'ImageClassifier':
        import mmpretrain.models  # noqa: F401
        from mmpretrain.registry import MODELS
        scope, models, cfg = 'mmpretrain', MODELS, _shrink_classifier(cfg)
    else:
        scope = framework(cfg)
        models, cfg = registry(scope), shrink(cfg)
        cfg.model.backbone.pop('init_cfg', None)
    _cpu_optim_wrapper(cfg)
    with DefaultScope.overwrite_default_scope(scope):
        model = models.build(cfg.model)
        wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    params = dict(model.named_parameters())
    names = {id(p): n for n, p in params.items()}
    got = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            assert names[id(p)] not in got
            got[names[id(p)]] = (group['lr'], group['weight_decay'])
    assert set(got) == {n for n, p in params.items() if p.requires_grad}
    for n, (lr, wd) in got.items():
        want_lr, want_wd = _expected(cfg, model, n, params[n])
        assert lr == pytest.approx(want_lr, rel=1e-12) and wd == want_wd, (n, lr, wd)
    assert any(wd == 0 for _, wd in got.values()) and any(wd > 0 for _, wd in got.values())


# ---------------------------------------------------------------- the marks themselves
def _marked(module):
    return {n for n, p in module.named_parameters() if getattr(p, '_no_weight_decay', False)}


LN_NORMS = ['layers.0.norm.weight', 'layers.0.norm.bias', 'layers.1.norm.weight',
            'layers.1.norm.bias', 'norm_f.weight', 'norm_f.bias']


@pytest.mark.parametrize('kw, extra', [
    (dict(), LN_NORMS),
    (dict(norm_cfg=dict(type='RMSNorm'), with_cls_token=True),
     ['layers.0.norm.weight', 'layers.1.norm.weight', 'norm_f.weight', 'cls_token']),
    (dict(num_registers=4, cls_reduce=4, out_cls=True),
     LN_NORMS + ['norm_neck.weight', 'norm_neck.bias', 'cls_token', 'pos_embed_cls']),
])
def test_backbone_marks(kw, extra):
    bb = ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=32, patch_size=8,
                      out_indices=(1, ), **kw)
    ssm = [f'layers.{i}.mixer.{n}' for i in range(2) for n in ('A_log', 'A_b_log', 'D', 'D_b')]
    assert _marked(bb) == {'pos_embed', *ssm, *extra}
    # the marks survive what MMEngine does to a model (dtype / device, state dict loading)
    bb.to(torch.float64).load_state_dict(bb.state_dict())
    assert _marked(bb) == {'pos_embed', *ssm, *extra}


def test_adapter_marks():
    from mmplugin_shufflemamba.models import ShuffleMambaAdapter
    ad = ShuffleMambaAdapter(arch=dict(embed_dims=32, num_layers=4), img_size=64,
                             deform_num_heads=4, conv_inplane=8,
                             adapter_norm_cfg=dict(type='BN'))
    marked = {'backbone.' + n for n in _marked(ad)}
    assert marked == {'backbone.' + n for n, _ in ad.named_parameters()
                      if MARKED.search('backbone.' + n)}
    assert 'backbone.level_embed' in marked and 'backbone.norm4.bias' in marked
    assert 'backbone.interactions.3.extra_extractors.1.ffn_norm.weight' in marked
    assert not any('spm.' in n for n in marked)


# ------------------------------------------- MMEngine's default constructor + the mark
class _Model(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=32,
                                     patch_size=8, out_indices=(1, ))
        self.head = nn.Sequential(nn.Linear(32, 8), nn.BatchNorm1d(8))


def _build(paramwise_cfg=None, **optimizer):
    model = _Model()
    optimizer = {k: v for k, v in dict(dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                                       **optimizer).items() if v is not None}
    cfg = dict(type='OptimWrapper', optimizer=optimizer,
               constructor='ShuffleMambaOptimWrapperConstructor')
    if paramwise_cfg is not None:
        cfg['paramwise_cfg'] = paramwise_cfg
    wrapper = build_optim_wrapper(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    return model, {names[id(p)]: g for g in wrapper.optimizer.param_groups
                   for p in g['params']}


def test_default_constructor_reads_the_mark():
    model, groups = _build()  # no paramwise_cfg: still parameter by parameter
    assert set(groups) == {n for n, _ in model.named_parameters()}
    for n, g in groups.items():
        assert g['weight_decay'] == (0.0 if MARKED.search(n) else 0.05), n
        assert g['lr'] == 1e-3
    # biases and the head's norm are not marked: MMEngine's options still apply to them
    model, groups = _build(dict(bias_decay_mult=0., norm_decay_mult=0.5,
                                custom_keys={'backbone.layers': dict(lr_mult=0.1,
                                                                     decay_mult=2.)}))
    assert groups['head.0.bias']['weight_decay'] == 0.0
    assert groups['head.1.weight']['weight_decay'] == pytest.approx(0.025)
    g = groups['backbone.layers.0.mixer.in_proj.weight']
    assert g['lr'] == pytest.approx(1e-4) and g['weight_decay'] == pytest.approx(0.1)
    g = groups['backbone.layers.0.mixer.A_log']  # the mark wins over a custom key
    assert g['lr'] == pytest.approx(1e-4) and g['weight_decay'] == 0.0
    # without optimizer.weight_decay: the optimizer's default, 0 for the marked ones
    model, groups = _build(weight_decay=None)
    assert groups['backbone.pos_embed']['weight_decay'] == 0.0
    assert groups['head.0.weight']['weight_decay'] == \
        torch.optim.AdamW([nn.Parameter(torch.zeros(1))]).defaults['weight_decay']


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet', 'mmpretrain'])
def test_default_constructor_builds_in_every_scope(scope):
    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as ROOT_REGISTRY
    registry_module = __import__(f'{scope}.registry', fromlist=['OPTIM_WRAPPER_CONSTRUCTORS'])
    name = 'ShuffleMambaOptimWrapperConstructor'
    assert registry_module.OPTIM_WRAPPER_CONSTRUCTORS.get(name) is \
        ROOT_REGISTRY.get(name) is ShuffleMambaOptimWrapperConstructor
    with DefaultScope.overwrite_default_scope(scope):
        _, groups = _build()
    assert groups['backbone.norm_f.weight']['weight_decay'] == 0.0


# ------------------------------------------------------------------- timm classifier
def test_timm_no_weight_decay_is_derived_from_the_mark():
    from timm.optim import create_optimizer_v2
    from mmplugin_shufflemamba.models.classifiers import ShuffleMambaClassifier
    for kw, names in ((dict(with_cls_token=True), {'pos_embed', 'cls_token'}),
                      (dict(num_registers=4, cls_reduce=4),
                       {'pos_embed', 'cls_token', 'pos_embed_cls'})):
        m = ShuffleMambaClassifier(num_classes=10, arch=dict(embed_dims=32, num_layers=2),
                                   img_size=32, patch_size=8, **kw)
        assert m.no_weight_decay() == names
        assert names < _marked(m)  # the marked, of those timm would decay, not the SSM's
        opt = create_optimizer_v2(m, 'adamw', lr=1e-3, weight_decay=0.05)
        wd = {id(p): g['weight_decay'] for g in opt.param_groups for p in g['params']}
        for n, p in m.named_parameters():  # the official rule: A_log / A_b_log decayed
            no_decay = p.ndim <= 1 or n in names
            assert wd[id(p)] == (0.0 if no_decay else 0.05), n
        assert wd[id(m.layers[0].mixer.A_log)] == 0.05


@pytest.mark.parametrize('layer_decay', [False, True])
def test_custom_keys_matching_no_parameter_are_named(layer_decay):
    """MMEngine's constructors ignore a custom key that matches no parameter (a typo:
    'hed' for 'head'); both of this package's say so."""
    from helpers.logs import captured_log
    model = _Model()
    cfg = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
               constructor='ShuffleMambaOptimWrapperConstructor',
               paramwise_cfg=dict(custom_keys={'hed': dict(lr_mult=10.),
                                               'head': dict(lr_mult=2.)}))
    if layer_decay:
        cfg.update(constructor='ShuffleMambaLayerDecayOptimWrapperConstructor')
        cfg['paramwise_cfg']['layer_decay_rate'] = 0.9
    with captured_log() as lines:
        build_optim_wrapper(model, cfg)
    warned = [line for line in lines if 'match no parameter name' in line]
    assert len(warned) == 1 and "custom_keys ['hed'] match no parameter name of the " \
        'model and change nothing' in warned[0], lines
