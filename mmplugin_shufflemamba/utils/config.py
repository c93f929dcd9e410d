"""Reading a config for the tools: ``--cfg-options`` checked and merged, the work dir,
the checks of parts that must agree (:mod:`.config_checks`)."""
import os.path as osp
from typing import Any, List, Optional

from .cli import file_in_the_way
from .config_checks import ConfigError, check_config

__all__ = ['ConfigError', 'check_config', 'enable_auto_scale_lr', 'load_config',
           'merge_cfg_options']


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
    adds it; keys below a setting that is None (``model.backbone.init_cfg.type`` where
    the config says ``init_cfg=None``) fill a new dict there (MMEngine refuses to merge
    into None)."""
    for key in options or {}:
        parts = key.split('.')
        where = f'--cfg-options {key}'
        if parts[0] not in _RUNTIME_KEYS:
            if parts[0] in cfg:
                places = _paths_of({k: v for k, v in cfg.items() if k in _RUNTIME_KEYS},
                                   cfg[parts[0]])
                value = cfg[parts[0]]
                found = bool(value) and isinstance(value, (str, dict, list, tuple))
                raise ConfigError(
                    f"{where}: '{parts[0]}' is a variable of {config} or of a config it "
                    'inherits, already put where the files use it when they were read, '
                    'so this would change nothing. Set the settings that use it instead' + (
                        f" (its value is at {', '.join(places)})" if places else
                        ' (none holds it as a whole now: the config sets them otherwise, '
                        'or uses it inside another value)'
                        if found else '') + '.')
            raise ConfigError(f"{where}: {config} has no '{parts[0]}' and nothing reads it" +
                              _did_you_mean(parts[0], set(cfg) | _RUNTIME_KEYS) + '.')
        node = cfg.get(parts[0])
        for depth, part in enumerate(parts[1:], 1):
            if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            if not isinstance(node, dict) or part in node:
                if isinstance(node, dict) and node[part] is None and depth < len(parts) - 1:
                    node[part] = {}  # keys below a None setting: a dict to merge into
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
    blocking = file_in_the_way(cfg.work_dir)
    if blocking is not None:
        raise ConfigError(f'the work dir {cfg.work_dir} is a file' + (
            '' if blocking == osp.abspath(osp.expanduser(cfg.work_dir)) else
            f' or under one ({blocking})') + ': give a directory (new or existing) with '
            '--work-dir')
    return cfg
