"""Reading a config for the tools: ``--cfg-options`` checked and merged, the work dir,
the checks of parts that must agree and of the values the run reads when it starts."""
import os
import os.path as osp
from typing import Any, List, Optional, Sequence, Tuple

import torch


def _typed_nodes(node: Any, types: Sequence[str], path: str = ''):
    """``(path, dict)`` of every ``dict(type=t, ...)`` with ``t`` in ``types`` inside a
    (nested) config, e.g. ``('train_dataloader.dataset.pipeline[2]', {...})``."""
    if isinstance(node, dict):
        if node.get('type') in types:
            yield path, node
        for key, value in node.items():
            yield from _typed_nodes(value, types, f'{path}.{key}' if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _typed_nodes(value, types, f'{path}[{i}]')


class ConfigError(ValueError):
    """A config whose parts disagree (the message names them and the fix)."""


def check_label_classes(cfg) -> None:
    """Every ``CheckSegLabels`` of the pipelines checks the classes the segmentor's heads
    predict: a ``--cfg-options model.decode_head.num_classes=N`` that leaves a pipeline's
    check at another count would let labels through that the loss cannot take (or
    refuse valid ones). A :class:`ConfigError` naming both otherwise."""
    model = cfg.get('model') or {}
    heads = [(where, head) for name in ('decode_head', 'auxiliary_head')
             for where, head in _module_cfgs(model, name) if 'num_classes' in head]
    loaders = {k: cfg.get(k) for k in ('train_dataloader', 'val_dataloader',
                                       'test_dataloader')}
    checks = list(_typed_nodes(loaders, ('CheckSegLabels', )))
    for head, head_cfg in heads:
        for where, check in checks:
            if check.get('num_classes') != head_cfg['num_classes']:
                raise ConfigError(
                    f"{where} checks labels against num_classes={check.get('num_classes')} "
                    f"but {head}.num_classes={head_cfg['num_classes']}: set both to the "
                    'number of classes of the data (with --cfg-options, the heads and every '
                    'CheckSegLabels of the pipelines).')


#: mmdet's COCO datasets without ``metainfo.classes``: the 80 COCO classes
_COCO_TYPES = ('CocoDataset', 'CheckedCocoDataset')


def _dataset_classes(dataset: Any) -> Optional[int]:
    """How many classes a dataset config has: its ``metainfo.classes``, COCO's 80 for
    mmdet's COCO datasets without them, through one ``dataset`` wrapper; None where the
    config does not say."""
    if isinstance(dataset, dict) and 'metainfo' not in dataset and \
            isinstance(dataset.get('dataset'), dict):  # RepeatDataset, ClassBalanced...
        dataset = dataset['dataset']
    if not isinstance(dataset, dict):
        return None
    classes = (dataset.get('metainfo') or {}).get('classes') \
        if isinstance(dataset.get('metainfo'), dict) else None
    if isinstance(classes, (list, tuple)):
        return len(classes)
    return 80 if str(dataset.get('type', '')).split('.')[-1] in _COCO_TYPES and \
        classes is None else None


def check_detection_classes(cfg) -> None:
    """A detector on a ShuffleMamba backbone predicts as many classes as each dataset
    has: fewer and the loss meets labels it has no output for, more and mmdet's
    ``CocoMetric`` meets labels without a category. A :class:`ConfigError` naming both
    otherwise. (Text-prompted detectors, with a ``language_model``, count tokens.)"""
    model = cfg.get('model') or {}
    if _shufflemamba_backbone(model) is None or model.get('language_model'):
        return
    roi = model.get('roi_head') if isinstance(model.get('roi_head'), dict) else {}
    heads = [(f'model.roi_head.{where[len("model."):]}', head) for name in
             ('bbox_head', 'mask_head') for where, head in _module_cfgs(roi, name)] + \
        _module_cfgs(model, 'bbox_head')
    heads = [(where, head) for where, head in heads
             if 'num_classes' in head and not head.get('class_agnostic')]
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name)
        count = _dataset_classes(loader.get('dataset')) if isinstance(loader, dict) else None
        for where, head in heads:
            if count is not None and head['num_classes'] != count:
                raise ConfigError(
                    f"{where}.num_classes={head['num_classes']} but {name}.dataset has "
                    f'{count} classes (its metainfo.classes, COCO\'s 80 without them): set '
                    "every head's num_classes to the number of classes of the data.")


#: the necks that name the backbone's width otherwise than ``in_channels`` (ViTDet's
#: ``SimpleFPN`` lists the widths of its own levels there)
_WIDTH_KEYS = {'SimpleFPN': 'backbone_channel', 'Feature2Pyramid': 'embed_dim'}


def check_backbone_channels(cfg) -> None:
    """The modules that take a ShuffleMamba backbone's output (the neck, else the decode
    and auxiliary heads; with ``out_cls``, a classifier's head) expect its width: a
    ``--cfg-options model.backbone.arch=m`` or ``embed_dims=...`` that leaves them at
    another count would stop at the first forward with torch's shape error. A
    :class:`ConfigError` naming both otherwise."""
    from ..models.archs import resolve_arch
    from ..models.layers.token_layout import TokenLayout
    model = cfg.get('model') or {}
    backbone = _shufflemamba_backbone(model)
    if backbone is None:
        return
    try:
        width = resolve_arch(backbone.get('arch', 'b'), backbone.get('embed_dims'),
                             backbone.get('num_layers'))['embed_dims']
        registers = TokenLayout.from_args(False, int(backbone.get('num_registers') or 0))
        reduce = int(backbone.get('cls_reduce') or 1)
    except (KeyError, TypeError, ValueError):
        return  # the backbone names its own bad arguments when it is built
    what = f"the backbone's maps have {width} channels (its embed_dims)"
    if backbone.get('out_cls'):  # the head takes the classification feature
        if model.get('neck'):
            return
        takers = _module_cfgs(model, 'head')
        if registers.num_extra:
            width = registers.cls_feature_dims(width, reduce)
            what = (f"the backbone's classification feature has {width} channels "
                    f'({registers.num_extra} registers x embed_dims // cls_reduce)')
        else:
            what = (f"the backbone's classification feature (its cls token) has {width} "
                    'channels (its embed_dims)')
    else:  # (a list of necks is applied in turn: the first takes the maps)
        takers = _module_cfgs(model, 'neck')[:1] if model.get('neck') else \
            _module_cfgs(model, 'decode_head') + _module_cfgs(model, 'auxiliary_head')
    for where, head in takers:
        key = _WIDTH_KEYS.get(str(head.get('type', '')).split('.')[-1], 'in_channels')
        channels = head.get(key)
        counts = channels if isinstance(channels, (list, tuple)) else [channels]
        if channels is None or all(c == width for c in counts):
            continue
        want = f'[{width}] * {len(counts)}' if counts is channels else str(width)
        raise ConfigError(
            f"{where}.{key}={list(channels) if counts is channels else channels} "
            f'but {what}: set {where}.{key}={want}.')


def _shufflemamba_backbone(model: dict) -> Optional[dict]:
    """``model.backbone`` when it is a ShuffleMamba or ShuffleMambaAdapter config."""
    backbone = model.get('backbone')
    if isinstance(backbone, dict) and str(backbone.get('type', '')).split('.')[-1] in \
            ('ShuffleMamba', 'ShuffleMambaAdapter'):
        return backbone
    return None


def _count(value, default: int) -> Optional[int]:
    """How many items a setting lists (1 for a single one; ``None`` for a value that is
    neither: the module names its own bad argument when it is built)."""
    if value is None:
        return default
    if isinstance(value, (list, tuple)):
        return len(value)
    return 1 if isinstance(value, int) and not isinstance(value, bool) else None


#: the necks that take one input map per ``in_channels`` entry (ViTDet's ``SimpleFPN``
#: takes one map and lists the widths of its own levels)
_ONE_MAP_PER_CHANNELS = ('MultiLevelNeck', 'FPN', 'PAFPN', 'ChannelMapper')


def check_backbone_outputs(cfg) -> None:
    """The number of maps a ShuffleMamba backbone returns (one per ``out_indices``; four
    levels from the adapter) is the number the neck takes (one ``in_channels`` entry
    each), and the heads' ``in_index`` pick among the maps that reach them (the
    backbone's, or those of mmseg's ``MultiLevelNeck`` / the ``FPN``): a mismatch would
    stop at the first forward with an assertion or ``IndexError`` inside the framework.
    A :class:`ConfigError` naming both otherwise."""
    model = cfg.get('model') or {}
    backbone = _shufflemamba_backbone(model)
    if backbone is None:
        return
    if str(backbone['type']).split('.')[-1] == 'ShuffleMambaAdapter':
        maps, what = 4, 'the adapter returns 4 maps (strides 4, 8, 16, 32)'
    else:
        maps = _count(backbone.get('out_indices', -1), 1)
        if maps is None:
            return
        what = (f'the backbone returns {maps} map(s) (out_indices='
                f"{backbone.get('out_indices', -1)!r})")
    necks = _module_cfgs(model, 'neck')
    if necks:  # (a list of necks is applied in turn: the first takes the maps)
        where, neck = necks[0]
        channels = neck.get('in_channels')
        kind = str(neck.get('type', '')).split('.')[-1]
        if kind in _ONE_MAP_PER_CHANNELS and isinstance(channels, (list, tuple)) and \
                len(channels) != maps:
            raise ConfigError(f'{where}.in_channels has {len(channels)} entries but {what}: '
                              f'give one per map, or change the backbone\'s outputs.')
        if len(necks) > 1 or kind not in ('MultiLevelNeck', 'FPN'):
            return  # what other necks return is theirs to say
        maps = _count(neck.get('scales'), 4) if kind == 'MultiLevelNeck' else \
            neck.get('num_outs')
        if kind == 'MultiLevelNeck' and isinstance(channels, (list, tuple)) and \
                isinstance(maps, int) and 1 < len(channels) < maps:
            raise ConfigError(f'{where}.in_channels has {len(channels)} entries for {maps} '
                              'scales: MultiLevelNeck takes one map, or one per scale '
                              '(or more, the first ones used).')
        what = f'{where} returns {maps} map(s)'
        if not isinstance(maps, int) or isinstance(maps, bool):
            return
    for where, head in _module_cfgs(model, 'decode_head') + \
            _module_cfgs(model, 'auxiliary_head'):
        index = head.get('in_index', -1)
        for i in index if isinstance(index, (list, tuple)) else [index]:
            if isinstance(i, int) and not -maps <= i < maps:
                raise ConfigError(f'{where}.in_index={index!r} but {what}: pick indices in '
                                  f'0..{maps - 1}.')


def enable_auto_scale_lr(cfg) -> None:
    """``--auto-scale-lr``: MMEngine's linear scaling of the learning rates by the run's
    total batch (processes x ``train_dataloader.batch_size``) over
    ``auto_scale_lr.base_batch_size``, the batch the config's rates are for. A
    :class:`ConfigError` where the config does not say that batch."""
    scale = cfg.get('auto_scale_lr')
    if isinstance(scale, dict) and scale.get('base_batch_size') is not None:
        from ..models.layers.arg_checks import check_real
        check_real('auto_scale_lr.base_batch_size', scale['base_batch_size'], 0.,
                   low_open=True, hint='the total batch the learning rates are for')
    if not isinstance(scale, dict) or not scale.get('base_batch_size'):
        raise ConfigError(
            "--auto-scale-lr scales the learning rate by the run's total batch over "
            'auto_scale_lr.base_batch_size, which this config does not set: add '
            'auto_scale_lr = dict(base_batch_size=N), N the total batch its lr is for.')
    scale['enable'] = True


def _module_cfgs(model: dict, name: str) -> List[Tuple[str, dict]]:
    """``(path, config)`` of ``model[name]``: one dict (``'model.neck'``) or each dict of
    a list (``'model.decode_head[1]'``)."""
    value = model.get(name)
    if isinstance(value, (list, tuple)):
        return [(f'model.{name}[{i}]', v) for i, v in enumerate(value) if isinstance(v, dict)]
    return [(f'model.{name}', value)] if isinstance(value, dict) else []


#: optimizer settings that are non-negative numbers where the optimizer's own default
#: is a number (lr=None and Adafactor's eps pair are left alone)
_NON_NEGATIVE = ('lr', 'weight_decay', 'momentum', 'dampening', 'eps', 'alpha')


def _optimizer_defaults(cfg, optimizer: dict) -> dict:
    """The keyword defaults of the optimizer class ``optimizer`` names, in the config's
    scope; {} when it cannot be resolved (then nothing is checked)."""
    from ..engine.optimizers.layer_decay_optim_wrapper_constructor import optimizer_options
    try:
        options = optimizer_options(optimizer, cfg.get('default_scope'))
    except Exception:  # an optimizer the registry does not know: the runner says so
        return {}
    return {k: p.default for k, p in (options or {}).items()}


def check_run_values(cfg, loaders: Sequence[str] = ('train_dataloader', 'val_dataloader',
                                                    'test_dataloader')) -> None:
    """The values that only the optimizer, the dataloaders and the loops read, when the
    run starts (``--cfg-options optim_wrapper.optimizer.lr=abc``,
    ``train_dataloader.batch_size=0``, ``train_cfg.max_iters=0``): an
    :class:`~..errors.ArgumentError` naming the config key before anything is built,
    rather than torch's message from deep inside the run (or a run that does nothing,
    or gradient ascent from a negative ``clip_grad.max_norm``). The tools call it on the
    parts they run (``tools/test.py``: ``loaders=('test_dataloader', )``)."""
    from ..errors import ArgumentTypeError, ArgumentValueError
    from ..models.layers.arg_checks import check_int, check_real, is_number
    train_cfg = cfg.get('train_cfg')
    validates = cfg.get('val_cfg') is not None and cfg.get('val_dataloader') is not None
    for key in ('max_iters', 'max_epochs', 'val_interval', 'val_begin'):
        value = train_cfg.get(key) if isinstance(train_cfg, dict) else None
        if value is None or (key == 'val_interval' and not validates):
            continue
        if is_number(value) and float(value).is_integer():  # MMEngine's loops take 1e3
            value = int(value)
        check_int(f'train_cfg.{key}', value, 0 if key == 'val_begin' else 1)
    seed = (cfg.get('randomness') or {}).get('seed')
    if seed is not None:
        check_int('randomness.seed', seed, 0, 2**32 - 1)
    wrapper = cfg.get('optim_wrapper')
    clip = wrapper.get('clip_grad') if isinstance(wrapper, dict) else None
    max_norm = clip.get('max_norm') if isinstance(clip, dict) else None
    if max_norm is not None and max_norm != float('inf'):  # inf: the norm logged, no clip
        check_real('optim_wrapper.clip_grad.max_norm', max_norm, 0., low_open=True,
                   hint='a negative one would reverse the gradients'
                   if is_number(max_norm) and max_norm < 0 else '')
    optimizer = wrapper.get('optimizer') if isinstance(wrapper, dict) else None
    optimizer = optimizer if isinstance(optimizer, dict) else {}
    defaults = _optimizer_defaults(cfg, optimizer) if optimizer else {}
    for key, value in optimizer.items():
        default, where = defaults.get(key), f'optim_wrapper.optimizer.{key}'
        if isinstance(value, torch.Tensor):  # torch takes tensor rates: its own check
            continue
        if key in _NON_NEGATIVE and is_number(default):
            check_real(where, value, 0.)
        elif key == 'betas' and isinstance(default, tuple) and all(map(is_number, default)):
            if not isinstance(value, (list, tuple)) or len(value) != len(default):
                raise ArgumentTypeError(f'{where} must be {len(default)} numbers in [0, 1) '
                                        f'(the default is {default}), got {value!r}')
            for i, beta in enumerate(value):
                check_real(f'{where}[{i}]', beta, 0., 1., high_open=True)
    for name in loaders:
        loader = cfg.get(name)
        if not isinstance(loader, dict):
            continue
        if loader.get('batch_size') is not None:
            check_int(f'{name}.batch_size', loader['batch_size'], 1)
        if 'num_workers' in loader:
            check_int(f'{name}.num_workers', loader['num_workers'], 0)
            if loader['num_workers'] == 0 and loader.get('persistent_workers'):
                raise ArgumentValueError(
                    f'{name}.num_workers=0 with {name}.persistent_workers=True, which '
                    'keeps worker processes alive: torch needs workers for it. Also set '
                    f'{name}.persistent_workers=False.')
    if 'train_dataloader' in loaders:
        _check_single_image_batch_norm(cfg)
        _check_schedulers(cfg.get('param_scheduler'))


def _check_schedulers(schedulers) -> None:
    """Each ``param_scheduler`` entry: ``begin < end`` and the linear factors in [0, 1],
    which MMEngine checks only when ``train()`` builds the schedulers (after the
    datasets), and ``begin`` and the minima >= 0, which it does not check (a negative
    ``eta_min`` drives the rate below zero)."""
    from ..errors import ArgumentValueError
    from ..models.layers.arg_checks import check_real
    many = isinstance(schedulers, (list, tuple))
    for i, sched in enumerate(schedulers if many else [schedulers]):
        if not isinstance(sched, dict):
            continue  # (none, or a scheduler object: MMEngine's to check)
        where = f'param_scheduler[{i}]' if many else 'param_scheduler'
        begin, end = sched.get('begin', 0), sched.get('end', float('inf'))
        check_real(f'{where}.begin', begin, 0.)
        if end != float('inf'):  # (MMEngine's default: to the end of training)
            check_real(f'{where}.end', end, 0.)
        if end <= begin:
            raise ArgumentValueError(f'{where} runs from begin={begin} to end={end}: end must '
                                     'be after begin (the steps it applies to are [begin, '
                                     'end)).')
        for key in ('start_factor', 'end_factor'):
            if key in sched:
                check_real(f'{where}.{key}', sched[key], 0., 1.)
        for key in ('eta_min', 'eta_min_ratio'):
            if sched.get(key) is not None:
                check_real(f'{where}.{key}', sched[key], 0.)


def _world_size(cfg) -> Optional[int]:
    """The processes of the run: 1 without a launcher, else what the launcher's
    environment says (``None`` where it does not say)."""
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none':
        return 1
    size = os.environ.get({'pytorch': 'WORLD_SIZE', 'slurm': 'SLURM_NTASKS',
                           'mpi': 'OMPI_COMM_WORLD_SIZE'}.get(launcher, ''), '')
    return int(size) if size.isdigit() else None


#: mmseg's heads that pool each image to 1x1 and normalise that: the key of their pool
#: scales (default (1, 2, 3, 6)), or None where the image pool is always there
_POOLING_HEADS = {'UPerHead': 'pool_scales', 'PSPHead': 'pool_scales', 'ASPPHead': None,
                  'DepthwiseSeparableASPPHead': None}


def _check_single_image_batch_norm(cfg) -> None:
    """mmseg's pooling heads (:data:`_POOLING_HEADS`) normalise a 1x1 map of each image
    with BatchNorm, which in training needs more than one value per channel: one image
    per batch stops at the first iteration with torch's 'Expected more than 1 value per
    channel', with BN on any number of processes, with SyncBN (or ``sync_bn``) on one.
    An ``ArgumentValueError`` naming ``train_dataloader.batch_size`` and the head."""
    from ..errors import ArgumentValueError
    loader = cfg.get('train_dataloader')
    if not isinstance(loader, dict) or loader.get('batch_size') != 1:
        return
    model = cfg.get('model') or {}
    for where, head in _module_cfgs(model, 'decode_head') + \
            _module_cfgs(model, 'auxiliary_head'):
        kind = str(head.get('type', '')).split('.')[-1]
        norm = head.get('norm_cfg') if isinstance(head.get('norm_cfg'), dict) else {}
        key = _POOLING_HEADS.get(kind, 'none')
        scales = head.get(key, (1, 2, 3, 6)) if key else (1, )
        if kind not in _POOLING_HEADS or not isinstance(scales, (list, tuple)) or \
                1 not in scales or norm.get('type') not in ('BN', 'BN2d', 'SyncBN'):
            continue
        synced = norm['type'] == 'SyncBN' or bool(cfg.get('sync_bn'))
        if synced and _world_size(cfg) != 1:  # the batch statistics are shared
            continue
        pool = 'at pool scale 1' if key else 'in its image pool'
        raise ArgumentValueError(
            f"train_dataloader.batch_size=1{' on one process' if synced else ''}: {where} "
            f'({kind}) pools each image to 1x1 {pool} and normalises that with '
            f"{norm['type']}, which in training needs more than one value per channel. "
            'Use batch_size >= 2' + (', or several GPUs (SyncBN shares the statistics).'
                                     if synced else ", or norm_cfg=dict(type='SyncBN') "
                                     'on several GPUs.'))


def check_config(cfg) -> None:
    """The checks of parts that must agree: :func:`check_label_classes`,
    :func:`check_detection_classes`, :func:`check_backbone_channels`,
    :func:`check_backbone_outputs`."""
    check_label_classes(cfg)
    check_detection_classes(cfg)
    check_backbone_channels(cfg)
    check_backbone_outputs(cfg)


#: the top-level keys MMEngine's runner, mmseg / mmdet / mmpretrain and these tools read
#: when they run; every other top-level name of a config is a variable of the file,
#: already put where the file uses it (``crop_size``, ``data_root``, ``train_pipeline``)
_RUNTIME_KEYS = frozenset((
    'model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader',
    'train_cfg', 'val_cfg', 'test_cfg', 'auto_scale_lr', 'optim_wrapper', 'param_scheduler',
    'val_evaluator', 'test_evaluator', 'default_hooks', 'custom_hooks', 'data_preprocessor',
    'load_from', 'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level', 'visualizer',
    'default_scope', 'randomness', 'experiment_name', 'model_wrapper_cfg', 'sync_bn',
    'find_unused_parameters', 'activation_checkpointing', 'efficient_conv_bn_eval',
    'compile', 'custom_imports', 'tta_model', 'tta_pipeline', 'finite_check'))


def _paths_of(node: Any, value: Any, path: str = '', limit: int = 4) -> List[str]:
    """Where ``value``, a string or a container, appears in a (nested) config, e.g.
    ``['train_dataloader.dataset.data_root', ...]`` (at most ``limit``; none for other
    values, whose equal copies may well be other settings)."""
    if not value or not isinstance(value, (str, dict, list, tuple)):
        return []
    if path and node == value and type(node) is type(value):
        return [path]
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, (list, tuple)) else ()
    found = []
    for key, sub in items:
        found += _paths_of(sub, value, f'{path}.{key}' if path else str(key), limit)
    return found[:limit]


def merge_cfg_options(cfg, options: Optional[dict], config: str = 'the config') -> None:
    """``cfg.merge_from_dict(options)`` (``--cfg-options``) once no key would change
    nothing: a :class:`ConfigError` for a top-level variable of the file (its value was
    put where the file uses it when the file was read; the message names those places),
    a top-level name nothing reads, and a key one letter away from the config's own
    (``model.backbone.shufle_rate``). A key new to the config is added, as MMEngine
    adds it."""
    for key in options or {}:
        parts = key.split('.')
        where = f'--cfg-options {key}'
        if parts[0] not in _RUNTIME_KEYS:
            if parts[0] in cfg:
                places = _paths_of({k: v for k, v in cfg.items() if k in _RUNTIME_KEYS},
                                   cfg[parts[0]])
                raise ConfigError(
                    f"{where}: '{parts[0]}' is a variable of {config}, already put where "
                    'the file uses it when the file was read, so this would change '
                    'nothing. Set the settings that use it instead' + (
                        f" (its value is at {', '.join(places)})" if places else '') + '.')
            raise ConfigError(f"{where}: {config} has no '{parts[0]}' and nothing reads it" +
                              _did_you_mean(parts[0], set(cfg) | _RUNTIME_KEYS) + '.')
        node = cfg.get(parts[0])
        for depth, part in enumerate(parts[1:], 1):
            if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            if not isinstance(node, dict) or part in node:
                node = node.get(part) if isinstance(node, dict) else None
                continue
            close = _did_you_mean(part, [k for k in node if isinstance(k, str)])
            if close:
                raise ConfigError(
                    f"{where}: {'.'.join(parts[:depth])} has no '{part}'{close}")
            break
    if options:
        cfg.merge_from_dict(options)


def _did_you_mean(name: str, names) -> str:
    """A refusal's suggestion: only a name one edit away (a key further away may well be
    a new setting, which MMEngine adds)."""
    from ..models.layers.arg_checks import close_names
    close = close_names(name, names, one_edit=True)
    return f"; did you mean '{close[0]}'?" if close else ''


def load_config(config: str,
                launcher: str = 'none',
                work_dir: Optional[str] = None,
                cfg_options: Optional[dict] = None):
    """Read a config for ``tools/train.py`` / ``tools/test.py``: apply overrides, choose
    the work dir (``./work_dirs/<config name>`` by default) and adapt it to this
    machine with :func:`prepare_runtime` (called by the tools after their own edits)."""
    from mmengine.config import Config
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    merge_cfg_options(cfg, cfg_options, osp.basename(config))
    check_config(cfg)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    if osp.exists(cfg.work_dir) and not osp.isdir(cfg.work_dir):
        raise ConfigError(f'the work dir {cfg.work_dir} is a file: give a directory '
                          '(new or existing) with --work-dir')
    return cfg
