"""Every config in configs/ loads, resolves its mmseg/mmdet bases and builds (shrunk) in
its own framework's scope; loss and predict of the segmentors and detectors."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmplugin_shufflemamba  # noqa: F401
from mmplugin_shufflemamba.utils.runtime import _replace_syncbn

from helpers.configs import framework, registry, shrink

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The dense configs; the ImageNet classifiers (configs/pretrain, the pretraining
# quickstart) are tested in test_pretrain_configs.py.
CONFIGS = sorted(c for c in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if 'in1k' not in osp.basename(c))
ADAPTER_CONFIGS = ['configs/mask-rcnn_shufflemamba_adapter-m.py',
                   'configs/mask-rcnn_shufflemamba_reg-adapter-b.py',
                   'configs/mask-rcnn_shufflemamba_reg-adapter-l2.py',
                   'configs/upernet_shufflemamba_reg-adapter-b.py']


def seg_batch(n=2, size=64):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(n):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, size, size)))
        s.set_metainfo(dict(img_shape=(size, size), pad_shape=(size, size),
                            ori_shape=(size, size)))
        samples.append(s)
    return torch.randn(n, 3, size, size), samples


def det_batch(model, n=2, size=(96, 128)):
    from mmdet.testing import demo_mm_inputs
    packed = demo_mm_inputs(n, [[3, *size]] * n, num_items=[3] * n, num_classes=4,
                            with_mask=True)
    return model.data_preprocessor(packed, True)


def test_configs_exist():
    names = [osp.relpath(c, ROOT) for c in CONFIGS]
    for name in ['configs/upernet_shufflemamba_b.py'] + ADAPTER_CONFIGS:
        assert name in names


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.relpath(c, ROOT) for c in CONFIGS])
def test_config_loads_and_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.type in ('ShuffleMamba', 'ShuffleMambaAdapter')
    assert 'mmplugin_shufflemamba' in cfg.custom_imports['imports']
    scope = framework(cfg)
    models = registry(scope)
    with DefaultScope.overwrite_default_scope(scope):
        model = models.build(shrink(cfg).model)
        model.init_weights()
        model.train()
        if scope == 'mmseg':
            losses = model(*seg_batch(), mode='loss')
        else:
            data = det_batch(model)
            losses = model(**data, mode='loss')
        total, _ = model.parse_losses(losses)
        assert torch.isfinite(total)
        total.backward()
        model.eval()
        with torch.no_grad():
            if scope == 'mmseg':
                inputs, samples = seg_batch(1)
                pred = model(inputs, samples, mode='predict')
                assert pred[0].pred_sem_seg.data.shape == (1, 64, 64)
            else:
                data = det_batch(model, 1)
                pred = model(**data, mode='predict')
                inst = pred[0].pred_instances
                assert inst.bboxes.shape[-1] == 4
                assert len(inst.masks) == len(inst.bboxes) == len(inst.scores)


def test_b_config_matches_paper_recipe_and_size():
    models = registry('mmseg')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'upernet_shufflemamba_b.py'))
    bb = cfg.model.backbone
    assert (bb.arch, bb.img_size, bb.patch_size, bb.drop_path_rate) == ('b', 224, 16, 0.2)
    assert tuple(bb.out_indices) == (5, 11, 17, 23)
    assert cfg.model.get('neck') is None
    assert cfg.optim_wrapper.optimizer.lr == 6e-5
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.01
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.model.test_cfg.mode == 'slide' and tuple(cfg.model.test_cfg.stride) == (341, 341)
    _replace_syncbn(cfg.model)
    model = models.build(cfg.model)
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e6) == 131, params  # paper Table 3: 131M
    # no weight decay on embeddings, norms, A_log and D (the backbone marks them; the
    # config's constructor reads the mark), weight decay 0.01 elsewhere
    from mmengine.optim import build_optim_wrapper
    assert cfg.optim_wrapper.constructor == 'ShuffleMambaOptimWrapperConstructor'
    assert 'paramwise_cfg' not in cfg.optim_wrapper
    optim = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    decay = {id(p): g['weight_decay'] for g in optim.param_groups for p in g['params']}
    params = dict(model.named_parameters())
    for name in ('backbone.pos_embed', 'backbone.layers.3.norm.weight',
                 'backbone.layers.3.mixer.A_log', 'backbone.layers.3.mixer.D_b',
                 'backbone.layers.3.mixer.A_b_log', 'backbone.norm_f.weight'):
        assert decay[id(params[name])] == 0, name
    assert decay[id(params['backbone.layers.3.mixer.in_proj.weight'])] == 0.01


# Official adapter settings (REFERENCE.md, the official configs) and paper sizes.
ADAPTER_ROWS = {
    'mask-rcnn_shufflemamba_adapter-m.py': dict(
        arch='m', norm='LN', heads=12, drop_path=0.4, params=103,
        groups=[[0, 7], [8, 15], [16, 23], [24, 31]]),
    'mask-rcnn_shufflemamba_reg-adapter-b.py': dict(
        arch='b', norm='RMSNorm', heads=12, drop_path=0.3, params=131,
        groups=[[0, 5], [6, 11], [12, 17], [18, 23]]),
    'mask-rcnn_shufflemamba_reg-adapter-l2.py': dict(
        arch='l2', norm='RMSNorm', heads=16, drop_path=0.5, params=383,
        groups=[[0, 11], [12, 23], [24, 35], [36, 47]]),
    'upernet_shufflemamba_reg-adapter-b.py': dict(
        arch='b', norm='RMSNorm', heads=12, drop_path=0.2, params=145,
        groups=[[0, 5], [6, 11], [12, 17], [18, 23]]),
}


@pytest.mark.parametrize('name', sorted(ADAPTER_ROWS))
def test_adapter_configs_match_official_recipe(name):
    row = ADAPTER_ROWS[name]
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    bb = cfg.model.backbone
    assert bb.type == 'ShuffleMambaAdapter'
    assert (bb.arch, bb.norm_cfg.type, bb.deform_num_heads, bb.drop_path_rate) == (
        row['arch'], row['norm'], row['heads'], row['drop_path'])
    assert [list(g) for g in bb.interaction_indexes] == row['groups']
    assert (bb.conv_inplane, bb.n_points, bb.cffn_ratio, bb.deform_ratio,
            bb.init_values) == (64, 4, 0.25, 0.5, 0.0)
    assert bb.with_cffn and bb.use_extra_extractor and bb.add_backbone_feature
    assert bb.shuffle_rate == 0.0 and bb.img_size == 224 and bb.patch_size == 16
    assert bb.adapter_norm_cfg.type == 'SyncBN'
    assert 'num_registers' not in bb and 'out_indices' not in bb
    opt = cfg.optim_wrapper
    assert opt.optimizer.type == 'AdamW' and tuple(opt.optimizer.betas) == (0.9, 0.999)
    assert cfg.train_dataloader.batch_size == 2
    if name.startswith('mask-rcnn'):
        assert (opt.optimizer.lr, opt.optimizer.weight_decay) == (1e-4, 0.05)
        assert opt.constructor == 'ShuffleMambaLayerDecayOptimWrapperConstructor'
        assert opt.paramwise_cfg.layer_decay_rate == 0.9
        assert opt.paramwise_cfg.no_decay == 'flat'  # the official constructor's rule
        assert cfg.train_cfg.max_epochs == 12
        steps = [s for s in cfg.param_scheduler if s.type == 'MultiStepLR']
        assert steps and list(steps[0].milestones) == [8, 11]
        assert cfg.model.neck.type == 'FPN' and cfg.model.neck.out_channels == 256
        assert cfg.model.neck.num_outs == 5
    else:
        assert (opt.optimizer.lr, opt.optimizer.weight_decay) == (6e-5, 0.01)
        # no layer decay in the official UperNet runs: MMEngine's constructor + the mark
        assert opt.constructor == 'ShuffleMambaOptimWrapperConstructor'
        assert 'paramwise_cfg' not in opt
        assert cfg.train_cfg.max_iters == 160000
        assert cfg.param_scheduler[0].end == 1500
        assert cfg.model.test_cfg.mode == 'slide'
        assert cfg.model.decode_head.channels == 512
        # the official adapter's FCN auxiliary head reads level 3 (stride 16)
        assert cfg.model.auxiliary_head.in_index == 2


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(ADAPTER_ROWS))
def test_adapter_configs_reproduce_paper_params(name):
    """Whole-model parameter counts within 2% of the paper's Tables 3-4."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    scope = framework(cfg)
    models = registry(scope)
    _replace_syncbn(cfg.model)
    with DefaultScope.overwrite_default_scope(scope):
        model = models.build(cfg.model)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    expected = ADAPTER_ROWS[name]['params']
    assert abs(params - expected) / expected < 0.02, (name, params, expected)


def test_three_line_user_config_inherits_and_sets_pretrained(tmp_path):
    user = tmp_path / 'my_config.py'
    base = osp.join(ROOT, 'configs', 'upernet_shufflemamba_b.py')
    user.write_text(
        f"_base_ = [{base!r}]\n"
        "model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='x.pth')))\n"
        "train_dataloader = dict(dataset=dict(data_root='data/ade'))\n")
    cfg = Config.fromfile(str(user))
    assert cfg.model.backbone.type == 'ShuffleMamba'
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint='x.pth')
    assert cfg.train_dataloader.dataset.data_root == 'data/ade'
    assert cfg.train_dataloader.dataset.type == 'CheckedADE20KDataset'


def test_every_config_checks_the_labels_its_heads_predict():
    from mmplugin_shufflemamba.utils import load_config
    for path in CONFIGS:
        load_config(path)  # no ConfigError: the pipelines' checks match the heads


def test_changed_class_count_must_reach_the_label_checks():
    """A --cfg-options change of the heads' num_classes that leaves the pipelines'
    CheckSegLabels at another count is refused before anything runs, naming both (the
    tools print it without a traceback)."""
    import subprocess
    import sys
    from mmplugin_shufflemamba.utils import ConfigError, load_config
    config = osp.join(ROOT, 'configs', 'upernet_shufflemamba_b.py')
    with pytest.raises(ConfigError, match=r'train_dataloader\.dataset\.pipeline\[\d\] checks '
                       r'labels against num_classes=150 but model\.decode_head\.'
                       r'num_classes=10: set both'):
        load_config(config, cfg_options={'model.decode_head.num_classes': 10})
    with pytest.raises(ConfigError, match='model.auxiliary_head.num_classes=7'):
        load_config(config, cfg_options={'model.auxiliary_head.num_classes': 7})
    run = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
                          '--cfg-options', 'model.decode_head.num_classes=10'],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and 'Traceback' not in run.stderr, run.stderr[-2000:]
    assert 'tools/train.py: train_dataloader.dataset.pipeline' in run.stderr


def test_a_detectors_heads_must_predict_the_classes_of_its_data():
    """num_classes of the box / mask heads against each dataset's classes (metainfo, or
    COCO's 80): refused before anything runs, naming both."""
    from mmplugin_shufflemamba.utils import ConfigError, load_config
    det = osp.join(ROOT, 'configs', 'mask-rcnn_shufflemamba_adapter-m.py')
    with pytest.raises(ConfigError) as e:
        load_config(det, cfg_options={'model.roi_head.bbox_head.num_classes': 3})
    assert str(e.value).startswith(
        'model.roi_head.bbox_head.num_classes=3 but train_dataloader.dataset has 80 classes'
    ), str(e.value)
    with pytest.raises(ConfigError, match=r'model\.roi_head\.mask_head\.num_classes=80 but '
                       r'train_dataloader\.dataset has 2 classes'):
        load_config(det, cfg_options={'model.roi_head.bbox_head.num_classes': 2,
                                      'train_dataloader.dataset.metainfo':
                                      dict(classes=('a', 'b'))})
    quick = osp.join(ROOT, 'configs', 'quickstart',
                     'mask-rcnn_shufflemamba-adapter-tiny_1xb8-400it_synthetic-coco-128x128.py')
    cfg = load_config(quick)
    n = len(cfg.train_dataloader.dataset.metainfo['classes'])
    with pytest.raises(ConfigError, match=f'val_dataloader.dataset has {n + 1} classes'):
        load_config(quick, cfg_options={'val_dataloader.dataset.metainfo.classes':
                                        [f'c{i}' for i in range(n + 1)]})
    # a wrapped dataset is read through its wrapper
    wrapped = dict(type='RepeatDataset', times=2, dataset=dict(cfg.train_dataloader.dataset),
                   _delete_=True)
    with pytest.raises(ConfigError, match='train_dataloader.dataset has 80 classes'):
        load_config(quick, cfg_options={'train_dataloader.dataset': dict(
            wrapped, dataset=dict(wrapped['dataset'], metainfo=None))})
    # a class-agnostic mask head has one output whatever its num_classes
    load_config(det, cfg_options={'model.roi_head.mask_head.class_agnostic': True,
                                  'model.roi_head.mask_head.num_classes': 1})
    # text-prompted detectors count tokens (mmdet's Grounding DINO: 256), and other
    # backbones' detectors are the frameworks' own business
    from mmplugin_shufflemamba.utils import check_detection_classes
    cfg = load_config(det)
    cfg.model.roi_head.bbox_head.num_classes = 256
    cfg.model.language_model = dict(type='BertModel')
    check_detection_classes(cfg)
    cfg.model.pop('language_model')
    cfg.model.backbone = dict(type='mmdet.ResNet', depth=50)
    check_detection_classes(cfg)


def test_a_coco_metric_scores_against_the_file_its_dataset_reads():
    """Another data_root for the dataset alone leaves CocoMetric at the config file's
    annotation path: refused, naming both (it scored another file's annotations, or
    stopped in pycocotools); a file beside the dataset's under its data_root passes (a
    panoptic dataset's instance annotations)."""
    from mmplugin_shufflemamba.utils import ConfigError, load_config
    det = osp.join(ROOT, 'configs', 'mask-rcnn_shufflemamba_adapter-m.py')
    with pytest.raises(ConfigError) as e:
        load_config(det, cfg_options={'val_dataloader.dataset.data_root': 'elsewhere/'})
    assert str(e.value).startswith(
        "val_evaluator.ann_file='data/coco/annotations/instances_val2017.json' but "
        "val_dataloader.dataset reads 'elsewhere/annotations/instances_val2017.json'"), \
        str(e.value)
    load_config(det, cfg_options={
        'val_dataloader.dataset.data_root': 'elsewhere/',
        'val_evaluator.ann_file': 'elsewhere/annotations/instances_val2017.json'})
    load_config(det, cfg_options={
        'val_evaluator.ann_file': 'data/coco/annotations/panoptic_val2017.json'})


def test_the_modules_after_the_backbone_must_take_its_width(tmp_path):
    """Another arch or embed_dims by --cfg-options, the neck or heads left at the old
    width: refused before anything is built, naming the setting and its value (the
    first forward would stop in torch's convolution). get_flops.py says the same."""
    import subprocess
    import sys
    from mmplugin_shufflemamba.utils import ConfigError, load_config
    seg = osp.join(ROOT, 'configs', 'upernet_shufflemamba_b.py')
    det = osp.join(ROOT, 'configs', 'mask-rcnn_shufflemamba_adapter-m.py')
    with pytest.raises(ConfigError) as e:
        load_config(seg, cfg_options={'model.backbone.arch': 'm'})
    assert str(e.value) == (
        "model.decode_head.in_channels=[768, 768, 768, 768] but the backbone's maps have "
        '576 channels (its embed_dims): set model.decode_head.in_channels=[576] * 4.')
    with pytest.raises(ConfigError, match=r'model\.auxiliary_head\.in_channels=768 but .* '
                       r'set model\.auxiliary_head\.in_channels=576\.'):
        load_config(seg, cfg_options={'model.backbone.arch': 'm',
                                      'model.decode_head.in_channels': [576] * 4})
    with pytest.raises(ConfigError, match=r'model\.neck\.in_channels=\[576, 576, 576, 576\]'
                       r" but the backbone's maps have 32 channels"):
        load_config(det, cfg_options={'model.backbone.embed_dims': 32})
    cfg = load_config(det, cfg_options={'model.backbone.embed_dims': 32,
                                        'model.neck.in_channels': [32] * 4})
    assert cfg.model.neck.in_channels == [32] * 4
    # a list of necks: the first takes the maps, the heads take the last one's
    neck = dict(type='MultiLevelNeck', in_channels=[768] * 4, out_channels=256)
    heads = {'model.decode_head.in_channels': [256] * 4, 'model.auxiliary_head.in_channels': 256}
    load_config(seg, cfg_options={'model.neck': [neck], **heads})
    with pytest.raises(ConfigError, match=r'model\.neck\[0\]\.in_channels=\[576, 576, 576, '
                       r"576\] but the backbone's maps have 768"):
        load_config(seg, cfg_options={'model.neck': [dict(neck, in_channels=[576] * 4)],
                                      **heads})
    # out_cls: the classification feature (here 12 registers of 768 reduced by 4) goes on
    from mmengine.config import Config
    from mmplugin_shufflemamba.utils import check_backbone_channels
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'pretrain',
                                   'shufflemamba-reg-b_8xb128-300e_in1k-128px.py'))
    check_backbone_channels(cfg)  # the head takes 2304 = 12 x 768 // 4
    cfg.model.backbone.cls_reduce = 2
    with pytest.raises(ConfigError, match=r"model\.head\.in_channels=2304 but the backbone's "
                       r'classification feature has 4608 channels \(12 registers x '
                       r'embed_dims // cls_reduce\): set model\.head\.in_channels=4608\.'):
        check_backbone_channels(cfg)
    cfg.model.neck = dict(type='LinearNeck', in_channels=4608, out_channels=2304)
    check_backbone_channels(cfg)  # (a neck between them: its own widths)
    pretrain = osp.join(ROOT, 'configs', 'pretrain', 'shufflemamba-b_8xb256-300e_in1k.py')
    with pytest.raises(ConfigError, match=r"model\.head\.in_channels=768 but the backbone's "
                       r'classification feature \(its cls token\) has 576 channels'):
        load_config(pretrain, cfg_options={'model.backbone.arch': 'm'})
    load_config(pretrain, cfg_options={'model.backbone.arch': 'm',
                                       'model.head.in_channels': 576})
    run = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'analysis', 'get_flops.py'),
                          det, '--cfg-options', 'model.backbone.embed_dims=32'],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and 'Traceback' not in run.stderr, run.stderr[-2000:]
    assert 'get_flops.py: model.neck.in_channels=' in run.stderr


def test_the_heads_and_neck_must_take_as_many_maps_as_the_backbone_returns():
    """Fewer out_indices by --cfg-options, the heads' in_index or the neck's in_channels
    left for more maps: refused before anything is built, naming both (the first
    forward would stop on an IndexError or an assertion inside mmseg / mmdet)."""
    from mmplugin_shufflemamba.utils import ConfigError, load_config
    seg = osp.join(ROOT, 'configs', 'upernet_shufflemamba_b.py')
    det = osp.join(ROOT, 'configs', 'mask-rcnn_shufflemamba_adapter-m.py')
    with pytest.raises(ConfigError) as e:
        load_config(seg, cfg_options={'model.backbone.out_indices': [5, 11]})
    assert str(e.value) == (
        'model.decode_head.in_index=[0, 1, 2, 3] but the backbone returns 2 map(s) '
        '(out_indices=[5, 11]): pick indices in 0..1.')
    with pytest.raises(ConfigError, match=r'model\.auxiliary_head\.in_index=3 but the '
                       r'backbone returns 3 map'):
        load_config(seg, cfg_options={'model.backbone.out_indices': [5, 11, 23],
                                      'model.decode_head.in_index': [0, 1, 2],
                                      'model.decode_head.in_channels': [768] * 3})
    load_config(seg, cfg_options={'model.backbone.out_indices': [5, 11, 23],
                                  'model.decode_head.in_index': [0, 1, 2],
                                  'model.decode_head.in_channels': [768] * 3,
                                  'model.auxiliary_head.in_index': -1})
    reg = osp.join(ROOT, 'configs', 'upernet_shufflemamba_reg-adapter-b.py')
    with pytest.raises(ConfigError, match=r'model\.auxiliary_head\.in_index=4 but the '
                       r'adapter returns 4 maps \(strides 4, 8, 16, 32\)'):
        load_config(reg, cfg_options={'model.auxiliary_head.in_index': 4})
    with pytest.raises(ConfigError) as e:
        load_config(det, cfg_options={'model.neck.in_channels': [576] * 3})
    assert str(e.value).startswith(
        'model.neck.in_channels has 3 entries but the adapter returns 4 maps')
    # a neck: the heads pick among its maps
    neck = dict(type='MultiLevelNeck', in_channels=[768] * 4, out_channels=256,
                scales=[1, 2])
    heads = {'model.decode_head.in_channels': [256] * 4,
             'model.auxiliary_head.in_channels': 256}
    with pytest.raises(ConfigError, match=r'model\.decode_head\.in_index=\[0, 1, 2, 3\] but '
                       r'model\.neck returns 2 map\(s\)'):
        load_config(seg, cfg_options={'model.neck': neck, **heads})
    load_config(seg, cfg_options={'model.neck': dict(neck, scales=[4, 2, 1, 0.5]), **heads})
    # MultiLevelNeck takes one map, or one per scale
    with pytest.raises(ConfigError, match=r'model\.neck\.in_channels has 2 entries for 4 '
                       r'scales: MultiLevelNeck takes one map, or one per scale'):
        load_config(seg, cfg_options={'model.neck': dict(neck, in_channels=[768] * 2,
                                                         scales=[4, 2, 1, 0.5]),
                                      'model.backbone.out_indices': [5, 11], **heads})
    load_config(seg, cfg_options={'model.neck': dict(neck, in_channels=[768],
                                                     scales=[4, 2, 1, 0.5]),
                                  'model.backbone.out_indices': [11], **heads})
    # ViTDet's SimpleFPN takes the one last map; its in_channels are its own levels'
    simple = dict(type='mmdet.SimpleFPN', backbone_channel=768, in_channels=[192, 384, 768, 768],
                  out_channels=256, num_outs=5)
    load_config(seg, cfg_options={'model.neck': simple, 'model.backbone.out_indices': -1,
                                  **heads})
    with pytest.raises(ConfigError, match=r"model\.neck\.backbone_channel=576 but the "
                       r"backbone's maps have 768 channels"):
        load_config(seg, cfg_options={'model.neck': dict(simple, backbone_channel=576),
                                      'model.backbone.out_indices': -1, **heads})


def test_a_dense_config_without_weights_warns_that_it_trains_from_random_weights():
    """The zoo configs leave init_cfg to the user: tools/train.py says so when nothing
    gives the backbone weights; not with init_cfg, load_from or resume, nor for ImageNet
    pretraining (random weights by design)."""
    from mmplugin_shufflemamba.utils import warn_random_backbone

    from helpers.logs import captured_log
    for name in ['configs/upernet_shufflemamba_b.py', ADAPTER_CONFIGS[0]]:
        cfg = Config.fromfile(osp.join(ROOT, name))
        with captured_log() as lines:
            assert warn_random_backbone(cfg)
        assert any('has no init_cfg: it trains from random weights' in line
                   for line in lines), lines
        cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint='x.pth')
        assert not warn_random_backbone(cfg)
        cfg.model.backbone.init_cfg, cfg.load_from = None, 'work_dirs/iter_100.pth'
        assert not warn_random_backbone(cfg)
    pretrain = Config.fromfile(osp.join(ROOT, 'configs', 'pretrain',
                                        'shufflemamba-b_8xb256-300e_in1k.py'))
    assert not warn_random_backbone(pretrain)
