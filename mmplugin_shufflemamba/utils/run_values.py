"""The values that only the optimizer, the dataloaders, the schedulers and the loops read
when the run starts, checked before anything is built (:func:`check_run_values`)."""
import os
import re
from typing import Optional, Sequence

import torch

from .config_checks import _module_cfgs, _typed_nodes


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
        if cfg.get('default_scope') == 'mmseg':
            _check_crop_sizes(name, loader)
    if 'train_dataloader' in loaders:
        _check_single_image_batch_norm(cfg)
        _check_schedulers(cfg.get('param_scheduler'))


def _check_crop_sizes(name: str, loader: dict) -> None:
    """mmseg's ``RandomCrop`` takes an int or a tuple: a list (``--cfg-options`` reads
    ``[64,64]`` as one) stops at its assertion, in a traceback."""
    from ..errors import ArgumentTypeError
    for path, crop in _typed_nodes(loader.get('dataset'), ('RandomCrop', 'mmseg.RandomCrop'),
                                   f'{name}.dataset'):
        size = crop.get('crop_size')
        if isinstance(size, list):
            key = re.sub(r'\[(\d+)\]', r'.\1', path)  # (as --cfg-options names it)
            raise ArgumentTypeError(
                f"{key}.crop_size={size!r}: mmseg's RandomCrop takes an int or a tuple "
                f'(h, w), not a list: --cfg-options {key}.crop_size="(' +
                ','.join(map(str, size)) + ')" (parentheses make a tuple).')


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
        if kind not in _POOLING_HEADS:
            continue
        norm = head.get('norm_cfg') if isinstance(head.get('norm_cfg'), dict) else {}
        key = _POOLING_HEADS[kind]
        scales = head.get(key, (1, 2, 3, 6)) if key else (1, )
        if not isinstance(scales, (list, tuple)) or 1 not in scales or \
                norm.get('type') not in ('BN', 'BN2d', 'SyncBN'):
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
