"""The checks of a config's parts that must agree (the heads' classes and the data's,
the backbone's outputs and the modules that take them), before anything is built: a
:class:`ConfigError` naming both parts and the fix."""
import os.path as osp
from typing import Any, List, Optional, Sequence, Tuple


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


def _module_cfgs(model: dict, name: str) -> List[Tuple[str, dict]]:
    """``(path, config)`` of ``model[name]``: one dict (``'model.neck'``) or each dict of
    a list (``'model.decode_head[1]'``)."""
    value = model.get(name)
    if isinstance(value, (list, tuple)):
        return [(f'model.{name}[{i}]', v) for i, v in enumerate(value) if isinstance(v, dict)]
    return [(f'model.{name}', value)] if isinstance(value, dict) else []


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


def _unwrapped(dataset: Any, key: str) -> Any:
    """The dataset config inside one wrapper (``RepeatDataset``,
    ``ClassBalancedDataset``: ``dataset=dict(...)``) where the outer one has no ``key``."""
    if isinstance(dataset, dict) and key not in dataset and \
            isinstance(dataset.get('dataset'), dict):
        return dataset['dataset']
    return dataset


def _dataset_classes(dataset: Any) -> Optional[int]:
    """How many classes a dataset config has: its ``metainfo.classes``, COCO's 80 for
    mmdet's COCO datasets without them, through one wrapper; None where the config does
    not say."""
    dataset = _unwrapped(dataset, 'metainfo')
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
                              "give one per map, or change the backbone's outputs.")
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


def check_evaluator_files(cfg) -> None:
    """mmdet's ``CocoMetric`` scores against the annotation file it names: the one its
    dataloader's dataset reads, or another under the dataset's ``data_root`` (a
    panoptic dataset's instance annotations). A ``--cfg-options`` change of the
    dataset's ``data_root`` leaves the evaluator at the path the config file wrote (whose
    metrics would be another file's, or a traceback from pycocotools). A
    :class:`ConfigError` naming both otherwise."""
    for name in ('val', 'test'):
        loader = cfg.get(f'{name}_dataloader')
        dataset = _unwrapped(loader.get('dataset') if isinstance(loader, dict) else None,
                             'ann_file')
        if not isinstance(dataset, dict) or not isinstance(dataset.get('ann_file'), str):
            continue
        root = osp.normpath(dataset.get('data_root') or '.')
        reads = osp.normpath(osp.join(root, dataset['ann_file']))
        evaluators = cfg.get(f'{name}_evaluator')
        many = isinstance(evaluators, (list, tuple))
        for i, ev in enumerate(evaluators if many else [evaluators]):
            if not isinstance(ev, dict) or not isinstance(ev.get('ann_file'), str) or \
                    str(ev.get('type', '')).split('.')[-1] != 'CocoMetric':
                continue
            scored = osp.normpath(ev['ann_file'])
            if scored != reads and not (root != '.' and scored.startswith(root + osp.sep)):
                where = f'{name}_evaluator' + (f'[{i}]' if many else '')
                raise ConfigError(
                    f"{where}.ann_file={ev['ann_file']!r} but {name}_dataloader.dataset "
                    f'reads {reads!r}: the metric would score the predictions against '
                    f'another file. Set {where}.ann_file={reads!r} too (a changed '
                    "data_root does not reach the evaluator's path).")


def check_config(cfg) -> None:
    """The checks of parts that must agree: :func:`check_label_classes`,
    :func:`check_detection_classes`, :func:`check_backbone_channels`,
    :func:`check_backbone_outputs`, :func:`check_evaluator_files`."""
    check_label_classes(cfg)
    check_detection_classes(cfg)
    check_backbone_channels(cfg)
    check_backbone_outputs(cfg)
    check_evaluator_files(cfg)
