import logging

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import DefaultScope

import mmplugin_shufflemamba  # noqa: F401  (registers the constructor)
from mmplugin_shufflemamba.engine import ShuffleMambaLayerDecayOptimWrapperConstructor
from mmplugin_shufflemamba.models import ShuffleMamba

NAME = 'ShuffleMambaLayerDecayOptimWrapperConstructor'
BASE_LR = 1e-3
WD = 0.05
RATE = 0.9
L = 4  # blocks; get_layer_depth's num_layers is L + 2
TOP = L + 1


class Head(nn.Module):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 8)
        self.ln = nn.LayerNorm(8)
        self.bn = nn.BatchNorm1d(8)


class Model(nn.Module):

    def __init__(self, **backbone_kw):
        super().__init__()
        self.backbone = ShuffleMamba(arch=dict(embed_dims=32, num_layers=L), img_size=32,
                                     patch_size=8, out_indices=(3, ), **backbone_kw)
        self.head = Head()


class FakeDDP:
    """Only what the constructor looks at: ``.module``."""

    def __init__(self, module):
        self.module = module


def cfg(**paramwise):
    paramwise.setdefault('layer_decay_rate', RATE)
    return dict(optim_wrapper_cfg=dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=BASE_LR, weight_decay=WD)),
        paramwise_cfg=paramwise)


def build(model, optimizer=None, **paramwise):
    c = cfg(**paramwise)
    if optimizer is not None:
        c['optim_wrapper_cfg']['optimizer'] = optimizer
    return ShuffleMambaLayerDecayOptimWrapperConstructor(**c)(model)


def by_name(optim_wrapper, model):
    """{param name: group}; checks every trainable param appears exactly once."""
    if hasattr(model, 'module'):
        model = model.module
    groups = optim_wrapper.optimizer.param_groups
    out = {}
    for g in groups:
        assert len(g['params']) == len(g['param_names'])
        for name, p in zip(g['param_names'], g['params']):
            assert name not in out, f'{name} in two groups'
            out[name] = g
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert set(out) == trainable
    for name, g in out.items():
        assert any(p is params[name] for p in g['params'])
    n_group_params = sum(len(g['params']) for g in groups)
    assert n_group_params == len(trainable)
    return out


def expected_layer(name):
    rel = name[len('backbone.'):] if name.startswith('backbone.') else None
    if rel is None:
        return TOP
    if rel.startswith(('patch_embed', 'pos_embed', 'cls_token', 'pos_embed_cls')):
        return 0
    if rel.startswith('layers.'):
        return int(rel.split('.')[1]) + 1
    return TOP


def expected_no_decay(name):
    leaf = name.split('.')[-1]
    return (leaf == 'bias' or leaf in ('pos_embed', 'cls_token', 'pos_embed_cls', 'A_log',
                                       'A_b_log', 'D', 'D_b')
            or '.norm.' in name or 'norm_f' in name or name.startswith(('head.ln',
                                                                        'head.bn')))


@pytest.mark.parametrize('norm_type', ['LN', 'RMSNorm'])
@pytest.mark.parametrize('num_registers', [0, 2])
def test_layer_lr_and_no_decay(norm_type, num_registers):
    model = Model(norm_cfg=dict(type=norm_type), num_registers=num_registers)
    ow = build(model)
    assert isinstance(ow, OptimWrapper)
    assert isinstance(ow.optimizer, torch.optim.AdamW)
    groups = by_name(ow, model)
    for name, g in groups.items():
        layer = expected_layer(name)
        scale = RATE**(TOP - layer)
        assert g['layer_id'] == layer, name
        assert g['lr'] == pytest.approx(BASE_LR * scale), name
        assert g['lr_scale'] == pytest.approx(scale), name
        assert g['weight_decay'] == (0.0 if expected_no_decay(name) else WD), name

    # spot checks against the hand-written rule
    assert groups['backbone.layers.2.mixer.in_proj.weight']['lr'] == \
        pytest.approx(BASE_LR * RATE**(L + 1 - 3))
    for name in ('backbone.patch_embed.proj.weight', 'backbone.pos_embed'):
        assert groups[name]['lr'] == pytest.approx(BASE_LR * RATE**(L + 1))
    for name in ('backbone.norm_f.weight', 'head.fc.weight', 'head.ln.weight'):
        assert groups[name]['lr'] == pytest.approx(BASE_LR)
    no_decay = ['backbone.pos_embed', 'backbone.patch_embed.proj.bias',
                'backbone.layers.0.norm.weight', 'backbone.norm_f.weight',
                'backbone.layers.1.mixer.A_log', 'backbone.layers.1.mixer.A_b_log',
                'backbone.layers.1.mixer.D', 'backbone.layers.1.mixer.D_b',
                'backbone.layers.1.mixer.conv1d.bias', 'backbone.layers.1.mixer.dt_proj.bias',
                'head.fc.bias', 'head.ln.weight', 'head.ln.bias', 'head.bn.weight',
                'head.bn.bias']
    if norm_type == 'LN':
        no_decay += ['backbone.layers.0.norm.bias', 'backbone.norm_f.bias']
    else:
        assert isinstance(model.backbone.norm_f, nn.RMSNorm)
        assert 'backbone.norm_f.bias' not in groups
    if num_registers:
        no_decay += ['backbone.cls_token', 'backbone.pos_embed_cls']
        assert groups['backbone.cls_token']['layer_id'] == 0
    decay = ['backbone.layers.0.mixer.in_proj.weight', 'backbone.layers.0.mixer.x_proj.weight',
             'backbone.layers.0.mixer.x_proj_b.weight', 'backbone.layers.0.mixer.conv1d.weight',
             'backbone.layers.0.mixer.dt_proj.weight', 'backbone.layers.0.mixer.out_proj.weight',
             'backbone.patch_embed.proj.weight', 'head.fc.weight']
    for name in no_decay:
        assert groups[name]['weight_decay'] == 0.0, name
    for name in decay:
        assert groups[name]['weight_decay'] == WD, name

    # One group per (layer, decay): the first is the unscaled, decayed top group.
    first = ow.optimizer.param_groups[0]
    assert first['lr'] == BASE_LR and first['weight_decay'] == WD
    assert first['layer_id'] == TOP
    keys = [(g['layer_id'], g['weight_decay']) for g in ow.optimizer.param_groups]
    assert len(keys) == len(set(keys)) == 2 * (L + 2)


def test_custom_keys_multiply_layer_scale():
    model = Model()
    custom_keys = {
        'head': dict(lr_mult=10.),
        'layers': dict(lr_mult=3., decay_mult=0.5),
        'layers.0': dict(lr_mult=2., decay_mult=0.5),  # longer key wins over 'layers'
        'head.fc': dict(lr_mult=5., eps=1e-6),  # extra options reach the group
    }
    ow = build(model, custom_keys=custom_keys)
    groups = by_name(ow, model)
    assert groups['head.ln.weight']['lr'] == pytest.approx(10 * BASE_LR)
    assert groups['head.ln.weight']['weight_decay'] == 0.0
    g = groups['head.fc.weight']
    assert g['lr'] == pytest.approx(5 * BASE_LR)
    assert g['eps'] == 1e-6 and g['custom_key'] == 'head.fc'
    assert g['weight_decay'] == WD
    assert groups['head.ln.weight']['eps'] == 1e-8  # AdamW default

    g = groups['backbone.layers.0.mixer.in_proj.weight']
    assert g['lr'] == pytest.approx(BASE_LR * 2 * RATE**(L + 1 - 1))
    assert g['lr_scale'] == pytest.approx(2 * RATE**(L + 1 - 1))
    assert g['weight_decay'] == pytest.approx(WD * 0.5)
    assert g['lr_mult'] == 2. and g['decay_mult'] == 0.5
    g = groups['backbone.layers.3.mixer.in_proj.weight']
    assert g['lr'] == pytest.approx(BASE_LR * 3 * RATE**(L + 1 - 4))
    # decay_mult cannot turn decay back on for a no-decay parameter
    assert groups['backbone.layers.3.mixer.A_log']['weight_decay'] == 0.0
    assert groups['backbone.layers.3.mixer.A_log']['lr'] == \
        pytest.approx(BASE_LR * 3 * RATE**(L + 1 - 4))
    # unmatched parameters are untouched
    assert groups['backbone.norm_f.weight']['lr'] == pytest.approx(BASE_LR)
    assert groups['backbone.pos_embed']['lr'] == pytest.approx(BASE_LR * RATE**(L + 1))
    assert 'custom_key' not in groups['backbone.pos_embed']


def test_custom_key_requires_grad_freezes():
    model = Model()
    ow = build(model, custom_keys={'head.bn': dict(requires_grad=False)})
    assert not model.head.bn.weight.requires_grad
    groups = by_name(ow, model)
    assert 'head.bn.weight' not in groups and 'head.fc.weight' in groups


def test_adapter_like_params_are_top_and_not_decayed():
    model = Model()
    bb = model.backbone
    bb.level_embed = nn.Parameter(torch.zeros(3, 32))
    bb.level_embed._no_weight_decay = True  # as ShuffleMambaAdapter marks it
    injector = nn.Module()
    injector.gamma = nn.Parameter(torch.zeros(32))
    injector.gamma._no_weight_decay = True  # as the Injector marks it
    injector.attn = nn.Linear(32, 32)
    injector.query_norm = nn.LayerNorm(32)
    injector.feat_norm = nn.LayerNorm(32)
    extractor = nn.Module()
    extractor.ffn = nn.Linear(32, 32)
    extractor.gamma_like = nn.Parameter(torch.zeros(32))
    interaction = nn.Module()
    interaction.injector = injector
    interaction.extractor = extractor
    bb.interactions = nn.ModuleList([interaction])
    bb.spm = nn.Sequential(nn.Conv2d(3, 32, 3), nn.SyncBatchNorm(32), nn.GroupNorm(4, 32))
    bb.up = nn.ConvTranspose2d(32, 32, 2, 2)
    bb.norm1 = nn.BatchNorm2d(32)
    bb.norm4 = nn.SyncBatchNorm(32)

    ow = build(model)
    groups = by_name(ow, model)
    adapter = [n for n in groups if n.startswith(
        ('backbone.level_embed', 'backbone.interactions', 'backbone.spm', 'backbone.up',
         'backbone.norm1', 'backbone.norm4'))]
    assert len(adapter) == 1 + 7 + 3 + 6 + 2 + 2 + 2
    for name in adapter:
        assert groups[name]['layer_id'] == TOP, name
        assert groups[name]['lr'] == pytest.approx(BASE_LR), name
    no_decay = ['backbone.level_embed', 'backbone.interactions.0.injector.gamma',
                'backbone.interactions.0.injector.attn.bias',
                'backbone.interactions.0.injector.query_norm.weight',
                'backbone.interactions.0.injector.feat_norm.bias',
                'backbone.spm.1.weight', 'backbone.spm.2.weight', 'backbone.spm.0.bias',
                'backbone.up.bias', 'backbone.norm1.weight', 'backbone.norm4.bias']
    decay = ['backbone.interactions.0.injector.attn.weight',
             'backbone.interactions.0.extractor.ffn.weight',
             'backbone.interactions.0.extractor.gamma_like', 'backbone.spm.0.weight',
             'backbone.up.weight']
    for name in no_decay:
        assert groups[name]['weight_decay'] == 0.0, name
    for name in decay:
        assert groups[name]['weight_decay'] == WD, name


def test_flat_rule_decays_what_the_official_detection_constructor_decays():
    """no_decay='flat': no weight decay for the 1-D parameters and biases only (the
    official MyLayerDecayOptimizerConstructor), marks ignored: A_log, pos_embed and the
    level embedding are decayed; D, the norms and the biases are not; the lrs stay."""
    model = Model(num_registers=2)
    model.backbone.level_embed = nn.Parameter(torch.zeros(3, 32))
    model.backbone.level_embed._no_weight_decay = True
    marked = build(model)
    groups = by_name(build(model, no_decay='flat'), model)
    for name, p in model.named_parameters():
        flat = p.ndim == 1 or name.endswith('.bias')
        assert groups[name]['weight_decay'] == (0.0 if flat else WD), name
        assert groups[name]['lr'] == pytest.approx(by_name(marked, model)[name]['lr']), name
    for name in ('backbone.layers.1.mixer.A_log', 'backbone.pos_embed',
                 'backbone.pos_embed_cls', 'backbone.level_embed'):
        assert groups[name]['weight_decay'] == WD, name
    for name in ('backbone.layers.1.mixer.D', 'backbone.layers.1.norm.weight',
                 'backbone.layers.1.mixer.dt_proj.bias', 'head.bn.weight'):
        assert groups[name]['weight_decay'] == 0.0, name
    with pytest.raises(ValueError, match=r"paramwise_cfg.no_decay must be one of \('marked', "
                       r"'flat'\), got 'official'"):
        ShuffleMambaLayerDecayOptimWrapperConstructor(**cfg(no_decay='official'))


def test_frozen_params_excluded():
    model = Model(frozen_stages=1)
    model.head.fc.bias.requires_grad_(False)
    ow = build(model)
    groups = by_name(ow, model)
    for name in ('backbone.pos_embed', 'backbone.patch_embed.proj.weight',
                 'backbone.layers.0.mixer.A_log', 'head.fc.bias'):
        assert name not in groups
    assert 'backbone.layers.1.mixer.A_log' in groups
    assert {g['layer_id'] for g in ow.optimizer.param_groups} == set(range(2, TOP + 1))


def test_shared_parameter_added_once():
    model = Model()
    model.head.fc2 = nn.Linear(32, 8)
    model.head.fc2.weight = model.head.fc.weight
    ow = build(model)
    by_name(ow, model)  # named_parameters() lists the shared tensor once too


def test_ddp_like_wrapper_and_bare_backbone():
    model = Model()
    ow = build(FakeDDP(model))
    groups = by_name(ow, model)
    assert groups['backbone.layers.0.mixer.D']['layer_id'] == 1

    backbone = ShuffleMamba(arch=dict(embed_dims=32, num_layers=L), img_size=32,
                            patch_size=8, out_indices=(3, ))
    ow = build(backbone)
    groups = by_name(ow, backbone)
    assert groups['layers.2.mixer.in_proj.weight']['lr'] == \
        pytest.approx(BASE_LR * RATE**(L + 1 - 3))
    assert groups['pos_embed']['lr'] == pytest.approx(BASE_LR * RATE**(L + 1))
    assert groups['pos_embed']['weight_decay'] == 0.0
    assert groups['norm_f.weight']['lr'] == pytest.approx(BASE_LR)


def test_training_step_and_state_dict():
    model = Model()
    ow = build(model)
    x = torch.randn(2, 3, 32, 32)
    feat = model.backbone(x)[0].mean((2, 3))
    loss = model.head.bn(model.head.ln(model.head.fc(feat))).square().mean()
    before = model.backbone.layers[0].mixer.in_proj.weight.detach().clone()
    ow.update_params(loss)
    assert not torch.equal(before, model.backbone.layers[0].mixer.in_proj.weight)
    state = ow.state_dict()
    ow2 = build(model)
    ow2.load_state_dict(state)
    assert [g['lr'] for g in ow2.param_groups] == [g['lr'] for g in ow.param_groups]


def test_weight_decay_default_from_optimizer():
    model = Model()
    ow = build(model, optimizer=dict(type='SGD', lr=0.1, momentum=0.9))
    groups = by_name(ow, model)
    assert {g['weight_decay'] for g in groups.values()} == {0.0}
    ow = build(model, optimizer=dict(type='AdamW', lr=0.1))
    groups = by_name(ow, model)
    assert groups['head.fc.weight']['weight_decay'] == \
        torch.optim.AdamW([nn.Parameter(torch.zeros(1))]).defaults['weight_decay']
    assert groups['head.fc.bias']['weight_decay'] == 0.0


def test_rate_one_keeps_lr():
    model = Model()
    groups = by_name(build(model, layer_decay_rate=1), model)
    assert {g['lr'] for g in groups.values()} == {BASE_LR}


@pytest.mark.parametrize('rate', [0, 0.0, -0.1, 1.1, float('nan')])
def test_bad_rate(rate):
    """A refused setting is an ArgumentError: the tools stop with its message when the
    runner builds the optimizer (after the model), without a traceback."""
    from mmplugin_shufflemamba.utils import STOP_ERRORS
    with pytest.raises(ValueError, match='layer_decay_rate') as e:
        ShuffleMambaLayerDecayOptimWrapperConstructor(**cfg(layer_decay_rate=rate))
    assert isinstance(e.value, STOP_ERRORS)


def test_bad_cfg():
    with pytest.raises(TypeError, match='layer_decay_rate'):
        ShuffleMambaLayerDecayOptimWrapperConstructor(**cfg(layer_decay_rate='0.9'))
    c = cfg()
    del c['paramwise_cfg']['layer_decay_rate']
    with pytest.raises(ValueError, match='layer_decay_rate'):
        ShuffleMambaLayerDecayOptimWrapperConstructor(**c)
    with pytest.raises(ValueError, match='layer_decay_rate'):
        ShuffleMambaLayerDecayOptimWrapperConstructor(cfg()['optim_wrapper_cfg'])
    with pytest.raises(ValueError, match='norm_decay_mult'):
        ShuffleMambaLayerDecayOptimWrapperConstructor(**cfg(norm_decay_mult=0.))
    with pytest.raises(ValueError, match="'layer_decay_rate'"):
        ShuffleMambaLayerDecayOptimWrapperConstructor(**cfg(decay_rate=0.9))
    with pytest.raises(ValueError, match='Unknown paramwise_cfg key'):
        ShuffleMambaLayerDecayOptimWrapperConstructor(**cfg(layer_decay=0.9))
    with pytest.raises(ValueError, match='lr_mult'):
        ShuffleMambaLayerDecayOptimWrapperConstructor(
            **cfg(custom_keys={'head': dict(lr=1.)}))
    with pytest.raises(ValueError, match='lr_mult'):
        ShuffleMambaLayerDecayOptimWrapperConstructor(
            **cfg(custom_keys={'head': dict(lr_mult=-1.)}))
    c = cfg()
    del c['optim_wrapper_cfg']['optimizer']['lr']
    with pytest.raises(ValueError, match='optimizer.lr'):
        ShuffleMambaLayerDecayOptimWrapperConstructor(**c)


def test_error_without_backbone_get_layer_depth():
    constructor = ShuffleMambaLayerDecayOptimWrapperConstructor(**cfg())
    with pytest.raises(TypeError, match='get_layer_depth'):
        constructor(nn.Sequential(nn.Linear(2, 2)))
    model = nn.Module()
    model.backbone = nn.Linear(2, 2)
    model.head = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="has no get_layer_depth.*DefaultOptimWrapperConstructor"):
        constructor(model)


def test_no_decay_by_mark_norm_type_and_bias_name():
    """No weight decay: a parameter marked _no_weight_decay, any parameter of a norm
    module (by type, whatever its name) and any bias; names alone decide nothing else."""
    model = Model()
    extra = nn.Module()
    extra.gn, extra.inorm = nn.GroupNorm(1, 2), nn.InstanceNorm2d(2, affine=True)
    extra.lin = nn.Linear(2, 2)
    extra.mha = nn.MultiheadAttention(4, 1)  # in_proj_bias: a '*_bias' leaf
    extra.D = nn.Parameter(torch.ones(2))  # SSM-like names, but not marked: decayed
    extra.ls = nn.Module()
    extra.ls.gamma = nn.Parameter(torch.ones(2))
    extra.injector = nn.Module()
    extra.injector.gamma = nn.Parameter(torch.ones(2))
    extra.marked = nn.Parameter(torch.ones(2, 2))
    extra.marked._no_weight_decay = True
    model.head.extra = extra
    groups = by_name(build(model), model)
    for name in ('gn.weight', 'gn.bias', 'inorm.weight', 'inorm.bias', 'lin.bias',
                 'mha.in_proj_bias', 'mha.out_proj.bias', 'marked'):
        assert groups[f'head.extra.{name}']['weight_decay'] == 0.0, name
    for name in ('lin.weight', 'mha.in_proj_weight', 'D', 'ls.gamma', 'injector.gamma'):
        assert groups[f'head.extra.{name}']['weight_decay'] == WD, name
    # the backbone's own parameters are marked where they are created
    bb = model.backbone
    assert {n for n, p in bb.named_parameters() if getattr(p, '_no_weight_decay', False)} \
        == {'pos_embed', 'norm_f.weight', 'norm_f.bias'} | {
            f'layers.{i}.{n}' for i in range(L) for n in (
                'norm.weight', 'norm.bias', 'mixer.A_log', 'mixer.A_b_log', 'mixer.D',
                'mixer.D_b')}


def test_layer_ids_from_the_backbone():
    """get_layer_depth of the backbone with prefix 'backbone.' (mmseg / mmdet models
    have no get_layer_depth of their own), of the model itself without a backbone."""
    model = Model()
    groups = by_name(build(model), model)
    assert groups['backbone.layers.2.mixer.A_log']['layer_id'] == 3
    assert groups['backbone.pos_embed']['layer_id'] == 0
    assert groups['head.fc.weight']['layer_id'] == TOP
    assert not hasattr(model, 'get_layer_depth')
    backbone = ShuffleMamba(arch=dict(embed_dims=32, num_layers=L), img_size=32,
                            patch_size=8)
    groups = by_name(build(backbone), backbone)
    assert groups['layers.0.mixer.in_proj.weight']['layer_id'] == 1
    assert groups['norm_f.weight']['layer_id'] == TOP


def test_logs_one_line_per_layer():
    records = []

    class ListHandler(logging.Handler):

        def emit(self, record):
            records.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    handler = ListHandler()
    logger.addHandler(handler)
    try:
        build(Model(), custom_keys={'head': dict(lr_mult=10.)})
    finally:
        logger.removeHandler(handler)
    lines = [r for r in records if 'layer ' in r and 'lr_scale' in r]
    assert len(lines) == L + 2
    assert any(NAME in r and 'layer_decay_rate=0.9' in r for r in records)
    assert "'head'" in lines[-1]


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet'])
def test_build_from_downstream_registries(scope):
    if scope == 'mmseg':
        from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
        from mmseg.utils import register_all_modules
    else:
        from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
        from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    assert OPTIM_WRAPPER_CONSTRUCTORS.get(NAME) is ShuffleMambaLayerDecayOptimWrapperConstructor

    model = Model()
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(type=NAME, **cfg()))
    assert isinstance(constructor, ShuffleMambaLayerDecayOptimWrapperConstructor)
    by_name(constructor(model), model)

    optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=BASE_LR, weight_decay=WD),
        constructor=NAME,
        paramwise_cfg=dict(layer_decay_rate=RATE, custom_keys={'head': dict(lr_mult=10.)}))
    with DefaultScope.overwrite_default_scope(scope):
        ow = build_optim_wrapper(model, optim_wrapper)
    groups = by_name(ow, model)
    assert groups['head.fc.weight']['lr'] == pytest.approx(10 * BASE_LR)
    assert groups['backbone.layers.0.mixer.in_proj.weight']['lr'] == \
        pytest.approx(BASE_LR * RATE**L)


def test_a_custom_key_option_nothing_reads_is_refused():
    """A typo in a custom_keys entry (lr_mul) would be a param-group key torch ignores;
    the optimizer's own options (betas) are passed on to the group."""
    with pytest.raises(ValueError, match=r"custom_keys\['head'\] has \['lr_mul'\], which "
                       r"nothing reads: it takes \['lr_mult', 'decay_mult', "
                       r"'requires_grad'\] and the param-group options of 'AdamW'"):
        build(Model(), custom_keys={'head': dict(lr_mul=10.)})
    wrapper = build(Model(), custom_keys={'head': dict(lr_mult=10., betas=(0.9, 0.99))})
    head = [g for g in wrapper.optimizer.param_groups if g.get('custom_key') == 'head']
    assert head and all(g['betas'] == (0.9, 0.99) for g in head)


def test_mmengine_constructor_refuses_what_it_would_ignore():
    from mmplugin_shufflemamba.engine import ShuffleMambaOptimWrapperConstructor as C
    optim = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=BASE_LR,
                                                     weight_decay=WD))
    for paramwise in (dict(layer_decay_rate=0.9), dict(num_layers=12, decay_rate=0.9)):
        with pytest.raises(ValueError, match="has no layer-wise lr decay: use constructor="
                           "'ShuffleMambaLayerDecayOptimWrapperConstructor'"):
            C(optim, paramwise)
    with pytest.raises(ValueError, match="Unknown paramwise_cfg key 'norm_decay'"):
        C(optim, dict(norm_decay=0.))
    with pytest.raises(ValueError, match=r"custom_keys\['head'\] has \['lr_mul'\], which "
                       r"nothing reads: it takes \['lr_mult', 'decay_mult'\] and the "
                       r"param-group options of 'AdamW'"):
        C(optim, dict(custom_keys={'head': dict(lr_mul=2.)}))
    # MMEngine copies the optimizer's own options (betas, lr, ...) into the groups
    wrapper = C(optim, dict(norm_decay_mult=0., custom_keys={
        'head': dict(lr_mult=2., betas=(0.9, 0.99)), 'pos_embed': dict(lr=0.5)}))(Model())
    groups = wrapper.optimizer.param_groups
    assert {g['lr'] for g in groups} == {BASE_LR, 2 * BASE_LR, 0.5}
    assert {g['betas'] for g in groups if g['lr'] == 2 * BASE_LR} == {(0.9, 0.99)}


def test_custom_key_options_of_an_optimizer_taking_kwargs_are_not_checked():
    """ZeroRedundancyOptimizer(params, optimizer_type, **kwargs): its group options cannot
    be listed, so nothing is refused."""
    from mmengine.registry import OPTIMIZERS
    assert OPTIMIZERS.get('ZeroRedundancyOptimizer') is not None
    ctor = ShuffleMambaLayerDecayOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='ZeroRedundancyOptimizer',
                                                 optimizer_type='AdamW', lr=BASE_LR,
                                                 weight_decay=WD)),
        dict(layer_decay_rate=RATE, custom_keys={'head': dict(betas=(0.9, 0.99))}))
    assert ctor.paramwise_cfg['custom_keys']['head']['betas'] == (0.9, 0.99)
