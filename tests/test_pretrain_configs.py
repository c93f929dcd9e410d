"""ImageNet-1K pretraining configs (configs/pretrain) and the pretraining quickstart.

Every config is checked against the recipe kept here (the paper's for the plain rows,
the official run_reg.sh stages for the Reg rows, the paper's Table 5 / 6 ablation rows
and Table 2's 256 px test rows), builds shrunk in mmpretrain's scope and runs a training
step and a prediction; the optimizer's parameter groups follow the official no-decay
rule; and what a pretraining run saves (MMEngine checkpoint, EMA and raw weights,
mmpretrain layout) loads into every dense config's backbone without conversion.
"""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmplugin_shufflemamba  # noqa: F401
from mmplugin_shufflemamba.checkpoint import CheckpointError, mmpretrain_to_official
from mmplugin_shufflemamba.utils.runtime import _cpu_optim_wrapper

from helpers.configs import framework, registry
from helpers.configs import shrink as shrink_dense  # the dense configs' shrink

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PRETRAIN_DIR = osp.join(ROOT, 'configs', 'pretrain')
QUICKSTART = osp.join(ROOT, 'configs', 'quickstart',
                      'shufflemamba-tiny_1xb32-400it_synthetic-in1k-64px.py')
RMS, LN = 'RMSNorm', 'LN'
_B = dict(arch='b', norm=RMS, tokens=('cls', ), img=224, batch=256, lr=1e-3,
          betas=(0.9, 0.95), wd=0.1, epochs=300, warmup=20, min_lr=5e-6, warmup_lr=5e-7,
          drop_path=0.5, ssr=0.5, schedule='linear', shuffle_cls=True, ema=1e-4, clip=3.0,
          mix=True, smooth=0.1, sampler='RepeatAugSampler', init=None, test_img=224,
          crop_ratio=0.875)
_REG_B1 = dict(_B, tokens=('reg', 12, 4), img=128, test_img=128, batch=128, lr=1e-3,
               betas=(0.9, 0.999), wd=0.05, warmup=5, min_lr=1e-5, warmup_lr=1e-6,
               drop_path=0.1, ssr=0.1, ema=None, clip=None, mix=False, smooth=0.0,
               sampler='RepeatAugSampler')
_REG_B2 = dict(_REG_B1, img=224, test_img=224, lr=4e-4, epochs=100, drop_path=0.4,
               init='reg-b_8xb128-300e_in1k-128px')
_REG_B3 = dict(_REG_B2, batch=64, lr=1e-5, wd=0.1, epochs=20, ema=4e-5, smooth=0.1,
               sampler='DefaultSampler', init='reg-b_8xb128-100e_in1k-224px',
               crop_ratio=1.0)


def _l2(row, init):
    return dict(row, arch='l2', tokens=('reg', 16, 8),
                init=init and init.replace('reg-b', 'reg-l2'))


_M = dict(_B, arch='m', norm=LN)
_L1 = dict(_B, arch='l1', batch=128, epochs=200, drop_path=0.6)

# Recipe per config; `dense` lists the dense configs its checkpoint is for.
PRETRAIN = {
    'shufflemamba-b_8xb256-300e_in1k.py': dict(
        _B, dense=['upernet_shufflemamba_b.py', 'upernet_shufflemamba_b-slws.py']),
    'shufflemamba-m_8xb256-300e_in1k.py': dict(
        _M, dense=['upernet_shufflemamba_m.py', 'mask-rcnn_shufflemamba_adapter-m.py']),
    'shufflemamba-l1_8xb128-200e_in1k.py': dict(_L1, dense=['upernet_shufflemamba_l1.py']),
    'shufflemamba-reg-b_8xb128-300e_in1k-128px.py': dict(_REG_B1, dense=[]),
    'shufflemamba-reg-b_8xb128-100e_in1k-224px.py': dict(_REG_B2, dense=[]),
    'shufflemamba-reg-b_8xb64-20e_in1k-224px-ft.py': dict(
        _REG_B3, dense=['upernet_shufflemamba_reg-b.py',
                        'upernet_shufflemamba_reg-adapter-b.py',
                        'mask-rcnn_shufflemamba_reg-adapter-b.py']),
    'shufflemamba-reg-l2_8xb128-300e_in1k-128px.py': dict(_l2(_REG_B1, None), dense=[]),
    'shufflemamba-reg-l2_8xb128-100e_in1k-224px.py': dict(
        _l2(_REG_B2, _REG_B2['init']), dense=[]),
    'shufflemamba-reg-l2_8xb64-20e_in1k-224px-ft.py': dict(
        _l2(_REG_B3, _REG_B3['init']),
        dense=['upernet_shufflemamba_reg-l2.py', 'mask-rcnn_shufflemamba_reg-adapter-l2.py']),
}

# The paper's rows that vary one of the configs above: `base` is the config each
# inherits and must equal but for the row's knob (SLWS for Tables 5 and 6, the test
# pipeline for Table 2's 256 px rows); `top1` the paper's figure(s) (docs/pretraining.md).
_M_BASE = 'shufflemamba-m_8xb256-300e_in1k.py'
_REG_B3_NAME = 'shufflemamba-reg-b_8xb64-20e_in1k-224px-ft.py'
_REG_L23_NAME = 'shufflemamba-reg-l2_8xb64-20e_in1k-224px-ft.py'
VARIANTS = {
    # Table 5, probability assignment (ShuffleMamba-M; P = 0.5 is the M config, 82.7).
    'shufflemamba-m_8xb256-300e_in1k-p0.4.py': dict(_M, ssr=0.4, base=_M_BASE, top1=82.3),
    'shufflemamba-m_8xb256-300e_in1k-p0.6.py': dict(_M, ssr=0.6, base=_M_BASE, top1=82.4),
    'shufflemamba-m_8xb256-300e_in1k-p0.7.py': dict(_M, ssr=0.7, base=_M_BASE, top1=82.4),
    'shufflemamba-m_8xb256-300e_in1k-const-p0.0.py': dict(
        _M, ssr=0.0, schedule='constant', base=_M_BASE, top1=81.8),
    'shufflemamba-m_8xb256-300e_in1k-const-p0.1.py': dict(
        _M, ssr=0.1, schedule='constant', base=_M_BASE, top1=81.5),
    'shufflemamba-m_8xb256-300e_in1k-const-p0.4.py': dict(
        _M, ssr=0.4, schedule='constant', base=_M_BASE, top1=81.1),
    # Table 6, the [CLS] token kept out of the shuffle (with it: 82.7 / 82.6 / 82.9).
    'shufflemamba-m_8xb256-300e_in1k-no-cls-shuffle.py': dict(
        _M, shuffle_cls=False, base=_M_BASE, top1=82.6),
    'shufflemamba-b_8xb256-300e_in1k-no-cls-shuffle.py': dict(
        _B, shuffle_cls=False, base='shufflemamba-b_8xb256-300e_in1k.py', top1=82.6),
    'shufflemamba-l1_8xb128-200e_in1k-no-cls-shuffle.py': dict(
        _L1, shuffle_cls=False, base='shufflemamba-l1_8xb128-200e_in1k.py', top1=82.8),
    # Table 2, "256x256 Test": the 224 px models tested at 256 px, each at its own crop
    # ratio (plain rows 0.875, Reg stage 3 1.0); top-1 as printed (plain rows: the
    # table's two rows, the second with EMA).
    'shufflemamba-m_8xb256-300e_in1k-test-256px.py': dict(
        _M, test_img=256, base=_M_BASE, top1=(82.8, 83.0)),
    'shufflemamba-b_8xb256-300e_in1k-test-256px.py': dict(
        _B, test_img=256, base='shufflemamba-b_8xb256-300e_in1k.py', top1=(82.9, 83.0)),
    'shufflemamba-l1_8xb128-200e_in1k-test-256px.py': dict(
        _L1, test_img=256, base='shufflemamba-l1_8xb128-200e_in1k.py', top1=(83.1, 83.2)),
    'shufflemamba-reg-b_8xb64-20e_in1k-224px-ft-test-256px.py': dict(
        _REG_B3, test_img=256, base=_REG_B3_NAME, top1=83.2),
    'shufflemamba-reg-l2_8xb64-20e_in1k-224px-ft-test-256px.py': dict(
        _l2(_REG_B3, _REG_B3['init']), test_img=256, base=_REG_L23_NAME, top1=83.6),
}
PRETRAIN.update({name: dict(row, dense=[]) for name, row in VARIANTS.items()})
DENSE = {d: name for name, row in PRETRAIN.items() for d in row['dense']}


def load(name):
    return Config.fromfile(osp.join(PRETRAIN_DIR, name))


def models():
    import mmpretrain.models  # noqa: F401
    from mmpretrain.registry import MODELS
    return MODELS


def shrink(cfg, dims=32, layers=2):
    """The classifier with 2 blocks of width 32, no init_cfg files, the rest as set."""
    cfg = copy.deepcopy(cfg)
    bb = cfg.model.backbone
    bb.update(embed_dims=dims, num_layers=layers, kernel='torch')
    bb.pop('init_cfg', None)
    cfg.model.head.pop('init_cfg', None)
    cfg.model.head.in_channels = dims if bb.get('with_cls_token') else \
        bb.num_registers * dims // bb.cls_reduce
    # What MMEngine's runner does with the top-level entry.
    cfg.model.setdefault('data_preprocessor', cfg.get('data_preprocessor', None))
    return cfg


def test_every_pretrain_config_is_in_the_table():
    names = sorted(osp.basename(p) for p in glob.glob(osp.join(PRETRAIN_DIR, '*.py')))
    assert names == sorted(PRETRAIN)


@pytest.mark.parametrize('name', sorted(PRETRAIN))
def test_pretrain_config_follows_the_recipe(name):
    row, cfg = PRETRAIN[name], load(name)
    bb, head = cfg.model.backbone, cfg.model.head
    assert cfg.model.type == 'ImageClassifier' and bb.type == 'ShuffleMamba'
    assert 'mmplugin_shufflemamba' in cfg.custom_imports['imports']
    assert bb.arch == row['arch'] and bb.norm_cfg == dict(type=row['norm'], eps=1e-5)
    assert bb.img_size == row['img'] and bb.patch_size == 16
    assert bb.out_cls and tuple(bb.out_indices) == ()
    assert bb.get('shuffle_cls', True) == row['shuffle_cls']
    assert bb.drop_path_rate == row['drop_path'] and bb.shuffle_rate == row['ssr']
    assert bb.get('shuffle_schedule', 'linear') == row['schedule']
    # a 256 px test reads the 224 px position embedding, resized bicubically
    assert bb.get('interpolate_mode', 'bicubic') == 'bicubic'
    dims = dict(m=576, b=768, l1=1024, l2=1024)[row['arch']]
    if row['tokens'][0] == 'cls':
        assert bb.with_cls_token and bb.get('num_registers', 0) == 0
        assert head.in_channels == dims
    else:
        _, regs, reduce = row['tokens']
        assert not bb.get('with_cls_token', False)
        assert bb.num_registers == regs and bb.cls_reduce == reduce
        assert head.in_channels == regs * dims // reduce
    assert head.type == 'LinearClsHead' and head.num_classes == 1000
    if row['smooth']:
        assert head.loss == dict(type='LabelSmoothLoss', label_smooth_val=row['smooth'],
                                 mode='original')
    else:
        assert head.loss.type == 'CrossEntropyLoss'
    augments = (cfg.model.get('train_cfg') or {}).get('augments', [])
    assert augments == ([dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]
                        if row['mix'] else [])
    assert cfg.train_dataloader.batch_size == row['batch']
    assert cfg.train_dataloader.sampler.type == row['sampler']
    ow = cfg.optim_wrapper
    assert ow.type == 'AmpOptimWrapper' and ow.dtype == 'bfloat16'
    opt = ow.optimizer
    assert opt.type == 'AdamW' and opt.lr == pytest.approx(row['lr'])
    assert tuple(opt.betas) == row['betas'] and opt.weight_decay == row['wd']
    assert (ow.get('clip_grad') or {}).get('max_norm') == row['clip']
    warm, cos = cfg.param_scheduler
    assert warm.type == 'LinearLR' and warm.end == row['warmup'] and warm.by_epoch
    assert warm.start_factor * opt.lr == pytest.approx(row['warmup_lr'])
    assert cos.type == 'CosineAnnealingLR' and cos.begin == row['warmup']
    assert cos.end == row['epochs'] and cos.T_max == row['epochs'] - row['warmup']
    assert cos.eta_min == pytest.approx(row['min_lr'])
    assert cfg.train_cfg.max_epochs == row['epochs']
    ema = [h for h in cfg.get('custom_hooks', []) if h.type == 'EMAHook']
    assert [h.momentum for h in ema] == ([row['ema']] if row['ema'] else [])
    # the official scripts' seed per rank: args.seed (0) + rank
    assert cfg.randomness.seed == 0 and cfg.randomness.diff_rank_seed
    assert cfg.train_dataloader.sampler.seed == 0  # the data order: one, fixed
    # The train pipeline crops at the model's resolution, the test pipeline at the
    # row's test size after resizing the short side to test size / crop ratio.
    crops = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomResizedCrop']
    assert crops[0].scale == row['img']
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        resize, crop = [t for t in loader.dataset.pipeline
                        if t.type in ('ResizeEdge', 'CenterCrop')]
        assert crop.type == 'CenterCrop' and crop.crop_size == row['test_img']
        assert resize.edge == 'short' and resize.interpolation == 'bicubic'
        assert resize.scale == int(row['test_img'] / row['crop_ratio'])
    if row['init']:
        for part in (bb.init_cfg, head.init_cfg):
            assert part.type == 'Pretrained' and row['init'] in part.checkpoint
        assert head.init_cfg.prefix == 'head'
        assert set(bb.init_cfg) == {'type', 'checkpoint'}  # nothing of stage 1's init
    else:  # from scratch, as the official model file of the row
        assert bb.init_cfg == dict(type='ShuffleMambaOfficialInit',
                                   official='reg' if row['tokens'][0] == 'reg' else
                                   'shufflemamba')


def _without(cfg, backbone_keys=(), pipeline=False):
    """``cfg`` as a dict less the named backbone keys (and the test pipeline)."""
    d = cfg.to_dict()
    for k in backbone_keys:
        d['model']['backbone'].pop(k, None)
    if pipeline:
        for k in ('test_pipeline', 'test_size'):
            d.pop(k, None)
        for loader in ('val_dataloader', 'test_dataloader'):
            d[loader]['dataset'].pop('pipeline')
    return d


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_paper_row_variant_changes_only_its_knob(name):
    """An ablation row differs from its base config in SLWS alone, a 256 px test row in
    the test pipeline alone (same model, same weights: img_size stays 224)."""
    row = VARIANTS[name]
    cfg, base = load(name), load(row['base'])
    test_only = row['test_img'] != row['img']
    keys = () if test_only else ('shuffle_rate', 'shuffle_schedule', 'shuffle_cls')
    assert _without(cfg, keys, test_only) == _without(base, keys, test_only)
    if test_only:
        assert cfg.val_dataloader.dataset.pipeline != base.val_dataloader.dataset.pipeline
    else:
        assert cfg.model.backbone != base.model.backbone


def test_every_pretrain_config_is_in_the_docs():
    with open(osp.join(ROOT, 'docs', 'pretraining.md')) as f:
        doc = f.read()
    for name in PRETRAIN:
        assert f'../configs/pretrain/{name})' in doc, name
    for name, row in VARIANTS.items():
        top1 = row['top1'] if isinstance(row['top1'], tuple) else (row['top1'], )
        line = next(x for x in doc.splitlines() if f'/{name})' in x)
        assert ' / '.join(f'{a:.1f}' for a in top1) in line, (name, line)


@pytest.mark.parametrize('name', sorted(n for n, r in VARIANTS.items()
                                        if r['test_img'] != r['img']))
def test_256px_test_config_predicts_at_256_with_the_224_position_embedding(name):
    """The 256 px test rows keep the model built at 224 px (its 14x14 position grid);
    a 256 px image runs on the 16x16 grid, the position embedding resized bicubically
    in the forward."""
    cfg = shrink(load(name))
    assert cfg.model.backbone.img_size == 224
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = models().build(cfg.model)
        model.init_weights()
        model.eval()
        assert model.backbone.patch_resolution == (14, 14)
        x = torch.randn(1, 3, 256, 256)
        tokens, grid, _ = model.backbone.embed(x)
        assert grid == (16, 16)
        assert tokens.shape[1] == 256 + model.backbone.tokens.num_extra
        with torch.no_grad():
            scores = model(x, mode='tensor')
        assert scores.shape == (1, 1000) and torch.isfinite(scores).all()


@pytest.mark.parametrize('name', sorted(PRETRAIN) + ['quickstart'])
def test_pretrain_config_builds_shrunk_and_trains(name):
    cfg = load(name) if name != 'quickstart' else Config.fromfile(QUICKSTART)
    cfg = shrink(cfg)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = models().build(cfg.model)
        model.init_weights()
        from mmpretrain.structures import DataSample
        size = cfg.model.backbone.img_size // 4
        imgs = torch.randint(0, 255, (4, 3, size, size), dtype=torch.uint8)
        samples = [DataSample().set_gt_label(i % 3) for i in range(4)]
        data = model.data_preprocessor(dict(inputs=list(imgs), data_samples=samples), True)
        model.train()
        losses = model(**data, mode='loss')
        total, _ = model.parse_losses(losses)
        assert torch.isfinite(total)
        total.backward()
        assert model.backbone.cls_token.grad is not None
        model.eval()
        with torch.no_grad():
            data = model.data_preprocessor(dict(inputs=list(imgs), data_samples=samples))
            pred = model(**data, mode='predict')
        assert pred[0].pred_score.shape == (cfg.model.head.num_classes, )


def test_no_weight_decay_follows_the_official_optimizer():
    """timm's rule in the official script: no decay on 1-D parameters (norms, biases, D),
    pos_embed and cls_token; decay on every weight matrix, A_log and the convs."""
    from mmengine.optim import build_optim_wrapper
    for name in ('shufflemamba-b_8xb256-300e_in1k.py',
                 'shufflemamba-reg-b_8xb64-20e_in1k-224px-ft.py'):
        cfg = shrink(load(name))
        _cpu_optim_wrapper(cfg)
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            model = models().build(cfg.model)
            wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        decay = {}
        names = {id(p): n for n, p in model.named_parameters()}
        for group in wrapper.optimizer.param_groups:
            for p in group['params']:
                decay[names[id(p)]] = group['weight_decay']
        assert len(decay) == len(names)
        for n, p in model.named_parameters():
            no_decay = p.ndim <= 1 or n.split('.')[-1] in ('pos_embed', 'cls_token',
                                                           'pos_embed_cls')
            want = 0.0 if no_decay else cfg.optim_wrapper.optimizer.weight_decay
            assert decay[n] == pytest.approx(want), n


def test_amp_optim_wrapper_becomes_plain_without_cuda():
    cfg = load('shufflemamba-b_8xb256-300e_in1k.py')
    _cpu_optim_wrapper(cfg)
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert 'dtype' not in cfg.optim_wrapper and cfg.optim_wrapper.clip_grad.max_norm == 3.0
    assert Config.fromfile(QUICKSTART).optim_wrapper.type == 'OptimWrapper'


# ------------------------------------------------ pretraining checkpoint -> dense configs
def mmengine_checkpoint(path, cfg, seed):
    """What MMEngine's runner saves for an ImageClassifier trained with EMAHook: the EMA
    weights as 'state_dict', the raw ones in 'ema_state_dict' (module.* + steps), the
    config text in meta."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        torch.manual_seed(seed)
        raw = models().build(cfg.model)
        raw.init_weights()
        torch.manual_seed(seed + 1)
        ema = models().build(cfg.model)
        ema.init_weights()
    raw_sd, ema_sd = raw.state_dict(), ema.state_dict()
    torch.save(dict(
        meta=dict(cfg=cfg.pretty_text, epoch=300, iter=1000, mmengine_version='0.10.7'),
        state_dict=ema_sd,
        ema_state_dict=dict({f'module.{k}': v for k, v in raw_sd.items()},
                            steps=torch.tensor(1000)),
        message_hub=dict(), optimizer=dict(state={}, param_groups=[])), path)
    return mmpretrain_to_official(raw_sd), mmpretrain_to_official(ema_sd)


def dense_backbone(dense, layers, checkpoint=None, **init):
    """The dense config's backbone, shrunk as test_configs does, loading ``checkpoint``."""
    cfg = shrink_dense(Config.fromfile(osp.join(ROOT, 'configs', dense)), layers=layers)
    bb = cfg.model.backbone
    bb.kernel = 'torch'
    bb.init_cfg = dict(type='Pretrained', checkpoint=checkpoint, **init)
    scope = framework(cfg)
    with DefaultScope.overwrite_default_scope(scope):
        model = registry(scope).build(bb)
        model.init_weights()
    return model


@pytest.mark.parametrize('dense', sorted(DENSE))
def test_pretraining_checkpoint_loads_into_the_dense_config(tmp_path, dense):
    cfg = shrink(load(DENSE[dense]), layers=4)
    path = str(tmp_path / 'epoch_300.pth')
    raw, ema = mmengine_checkpoint(path, cfg, seed=0)
    for use_ema, want in ((False, raw), (True, ema)):
        model = dense_backbone(dense, 4, path, use_ema=use_ema)
        got = model.state_dict()
        for k, v in want.items():
            if k.startswith('layers.') or k.startswith('patch_embed.'):
                torch.testing.assert_close(got[k], v, msg=k)
        assert not hasattr(model, 'cls_token') and not hasattr(model, 'neck')
        grid = model.patch_resolution
        assert got['pos_embed'].shape[1] == grid[0] * grid[1]
        if grid == (cfg.model.backbone.img_size // 16, ) * 2:
            patch_pos = want['pos_embed'][:, 1:] if cfg.model.backbone.get(
                'with_cls_token') else want['pos_embed']
            torch.testing.assert_close(got['pos_embed'], patch_pos)


def test_classifier_checkpoint_with_the_wrong_norm_names_the_fix(tmp_path):
    cfg = shrink(load('shufflemamba-m_8xb256-300e_in1k.py'), layers=4)  # LayerNorm
    path = str(tmp_path / 'm.pth')
    mmengine_checkpoint(path, cfg, seed=0)
    with pytest.raises(CheckpointError, match='norm mismatch'):
        dense_backbone('upernet_shufflemamba_b.py', 4, path)  # RMSNorm


@pytest.mark.parametrize('name', sorted(PRETRAIN))
def test_head_pretrained_init_takes_only_what_mmengine_accepts(name):
    """A head's Pretrained init goes through MMEngine's PretrainedInit, which takes only
    checkpoint / prefix / map_location: nothing merged in from a base's init_cfg."""
    from mmengine.model.weight_init import PretrainedInit
    init = load(name).model.head.get('init_cfg')
    if init is not None and init.get('type') == 'Pretrained':
        kwargs = {k: v for k, v in init.items() if k != 'type'}
        assert set(kwargs) <= {'checkpoint', 'prefix', 'map_location'}, sorted(kwargs)
        PretrainedInit(**kwargs)


def test_pretrained_over_the_base_official_init(tmp_path):
    """A config on a pretraining base that asks for Pretrained weights (as
    --cfg-options init_cfg.type=Pretrained init_cfg.checkpoint=X merges them: the
    base's 'official' key stays) loads them, saying the key is not used."""
    import torch
    from helpers.logs import captured_log
    from mmplugin_shufflemamba import ShuffleMamba
    cfg = load('shufflemamba-m_8xb256-300e_in1k.py')
    bb = cfg.model.backbone
    bb.arch, bb.img_size = dict(embed_dims=32, num_layers=2), 32
    kw = {k: v for k, v in bb.items() if k not in ('type', 'init_cfg')}
    src = ShuffleMamba(**kw)
    src.init_weights()
    torch.save(src.state_dict(), tmp_path / 'w.pth')
    cfg.merge_from_dict({'model.backbone.init_cfg.type': 'Pretrained',
                         'model.backbone.init_cfg.checkpoint': str(tmp_path / 'w.pth'),
                         'model.backbone.init_cfg.ckpt_format': 'shufflemamba'})
    assert cfg.model.backbone.init_cfg.official == 'shufflemamba'
    m = ShuffleMamba(**kw, init_cfg=cfg.model.backbone.init_cfg.to_dict())
    with captured_log() as log:
        m.init_weights()
    assert any("'official='shufflemamba'' belongs to the base config's" in line
               for line in log)
    for k, v in src.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
