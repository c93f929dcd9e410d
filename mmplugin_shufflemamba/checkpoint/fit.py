"""Does a checkpoint fit the model a config builds? The check ``tools/train.py``
(``load_from``, ``--resume``) and ``tools/test.py`` run before training or evaluating.

MMEngine 0.10 loads ``load_from`` / ``--resume`` / the test checkpoint non-strictly: a
checkpoint of another model (e.g. another width) is logged as a list of "size mismatch"
lines, one per tensor, and the run goes on with randomly initialised layers (a resume
fails later, at the optimizer, with an unrelated message). Its strict mode raises on
rank 0 only, so that the other ranks of a distributed job wait forever. Here:

- :func:`check_runner_checkpoint` finds the file the runner will load (as
  ``Runner.load_or_resume`` does), reads it on every rank and compares its weights with
  the runner's model (DDP / TTA wrappers unwrapped, ``module.`` prefixes stripped as
  MMEngine strips them; EMAHook's ``ema_state_dict`` too);
- a missing, unexpected or mis-shaped key, or a tensor holding NaN / inf, is a
  :class:`CheckpointFitError` raised on every rank with a short report: counts, the
  modules concerned, a few examples, and where the file came from (its meta: the
  experiment, the iteration and how its saved config's model differs from this one);
- ``allow_partial=True`` (``--allow-partial-load``) turns the key report into a warning
  that says what will not be loaded; ``allow_nonfinite=True``
  (``--allow-nonfinite-checkpoint``) does the same for NaN / inf weights.
"""
import logging
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log

from .saved_config import checkpoint_origin, model_config_differences, saved_config_value

#: the command-line switches that relax the check (named in the messages)
PARTIAL_FLAG = '--allow-partial-load'
NONFINITE_FLAG = '--allow-nonfinite-checkpoint'

# Keys whose absence MMEngine's loader ignores, and modules whose state the config sets
# (the data preprocessor's mean / std): reported, never fatal.
_IGNORED_MISSING = ('num_batches_tracked',)
_CONFIG_OWNED = ('data_preprocessor.',)


class CheckpointFitError(RuntimeError):
    """A checkpoint that does not fit the model it is to be loaded into (the message is
    the report)."""


# ------------------------------------------------------------------------ comparison
def strip_prefix(sd: Dict[str, Any], prefix: str = 'module.') -> 'OrderedDict[str, Any]':
    """Drop one leading ``prefix`` from the keys, as MMEngine's ``load_checkpoint``
    (``revise_keys=[(r'^module.', '')]``) does for DDP-saved state dicts."""
    return OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v)
                       for k, v in sd.items())


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module a checkpoint's state dict belongs to: without DDP / FSDP wrappers and
    without a test-time-augmentation wrapper (``SegTTAModel`` & co), as MMEngine's
    ``load_state_dict`` unwraps them."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def compare_state_dicts(ckpt: Dict[str, Any], model: Dict[str, Any]):
    """Keys of ``model`` the checkpoint lacks, keys it has that ``model`` lacks, and the
    keys whose shapes differ: ``(missing, unexpected, [(key, ckpt shape, model shape)])``."""
    missing = [k for k in model if k not in ckpt]
    unexpected = [k for k in ckpt if k not in model]
    shapes = []
    for k, v in ckpt.items():
        if k in model and isinstance(v, torch.Tensor) and isinstance(model[k], torch.Tensor) \
                and tuple(v.shape) != tuple(model[k].shape):
            shapes.append((k, tuple(v.shape), tuple(model[k].shape)))
    return missing, unexpected, shapes


def _group(keys: Sequence[str], depth: int = 2, limit: int = 6) -> str:
    """``'backbone.layers (96), decode_head.bottleneck (3), ...'``."""
    counts: Dict[str, int] = OrderedDict()
    for k in keys:
        parts = k.split('.')
        head = '.'.join(parts[:min(depth, max(1, len(parts) - 1))])
        counts[head] = counts.get(head, 0) + 1
    items = [f'{k} ({n})' for k, n in counts.items()]
    return ', '.join(items[:limit]) + (f', ... ({len(items) - limit} more groups)'
                                       if len(items) > limit else '')


def _examples(keys: Sequence[str], limit: int = 4) -> str:
    return ', '.join(keys[:limit]) + (', ...' if len(keys) > limit else '')


def _shape_lines(shapes, limit: int = 4) -> str:
    return '; '.join(f'{k}: checkpoint {list(a)} vs model {list(b)}'
                     for k, a, b in shapes[:limit]) + ('; ...' if len(shapes) > limit else '')


# -------------------------------------------------------------------- the file's origin
def checkpoint_weights(ckpt: Any) -> Tuple[Dict[str, Any], str]:
    """The state dict MMEngine's runner loads from a checkpoint object (``state_dict``,
    else the object itself) with ``module.`` stripped, and the entry's name."""
    if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict):
        return strip_prefix(ckpt['state_dict']), 'state_dict'
    if isinstance(ckpt, dict):
        return strip_prefix(ckpt), '<whole file>'
    raise CheckpointFitError(f'the checkpoint holds a {type(ckpt).__name__}, not a '
                             'checkpoint dict or state dict')


def _ema_weights(ckpt: Any) -> Optional[Dict[str, Any]]:
    """EMAHook's ``ema_state_dict`` (``module.<key>`` of the averaged model, plus its
    ``steps`` counter) with the model's keys, or None."""
    ema = ckpt.get('ema_state_dict') if isinstance(ckpt, dict) else None
    if not isinstance(ema, dict):
        return None
    return OrderedDict((k[len('module.'):], v) for k, v in ema.items()
                       if k.startswith('module.'))


def fit_report(model_sd: Dict[str, Any], ckpt: Any, mode: str = 'load',
               current_model_cfg: Optional[dict] = None) -> Tuple[List[str], Dict[str, Any]]:
    """Compare a checkpoint object with a model's state dict.

    Returns:
        tuple: (problem lines, details) with details ``missing``, ``unexpected``,
        ``shapes``, ``nonfinite`` (name -> 'NaN' / 'inf'), ``notes``, ``origin``.
    """
    from .files import nonfinite_tensors
    sd, entry = checkpoint_weights(ckpt)
    missing, unexpected, shapes = compare_state_dicts(sd, model_sd)
    notes = []
    owned = [k for k in missing + unexpected + [s[0] for s in shapes]
             if k.startswith(_CONFIG_OWNED)]
    if owned:
        notes.append(f'{len(owned)} data-preprocessor entries differ (set by the '
                     f'config, not loaded): {_examples(owned)}')
    missing = [k for k in missing if not k.startswith(_CONFIG_OWNED)
               and not k.endswith(_IGNORED_MISSING)]
    unexpected = [k for k in unexpected if not k.startswith(_CONFIG_OWNED)]
    shapes = [s for s in shapes if not s[0].startswith(_CONFIG_OWNED)]
    nonfinite = nonfinite_tensors(sd)
    ema = _ema_weights(ckpt)
    if ema is not None:
        e_missing, e_unexpected, e_shapes = compare_state_dicts(ema, model_sd)
        e_missing = [k for k in e_missing if not k.startswith(_CONFIG_OWNED)
                     and not k.endswith(_IGNORED_MISSING)]
        if mode == 'resume' and (e_missing or e_shapes):
            notes.append(f"its 'ema_state_dict' does not fit either ({len(e_missing)} "
                         f'missing, {len(e_shapes)} mis-shaped)')
        nonfinite.update({f'ema_state_dict: {k}': v
                          for k, v in nonfinite_tensors(ema).items()})
    lines = []
    if missing:
        lines.append(f'missing in the checkpoint: {len(missing)} of {len(model_sd)} model '
                     f'tensors, in {_group(missing)}; e.g. {_examples(missing)}')
    if unexpected:
        lines.append(f'unexpected (not in the model): {len(unexpected)} tensors, in '
                     f'{_group(unexpected)}; e.g. {_examples(unexpected)}')
    if shapes:
        lines.append(f'shape mismatch: {len(shapes)} tensors, in '
                     f'{_group([s[0] for s in shapes])}; e.g. {_shape_lines(shapes)}')
    if lines and entry != 'state_dict' and any(
            not isinstance(v, torch.Tensor) for v in sd.values()):
        top = sorted(map(str, ckpt))[:8]
        lines.insert(0, f"the file has no 'state_dict' entry (entries: {top}); an ImageNet "
                     'backbone checkpoint loads through model.backbone.init_cfg='
                     "dict(type='Pretrained', checkpoint=...), not load_from")
    origin = checkpoint_origin(ckpt)
    details = dict(missing=missing, unexpected=unexpected, shapes=shapes,
                   nonfinite=nonfinite, notes=notes, origin=origin, entry=entry,
                   total=sum(isinstance(v, torch.Tensor) for v in sd.values()))
    if lines and current_model_cfg is not None and isinstance(ckpt, dict) and \
            isinstance(ckpt.get('meta'), dict) and isinstance(ckpt['meta'].get('cfg'), str):
        saved = saved_config_value(ckpt['meta']['cfg'], 'model')
        if isinstance(saved, dict):
            diffs = model_config_differences(saved, current_model_cfg)
            details['config_differences'] = diffs
    return lines, details


def format_fit_error(source: str, target: str, lines: List[str], details: Dict[str, Any],
                     mode: str) -> str:
    what = {'resume': 'resume from', 'test': 'evaluate', 'load': 'load'}.get(mode, mode)
    out = [f'{source} does not fit the model of {target}: refusing to {what} it.']
    out += [f'  - {line}' for line in lines]
    if details.get('origin'):
        out.append(f"  the file comes from {details['origin']}")
    diffs = details.get('config_differences')
    if diffs:
        out.append("  its saved config's model differs from this one in:")
        out += [f'    {d}' for d in diffs]
    out += [f'  note: {n}' for n in details.get('notes', [])]
    fix = ('Use the checkpoint of this config (or the config the file was trained with)'
           if mode != 'resume' else
           'Resume with the config the file was trained with (a resume continues the '
           'same run: weights, optimizer and schedulers must all fit)')
    out.append(f'  {fix}; {PARTIAL_FLAG} loads what fits and leaves the rest as '
               'initialised.')
    return '\n'.join(out)


def check_checkpoint_fit(model: torch.nn.Module,
                         checkpoint: Any,
                         source: str = '<checkpoint>',
                         mode: str = 'load',
                         allow_partial: bool = False,
                         allow_nonfinite: bool = False,
                         target: str = 'this config',
                         model_cfg: Optional[dict] = None,
                         logger='current') -> Dict[str, Any]:
    """Refuse a checkpoint that does not fit ``model`` (keys, shapes) or holds NaN /
    inf weights, with a short report (:class:`CheckpointFitError`).

    Args:
        model (nn.Module): the model (wrappers are unwrapped, see :func:`unwrap_model`).
        checkpoint: a file path / URI (read with MMEngine's checkpoint loader, on the
            CPU) or an already-read checkpoint object.
        source (str): how to name the file in messages.
        mode (str): ``'load'`` (``load_from``), ``'resume'`` or ``'test'``.
        allow_partial (bool): warn (and say what will not be loaded) instead of raising
            on missing / unexpected / mis-shaped keys.
        allow_nonfinite (bool): warn instead of raising on NaN / inf weights.
        target (str): the model's config, for messages.
        model_cfg (dict, optional): the config's ``model``, compared with the one saved in
            the file's ``meta['cfg']`` in the report.

    Returns:
        dict: the details of :func:`fit_report` (empty lists when it fits).
    """
    if isinstance(checkpoint, str):
        from mmengine.runner.checkpoint import _load_checkpoint
        source = source if source != '<checkpoint>' else checkpoint
        checkpoint = _load_checkpoint(checkpoint, map_location='cpu')
    model_sd = unwrap_model(model).state_dict()
    lines, details = fit_report(model_sd, checkpoint, mode, model_cfg)
    if lines:
        message = format_fit_error(source, target, lines, details, mode)
        if not allow_partial:
            raise CheckpointFitError(message)
        not_loaded = len(details['missing']) + len(details['shapes'])
        print_log(f'{source}: partial load ({PARTIAL_FLAG}): {not_loaded} model tensors '
                  'keep their initialisation, '
                  f"{len(details['unexpected'])} checkpoint tensors are ignored.\n"
                  + '\n'.join(f'  - {line}' for line in lines)
                  + (f"\n  the file comes from {details['origin']}"
                     if details.get('origin') else ''),
                  logger=logger, level=logging.WARNING)
    bad = details['nonfinite']
    if bad:
        from .files import nonfinite_message
        message = nonfinite_message(bad, details['total'], source, NONFINITE_FLAG)
        if details.get('origin'):
            message += f" (the file comes from {details['origin']})"
        if not allow_nonfinite:
            raise CheckpointFitError(message)
        print_log(f'{source}: loading {len(bad)} tensors with NaN/inf values as asked '
                  f'({NONFINITE_FLAG}): {list(bad)[:5]}', logger=logger,
                  level=logging.WARNING)
    return details


class SkipMismatchedShapesHook(Hook):
    """``after_load_checkpoint`` of an allowed partial load: drop the tensors whose
    shapes differ from the model's before MMEngine loads the rest (its loader would
    otherwise print one "size mismatch" line per tensor, which the report summarised)."""

    priority = 'LOWEST'  # after EMAHook took its copy

    def __init__(self, keys) -> None:
        self.keys = set(keys)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        sd = checkpoint['state_dict'] if isinstance(checkpoint.get('state_dict'), dict) \
            else checkpoint
        for k in list(sd):
            if (k[len('module.'):] if k.startswith('module.') else k) in self.keys:
                del sd[k]


def checkpoint_to_load(runner) -> Tuple[Optional[str], Optional[str]]:
    """The file ``Runner.load_or_resume`` will load and how: ``(path, 'resume')``,
    ``(path, 'load')`` or ``(None, None)`` (nothing to load, e.g. an automatic resume in
    a work dir without checkpoints)."""
    if getattr(runner, '_has_loaded', False):
        return None, None
    resume, load_from = getattr(runner, '_resume', False), getattr(runner, '_load_from', None)
    if resume and load_from is None:
        from mmengine.runner import find_latest_checkpoint
        path = find_latest_checkpoint(runner.work_dir)
        return (path, 'resume') if path else (None, None)
    if resume:
        return load_from, 'resume'
    if load_from is not None:
        return load_from, 'load'
    return None, None


def check_runner_checkpoint(runner, allow_partial: bool = False,
                            allow_nonfinite: bool = False,
                            mode: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Run :func:`check_checkpoint_fit` on the checkpoint ``runner.train()`` /
    ``runner.test()`` is about to load (:func:`checkpoint_to_load`) against
    ``runner.model``. Call it on every rank before ``train()`` / ``test()``: every rank
    reads the file and reaches the same verdict, so that all stop together.

    Args:
        mode (str, optional): ``'test'`` names the purpose in the message; by default the
            runner's own (``'load'`` or ``'resume'``).

    Returns:
        dict or None: the details (None when nothing is to be loaded).
    """
    path, how = checkpoint_to_load(runner)
    if path is None:
        return None
    cfg = getattr(runner, 'cfg', None)
    filename = getattr(cfg, 'filename', None) if cfg is not None else None
    target = osp.basename(filename) if filename else 'this config'
    model_cfg = cfg.get('model') if cfg is not None else None
    details = check_checkpoint_fit(runner.model, path, source=str(path), mode=mode or how,
                                   allow_partial=allow_partial,
                                   allow_nonfinite=allow_nonfinite, target=target,
                                   model_cfg=model_cfg)
    if details['shapes']:  # allowed partial load: MMEngine loads the rest
        runner.register_hook(SkipMismatchedShapesHook(k for k, _, _ in details['shapes']))
    return details
