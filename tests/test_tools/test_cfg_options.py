"""``--cfg-options`` items that MMEngine's DictAction cannot read (no '=', unbalanced
brackets) are a usage error of every tool that takes them (exit status 2, the KEY=VALUE
form named), not a ValueError / AssertionError traceback from inside argparse; an item
that would change nothing (a variable of the file, a name nothing reads, a misspelt key)
is a ConfigError."""
import os.path as osp
import sys

import pytest
import torch

from helpers.tools import ROOT, load_tool

TOOLS = [('train.py', ), ('test.py', ), ('analysis', 'get_flops.py'),
         ('analysis', 'benchmark.py'), ('quickstart.py', )]


def _argv(tool, tmp_path, options):
    config, ckpt = tmp_path / 'config.py', tmp_path / 'ckpt.pth'
    config.write_text('x = 1\n')
    ckpt.write_bytes(b'')
    files = {'test.py': [str(config), str(ckpt)], 'quickstart.py': []}
    files = files.get(tool[-1], [str(config)])
    return [tool[-1]] + files + ['--cfg-options'] + options


@pytest.mark.parametrize('tool', TOOLS, ids=lambda t: t[-1])
@pytest.mark.parametrize('item, words', [
    ('foo', "argument --cfg-options: 'foo' is not KEY=VALUE (e.g. train_cfg.max_iters=10; "
     'a list: KEY=[a,b])'),
    ('=3', "argument --cfg-options: '=3' is not KEY=VALUE"),
    ('a=[1,2', "argument --cfg-options: 'a=[1,2': unbalanced brackets in the value"),
    ('a=[[1]', "argument --cfg-options: 'a=[[1]': unbalanced brackets in the value"),
])
def test_malformed_cfg_options_are_usage_errors(capsys, monkeypatch, tmp_path, tool, item,
                                                words):
    parse = load_tool(*tool).parse_args
    monkeypatch.setattr(sys, 'argv', _argv(tool, tmp_path, ['a=1', item]))
    with pytest.raises(SystemExit) as e:
        parse()
    assert e.value.code == 2
    assert words in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize('tool', TOOLS, ids=lambda t: t[-1])
def test_well_formed_cfg_options_pass(monkeypatch, tmp_path, tool):
    monkeypatch.setattr(sys, 'argv', _argv(tool, tmp_path, [
        'a=1', 'b.c=[1,(2,3)]', 'd=x,y', 'e=', 'f=p=q']))
    args = load_tool(*tool).parse_args()
    assert args.cfg_options == dict(a=1, **{'b.c': [1, (2, 3)]}, d=['x', 'y'], e='',
                                    f='p=q')


CONFIG = osp.join(ROOT, 'configs', 'upernet_shufflemamba_b.py')


@pytest.mark.parametrize('key, value, words', [
    ('data_root', 'elsewhere', "--cfg-options data_root: 'data_root' is a variable of "
     'upernet_shufflemamba_b.py or of a config it inherits, already put where the files use '
     'it when they were read, so this would change nothing. Set the settings that use it '
     'instead (its value is at train_dataloader.dataset.data_root, '
     'val_dataloader.dataset.data_root, test_dataloader.dataset.data_root).'),
    ('train_pipeline', [], 'is at train_dataloader.dataset.pipeline)'),
    ('norm_cfg.type', 'BN', "'norm_cfg' is a variable of upernet_shufflemamba_b.py"),
    ('fp16', dict(loss_scale=512.), "--cfg-options fp16: upernet_shufflemamba_b.py has no "
     "'fp16' and nothing reads it."),
    ('randomnes.seed', 1, "has no 'randomnes' and nothing reads it; did you mean "
     "'randomness'?"),
    ('model.backbone.shufle_rate', 0.2, "--cfg-options model.backbone.shufle_rate: "
     "model.backbone has no 'shufle_rate'; did you mean 'shuffle_rate'?"),
    ('train_cfg.max_iter', 10, "train_cfg has no 'max_iter'; did you mean 'max_iters'?"),
    ('model.backbone.shuffle_rat', 0.2, "did you mean 'shuffle_rate'?"),
    ('model.backbone.shufle_rate', 0.2, "did you mean 'shuffle_rate'?"),
    ('model.backbone.shuffel_rate', 0.2, "did you mean 'shuffle_rate'?"),  # swapped
    ('model.backbone.shuffle_ratf', 0.2, "did you mean 'shuffle_rate'?"),
    ('num_classes', 10, "'num_classes' is a variable of upernet_shufflemamba_b.py or of a "
     'config it inherits, already put where the files use it when they were read, so this '
     'would change nothing. Set the settings that use it instead.'),  # (a number: its
    # copies may be other settings)
    ('default_hooks.checkpoint.intervl', 10, "did you mean 'interval'?"),
])
def test_cfg_options_that_would_change_nothing_are_refused(key, value, words):
    from mmplugin_shufflemamba.utils import ConfigError, load_config
    with pytest.raises(ConfigError) as e:
        load_config(CONFIG, cfg_options={key: value})
    assert words in str(e.value)


def test_a_variable_whose_settings_the_config_overrode_says_so(tmp_path):
    """A child config that sets every data_root itself: the base's variable holds
    nothing any more, and the refusal says so rather than listing no place."""
    from mmplugin_shufflemamba.utils import ConfigError, load_config
    child = tmp_path / 'child.py'
    child.write_text(f'_base_ = [{CONFIG!r}]\n' + ''.join(
        f"{k} = dict(dataset=dict(data_root='/data/ade'))\n"
        for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')))
    with pytest.raises(ConfigError, match=r"'data_root' is a variable of child\.py or of a "
                       r'config it inherits, .* instead \(none holds it as a whole now: '
                       r'the config sets them otherwise, or uses it inside another '
                       r'value\)\.$'):
        load_config(str(child), cfg_options={'data_root': '/elsewhere'})


def test_cfg_options_that_set_or_add_settings_apply():
    from mmplugin_shufflemamba.utils import load_config
    cfg = load_config(CONFIG, cfg_options={
        'train_cfg.max_iters': 10, 'param_scheduler.1.end': 10, 'load_from': 'a.pth',
        'randomness.seed': 3, 'model.backbone.drop_path_rate': 0.2,
        'model.backbone.frozen_stages': 2,  # a new key of a known backbone argument
        'model.backbone.init_cfg.prefix': 'backbone.',  # new inside an existing dict
        'train_dataloader.dataset.pipeline.4.crop_size': [256, 256],
        'find_unused_parameters': True,
        # arguments the config leaves at their defaults, near a key it has
        'model.decode_head.ignore_index': 255,  # (in_index)
        'model.decode_head.loss_decode.class_weight': [1.0] * 150,  # (loss_weight)
        'model.decode_head.out_channels': 150,  # (channels)
        'model.backbone.shuffle_draw': 'device'})  # (shuffle_rate)
    assert cfg.train_cfg.max_iters == 10 and cfg.param_scheduler[1].end == 10
    assert cfg.model.backbone.frozen_stages == 2 and cfg.randomness.seed == 3
    assert cfg.model.backbone.init_cfg.prefix == 'backbone.'
    assert cfg.train_dataloader.dataset.pipeline[4].crop_size == [256, 256]
    assert cfg.load_from == 'a.pth' and cfg.find_unused_parameters is True
    assert cfg.model.backbone.shuffle_draw == 'device'
    assert cfg.model.decode_head.ignore_index == 255


def test_cfg_options_below_a_setting_that_is_none_fill_a_dict():
    """The documented 'model.backbone.init_cfg.type=Pretrained' on a config whose
    backbone says init_cfg=None (MMEngine refused to merge a dict into None)."""
    from mmplugin_shufflemamba.utils import load_config
    pretrain = osp.join(ROOT, 'configs', 'quickstart',
                        'shufflemamba-tiny_1xb32-400it_synthetic-in1k-64px.py')
    cfg = load_config(pretrain, cfg_options={
        'model.backbone.init_cfg.type': 'Pretrained',
        'model.backbone.init_cfg.checkpoint': 'in1k.pth'})
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint='in1k.pth')


@pytest.mark.parametrize('tool', [('analysis', 'get_flops.py'), ('analysis', 'benchmark.py')],
                         ids=lambda t: t[-1])
def test_analysis_tools_stop_on_a_refused_item_without_a_traceback(capsys, tool):
    with pytest.raises(SystemExit) as e:
        load_tool(*tool).main([CONFIG, '--cfg-options', 'fp16=1'])
    assert f"{tool[-1]}: --cfg-options fp16: upernet_shufflemamba_b.py has no 'fp16'" in \
        str(e.value.code)


def test_a_work_dir_that_is_a_file_is_refused(tmp_path):
    from mmplugin_shufflemamba.utils import ConfigError, load_config
    (tmp_path / 'log.txt').write_text('x')
    with pytest.raises(ConfigError, match=r'the work dir .*log\.txt is a file: give a '
                       'directory'):
        load_config(CONFIG, work_dir=str(tmp_path / 'log.txt'))
    with pytest.raises(ConfigError, match=r'the work dir .*log\.txt/sub/dir is a file or under '
                       r'one \(.*log\.txt\): give a directory'):
        load_config(CONFIG, work_dir=str(tmp_path / 'log.txt' / 'sub' / 'dir'))
    assert load_config(CONFIG, work_dir=str(tmp_path)).work_dir == str(tmp_path)
    assert load_config(CONFIG, work_dir=str(tmp_path / 'new' / 'dir')).work_dir == \
        str(tmp_path / 'new' / 'dir')


def test_the_quickstart_refuses_directories_under_a_file(capsys, tmp_path):
    """Its data and work dirs are checked before it writes anything (a file on the path
    was a FileExistsError traceback after the data were written)."""
    from helpers.tools import load_tool
    (tmp_path / 'f').write_text('x')
    quick = load_tool('quickstart.py')
    for option in ('--work-dir', '--data-root'):
        with pytest.raises(SystemExit) as e:
            quick.parse_args([option, str(tmp_path / 'f' / 'sub')])
        assert e.value.code == 2
        assert f"argument {option}: '{tmp_path / 'f' / 'sub'}': {tmp_path / 'f'} is a file, " \
            'so no directory can be made there' in capsys.readouterr().err


def test_auto_scale_lr_needs_the_configs_base_batch():
    """--auto-scale-lr turns on MMEngine's scaling where the config says the batch its
    rates are for (the zoo and pretraining configs), else names what to add."""
    from mmplugin_shufflemamba.utils import (STOP_ERRORS, ConfigError, enable_auto_scale_lr,
                                             load_config)
    for name in ('upernet_shufflemamba_m.py', 'mask-rcnn_shufflemamba_adapter-m.py',
                 'pretrain/shufflemamba-b_8xb256-300e_in1k.py'):
        cfg = load_config(osp.join(ROOT, 'configs', name))
        assert not cfg.auto_scale_lr.get('enable')
        enable_auto_scale_lr(cfg)
        assert cfg.auto_scale_lr.enable and cfg.auto_scale_lr.base_batch_size in (16, 2048)
    cfg = load_config(osp.join(ROOT, 'configs', 'quickstart',
                               'shufflemamba-tiny_1xb32-400it_synthetic-in1k-64px.py'))
    with pytest.raises(ConfigError, match=r'add auto_scale_lr = dict\(base_batch_size=N\)'):
        enable_auto_scale_lr(cfg)
    cfg.auto_scale_lr = dict(base_batch_size=-8)  # would scale the rates by a negative
    with pytest.raises(STOP_ERRORS, match='auto_scale_lr.base_batch_size must be > 0'):
        enable_auto_scale_lr(cfg)


def test_a_setting_the_backbone_refuses_stops_the_tools_without_a_traceback(tmp_path):
    """build_runner: what the package's argument checks raise becomes a ConfigError (the
    tools print it and exit 1); any other build error keeps its type and traceback."""
    from mmplugin_shufflemamba.utils import ConfigError, build_runner, load_config
    quick = osp.join(ROOT, 'configs', 'quickstart',
                     'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')
    for key, value, words in [
            ('model.backbone.shuffle_rate', 2, 'shuffle_rate must be in [0, 1], got 2'),
            ('model.backbone.arch', 'zz', "Unknown ShuffleMamba arch 'zz'; choose one of")]:
        cfg = load_config(quick, work_dir=str(tmp_path), cfg_options={key: value})
        with pytest.raises(ConfigError) as e:
            build_runner(cfg)
        assert str(e.value).startswith('the config does not build: ' + words), str(e.value)
    cfg = load_config(quick, work_dir=str(tmp_path),
                      cfg_options={'model.backbone.type': 'NoSuchBackbone'})
    with pytest.raises(KeyError, match='NoSuchBackbone'):
        build_runner(cfg)


def test_an_adapter_setting_it_refuses_stops_the_tools_too(tmp_path):
    """The adapter's own checks (not only the shared validators) raise ArgumentError:
    build_runner stops with their message."""
    from mmplugin_shufflemamba.utils import ConfigError, build_runner, load_config
    quick = osp.join(ROOT, 'configs', 'quickstart',
                     'mask-rcnn_shufflemamba-adapter-tiny_1xb8-400it_synthetic-coco-128x128.py')
    cfg = load_config(quick, work_dir=str(tmp_path),
                      cfg_options={'model.backbone.interaction_indexes': [[0, 1], [3, 3]]})
    with pytest.raises(ConfigError, match='the config does not build: interaction_indexes'):
        build_runner(cfg)


QUICK_SEG = osp.join(ROOT, 'configs', 'quickstart',
                     'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')


@pytest.mark.parametrize('key, value, words', [
    ('optim_wrapper.optimizer.lr', 'abc',
     "optim_wrapper.optimizer.lr must be a number, got 'abc' (str)"),
    ('optim_wrapper.optimizer.weight_decay', -0.1,
     'optim_wrapper.optimizer.weight_decay must be >= 0'),
    ('optim_wrapper.optimizer.betas', 0.9, 'optim_wrapper.optimizer.betas must be 2 numbers '
     'in [0, 1) (the default is (0.9, 0.999)), got 0.9'),
    ('optim_wrapper.optimizer.betas', [0.9, 1.5],
     'optim_wrapper.optimizer.betas[1] must be in [0, 1), got 1.5'),
    ('train_dataloader.batch_size', 0, 'train_dataloader.batch_size must be >= 1, got 0'),
    ('val_dataloader.num_workers', -1, 'val_dataloader.num_workers must be >= 0, got -1'),
    ('train_dataloader.num_workers', 0, 'train_dataloader.num_workers=0 with '
     'train_dataloader.persistent_workers=True, which keeps worker processes alive: torch '
     'needs workers for it. Also set train_dataloader.persistent_workers=False.'),
    ('train_cfg.max_iters', 0, 'train_cfg.max_iters must be >= 1, got 0'),
    ('train_cfg.val_interval', 0, 'train_cfg.val_interval must be >= 1, got 0'),
    ('randomness.seed', -1, 'randomness.seed must be in [0, 4294967295], got -1'),
    ('optim_wrapper.clip_grad', dict(max_norm=-1.),
     'optim_wrapper.clip_grad.max_norm must be > 0, got -1.0 (a negative one would '
     'reverse the gradients)'),
    # what MMEngine checks only when train() builds the schedulers, after the data
    ('param_scheduler.1.begin', 400, 'param_scheduler[1] runs from begin=400 to end=300: '
     'end must be after begin'),
    ('param_scheduler.0.start_factor', 2., 'param_scheduler[0].start_factor must be in '
     '[0, 1], got 2.0'),
    ('param_scheduler.1.eta_min', -1e-4, 'param_scheduler[1].eta_min must be >= 0'),
    ('param_scheduler.0.end', 'abc', "param_scheduler[0].end must be a number, got 'abc'"),
    # --cfg-options reads [64,64] as a list, which mmseg's RandomCrop asserts against
    ('train_dataloader.dataset.pipeline.4.crop_size', [64, 64],
     "train_dataloader.dataset.pipeline.4.crop_size=[64, 64]: mmseg's RandomCrop takes an "
     'int or a tuple (h, w), not a list: --cfg-options '
     'train_dataloader.dataset.pipeline.4.crop_size="(64,64)" (parentheses make a tuple).'),
])
def test_values_only_the_run_reads_are_checked_before_it_starts(tmp_path, key, value, words):
    """What torch checks only when the runner builds the optimizer or a dataloader is
    refused before anything is built, naming the config key; the error is one the
    tools stop with, without a traceback."""
    from mmplugin_shufflemamba.utils import STOP_ERRORS, check_run_values, load_config
    cfg = load_config(QUICK_SEG, work_dir=str(tmp_path), cfg_options={key: value})
    with pytest.raises(STOP_ERRORS) as e:
        check_run_values(cfg)
    assert str(e.value).startswith(words), str(e.value)


def test_one_image_batches_are_refused_under_a_pooling_head(tmp_path, monkeypatch):
    """A pooling head normalises each image's 1x1 map with BatchNorm, which needs more
    than one value per channel in training: batch_size=1 is refused before the run
    (torch would stop at the first iteration) with BN on any number of processes and
    with SyncBN on one; several processes share SyncBN's statistics; testing does not
    train."""
    from mmplugin_shufflemamba.errors import ArgumentValueError
    from mmplugin_shufflemamba.utils import check_run_values, load_config
    cfg = load_config(QUICK_SEG, work_dir=str(tmp_path),
                      cfg_options={'train_dataloader.batch_size': 1})
    assert cfg.model.decode_head.norm_cfg.type == 'BN'
    with pytest.raises(ArgumentValueError) as e:
        check_run_values(cfg)
    assert str(e.value) == (
        'train_dataloader.batch_size=1: model.decode_head (UPerHead) pools each image to 1x1 '
        'at pool scale 1 and normalises that with BN, which in training needs more than '
        "one value per channel. Use batch_size >= 2, or norm_cfg=dict(type='SyncBN') on "
        'several GPUs.')
    check_run_values(cfg, loaders=('test_dataloader', ))
    cfg.launcher = 'pytorch'
    monkeypatch.setenv('WORLD_SIZE', '2')
    with pytest.raises(ArgumentValueError):  # BN: each process its own statistics
        check_run_values(cfg)
    cfg.model.decode_head.norm_cfg.type = 'SyncBN'
    check_run_values(cfg)
    monkeypatch.setenv('WORLD_SIZE', '1')
    with pytest.raises(ArgumentValueError, match=r'batch_size=1 on one process: .* with '
                       r'SyncBN, .* or several GPUs \(SyncBN shares the statistics\)'):
        check_run_values(cfg)
    cfg.launcher = 'none'
    cfg.model.decode_head.pool_scales = (2, 3, 6)
    check_run_values(cfg)
    cfg.model.decode_head = dict(type='ASPPHead', in_channels=32, channels=8,
                                 dilations=(1, 6), num_classes=4,
                                 norm_cfg=dict(type='BN', requires_grad=True))
    with pytest.raises(ArgumentValueError, match=r'model\.decode_head \(ASPPHead\) pools '
                       r'each image to 1x1 in its image pool'):
        check_run_values(cfg)
    # what it stands for
    from mmseg.models.decode_heads import ASPPHead
    head = ASPPHead(in_channels=8, channels=4, dilations=(1, 6), num_classes=2,
                    norm_cfg=dict(type='BN')).train()
    with pytest.raises(ValueError, match='Expected more than 1 value per channel'):
        head([torch.randn(1, 8, 16, 16)])
    head([torch.randn(2, 8, 16, 16)])


@pytest.mark.parametrize('optimizer', [
    dict(type='AdamW', lr=1, betas=(0.9, 0.999), weight_decay=0),  # ints, a tuple
    dict(type='AdamW', lr=1e-3, betas=[0., 0.5]),
    dict(type='SGD', lr=0.01, momentum=0.9, nesterov=True),
    dict(type='AdamW', lr=torch.tensor(1e-3)),  # torch takes a tensor rate
    dict(type='Adan', lr=1e-3, betas=(0.98, 0.92, 0.99)),  # another optimizer's settings
    dict(type='Adafactor', lr=None, eps=(None, 1e-3)),
    dict(type='NotRegisteredHere', lr='left to the runner'),
])
def test_valid_optimizer_settings_pass(tmp_path, optimizer):
    from mmplugin_shufflemamba.utils import check_run_values, load_config
    cfg = load_config(QUICK_SEG, work_dir=str(tmp_path))
    cfg.optim_wrapper.optimizer = optimizer
    cfg.train_dataloader.batch_size = None  # (torch: no batching)
    check_run_values(cfg)


@pytest.mark.parametrize('key, value', [
    ('train_cfg.max_iters', 1.6e5),  # DictAction reads 1.6e5 as a float: MMEngine takes it
    ('optim_wrapper.clip_grad', dict(max_norm=float('inf'))),  # the norm logged, no clip
    ('optim_wrapper.clip_grad', dict(type='value', clip_value=1.)),
    ('auto_scale_lr.base_batch_size', 16.),
    ('randomness.seed', None),
])
def test_valid_run_values_pass(tmp_path, key, value):
    from mmplugin_shufflemamba.utils import check_run_values, load_config
    cfg = load_config(QUICK_SEG, work_dir=str(tmp_path), cfg_options={key: value})
    check_run_values(cfg)
    cfg.val_cfg = cfg.val_dataloader = None  # no validation: its interval is not read
    cfg.train_cfg.val_interval = 0
    check_run_values(cfg)


@pytest.mark.parametrize('schedulers', [
    dict(type='PolyLR', eta_min=0, power=1.0),  # one, to the end of training
    [dict(type='CosineAnnealingLR', eta_min=None, eta_min_ratio=0.01, begin=0., end=1e3)],
    [dict(type='LinearLR', start_factor=0., end_factor=1., begin=0, end=1)],
])
def test_valid_schedulers_pass(tmp_path, schedulers):
    from mmplugin_shufflemamba.utils import check_run_values, load_config
    cfg = load_config(QUICK_SEG, work_dir=str(tmp_path))
    cfg.param_scheduler = schedulers
    check_run_values(cfg)


def test_another_scopes_optimizer_is_checked_in_its_registry(tmp_path):
    """mmpretrain's Lamb / Adan are looked up in the config's scope: their settings are
    checked against their own defaults (Adan's three betas)."""
    from mmplugin_shufflemamba.utils import STOP_ERRORS, check_run_values, load_config
    cfg = load_config(osp.join(ROOT, 'configs', 'quickstart',
                               'shufflemamba-tiny_1xb32-400it_synthetic-in1k-64px.py'),
                      work_dir=str(tmp_path))
    for optimizer, words in [(dict(type='Lamb', lr=-1.), 'optim_wrapper.optimizer.lr must '
                              'be >= 0'),
                             (dict(type='Adan', lr=1e-3, betas=(0.9, 0.99)),
                              'optim_wrapper.optimizer.betas must be 3 numbers')]:
        cfg.optim_wrapper.optimizer = optimizer
        with pytest.raises(STOP_ERRORS, match=words):
            check_run_values(cfg)
    cfg.optim_wrapper.optimizer = dict(type='Adan', lr=1e-3, betas=(0.98, 0.92, 0.99))
    check_run_values(cfg)


def test_train_stops_on_a_refused_optimizer_value_without_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['train.py', QUICK_SEG, '--work-dir', str(tmp_path),
                                      '--cfg-options', 'optim_wrapper.optimizer.lr=abc'])
    with pytest.raises(SystemExit) as e:
        load_tool('train.py').main()
    assert str(e.value.code) == ("tools/train.py: optim_wrapper.optimizer.lr must be a "
                                 "number, got 'abc' (str)")


def test_test_tool_checks_only_what_it_runs(tmp_path, monkeypatch):
    """tools/test.py drops the training parts before the check (a bad training value is
    not its concern); a bad test dataloader value stops it with the key named."""
    ckpt = tmp_path / 'ckpt.pth'
    ckpt.write_bytes(b'')
    monkeypatch.setattr(sys, 'argv', [
        'test.py', QUICK_SEG, str(ckpt), '--work-dir', str(tmp_path), '--cfg-options',
        'optim_wrapper.optimizer.lr=abc', 'train_dataloader.batch_size=0',
        'test_dataloader.batch_size=0'])
    with pytest.raises(SystemExit) as e:
        load_tool('test.py').main()
    assert str(e.value.code) == 'tools/test.py: test_dataloader.batch_size must be >= 1, got 0'


def test_refusals_of_the_loaders_ops_and_transforms_stop_the_tools_too(tmp_path):
    """Settings read when the run starts (a Pretrained init_cfg's options, the kernel
    choice, a pipeline's label check) are refused with the same error type as the
    constructors' checks, which the tools stop on without a traceback."""
    from mmplugin_shufflemamba import ShuffleMamba
    from mmplugin_shufflemamba.checkpoint import load_pretrained_backbone
    from mmplugin_shufflemamba.datasets.data_checks import CheckSegLabels
    from mmplugin_shufflemamba.errors import ArgumentError
    from mmplugin_shufflemamba.ops import check_kernel_backend
    model = ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=32)
    torch.save(model.state_dict(), tmp_path / 'w.pth')
    path = str(tmp_path / 'w.pth')
    for call, words in [
            (lambda: load_pretrained_backbone(model, path, use_ema='no'),
             "use_ema must be True or False, got 'no'"),
            (lambda: load_pretrained_backbone(model, path, map_location='gpu0'),
             "map_location='gpu0' is not a device"),
            (lambda: load_pretrained_backbone(model, path, ckpt_format='x'),
             'ckpt_format must be one of'),
            (lambda: load_pretrained_backbone(model, path, prefix=3),
             "prefix must be a key prefix such as 'backbone.', got 3"),
            (lambda: load_pretrained_backbone(model, path, strict=True),
             "unsupported Pretrained init_cfg keys: ['strict']"),
            (lambda: check_kernel_backend('x'), "kernel must be one of"),
            (lambda: CheckSegLabels(num_classes=0), 'num_classes must be an integer >= 1')]:
        with pytest.raises(ArgumentError) as e:
            call()
        assert str(e.value).startswith(words), str(e.value)
