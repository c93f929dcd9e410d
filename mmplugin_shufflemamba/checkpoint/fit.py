"""Does a checkpoint fit the model a config builds? The check ``tools/train.py``
(``load_from``, ``--resume``) and ``tools/test.py`` run on every rank first (see
docs/loading.md, "Why the tools check a checkpoint first"): a missing, unexpected or
mis-shaped key, or a NaN / inf tensor, is a :class:`CheckpointFitError` with a short
report, or a warning with ``allow_partial`` / ``allow_nonfinite``."""
import logging
from collections import Counter, OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log

from .files import (CheckpointError, ema_hook_raw_weights, nonfinite_tensors, read_checkpoint,
                    refuse_nonfinite)
from .layout import backbone_prefixes, is_mmpretrain_classifier
from .saved_config import checkpoint_origin, model_config_differences, saved_config_value

#: the tools' switches that relax the check (named in the messages)
PARTIAL_FLAG = '--allow-partial-load'
NONFINITE_FLAG = '--allow-nonfinite-checkpoint'

# Keys whose absence MMEngine's loader ignores, and modules whose state the config sets
# (the data preprocessor's mean / std): reported, never fatal.
_IGNORED_MISSING = ('num_batches_tracked',)
_CONFIG_OWNED = ('data_preprocessor.',)


class CheckpointFitError(RuntimeError):
    """A checkpoint that does not fit the model it is to be loaded into (the message is
    the report)."""


def _strip_module(key: str) -> str:
    return key[len('module.'):] if key.startswith('module.') else key


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module a checkpoint's state dict belongs to: without DDP / FSDP / TTA wrappers,
    as MMEngine's ``load_state_dict`` unwraps them."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def compare_state_dicts(ckpt: Dict[str, Any], model: Dict[str, Any]):
    """Keys of ``model`` the checkpoint lacks, keys it has that ``model`` lacks, and the
    keys whose shapes differ: ``(missing, unexpected, [(key, ckpt shape, model shape)])``."""
    shapes = [(k, tuple(v.shape), tuple(model[k].shape)) for k, v in ckpt.items()
              if k in model and isinstance(v, torch.Tensor) and
              isinstance(model[k], torch.Tensor) and tuple(v.shape) != tuple(model[k].shape)]
    return [k for k in model if k not in ckpt], [k for k in ckpt if k not in model], shapes


def _group(keys: Sequence[str], depth: int = 2, limit: int = 6) -> str:
    """``'backbone.layers (96), decode_head.bottleneck (3), ...'``."""
    counts = Counter('.'.join(k.split('.')[:min(depth, max(1, k.count('.')))]) for k in keys)
    items = [f'{k} ({n})' for k, n in counts.items()]
    return ', '.join(items[:limit]) + (f', ... ({len(items) - limit} more groups)'
                                       if len(items) > limit else '')


def _examples(items: Sequence[str], limit: int = 4, sep: str = ', ') -> str:
    return sep.join(items[:limit]) + (f'{sep}...' if len(items) > limit else '')


def checkpoint_weights(ckpt: Any) -> Tuple[Dict[str, Any], str]:
    """The state dict MMEngine's runner loads from a checkpoint object (``state_dict``,
    else the object itself) with one leading ``module.`` stripped (its ``revise_keys``
    for DDP-saved state dicts), and the entry's name."""
    if not isinstance(ckpt, dict):
        raise CheckpointFitError(f'the checkpoint holds a {type(ckpt).__name__}, not a '
                                 'checkpoint dict or state dict')
    entry = 'state_dict' if isinstance(ckpt.get('state_dict'), dict) else '<whole file>'
    sd = ckpt['state_dict'] if entry == 'state_dict' else ckpt
    return OrderedDict((_strip_module(k), v) for k, v in sd.items()), entry


def fit_report(model_sd: Dict[str, Any], ckpt: Any, mode: str = 'load',
               current_model_cfg: Optional[dict] = None) -> Tuple[List[str], Dict[str, Any]]:
    """Compare a checkpoint object with a model's state dict: ``(problem lines, details)``
    with details ``missing``, ``unexpected``, ``shapes``, ``nonfinite`` (name -> 'NaN' /
    'inf'), ``notes``, ``origin``, ``entry``, ``total`` (, ``config_differences``)."""
    def relevant_missing(keys):
        return [k for k in keys if not k.startswith(_CONFIG_OWNED)
                and not k.endswith(_IGNORED_MISSING)]

    sd, entry = checkpoint_weights(ckpt)
    missing, unexpected, shapes = compare_state_dicts(sd, model_sd)
    notes = []
    owned = [k for k in missing + unexpected + [s[0] for s in shapes]
             if k.startswith(_CONFIG_OWNED)]
    if owned:
        notes.append(f'{len(owned)} data-preprocessor entries differ (set by the '
                     f'config, not loaded): {_examples(owned)}')
    missing = relevant_missing(missing)
    unexpected = [k for k in unexpected if not k.startswith(_CONFIG_OWNED)]
    shapes = [s for s in shapes if not s[0].startswith(_CONFIG_OWNED)]
    nonfinite = nonfinite_tensors(sd)
    ema = ema_hook_raw_weights(ckpt)  # (ckpt is a dict: checkpoint_weights checked)
    if ema is not None:
        e_missing, _, e_shapes = compare_state_dicts(ema, model_sd)
        e_missing = relevant_missing(e_missing)
        if mode == 'resume' and (e_missing or e_shapes):
            notes.append(f"its 'ema_state_dict' does not fit either ({len(e_missing)} "
                         f'missing, {len(e_shapes)} mis-shaped)')
        nonfinite.update({f'ema_state_dict: {k}': v
                          for k, v in nonfinite_tensors(ema).items()})
    lines = []
    if missing:
        counted = len(relevant_missing(model_sd))  # the same keys as ``missing``
        lines.append(f'missing in the checkpoint: {len(missing)} of {counted} model '
                     f'tensors, in {_group(missing)}; e.g. {_examples(missing)}')
    if unexpected:
        kind = 'tensors' if all(isinstance(sd[k], torch.Tensor) for k in unexpected) \
            else 'entries'
        lines.append(f'unexpected (not in the model): {len(unexpected)} {kind}, in '
                     f'{_group(unexpected)}; e.g. {_examples(unexpected)}')
    if shapes:
        pairs = [f'{k}: checkpoint {list(a)} vs model {list(b)}' for k, a, b in shapes]
        lines.append(f'shape mismatch: {len(shapes)} tensors, in '
                     f"{_group([s[0] for s in shapes])}; e.g. {_examples(pairs, sep='; ')}")
    init_cfg = ("model.backbone.init_cfg=dict(type='Pretrained', checkpoint=...), not "
                'load_from')
    if lines and entry != 'state_dict' and any(
            not isinstance(v, torch.Tensor) for v in sd.values()):
        top = sorted(map(str, ckpt))[:8]
        lines.insert(0, f"the file has no 'state_dict' entry (entries: {top}); an ImageNet "
                     f'backbone checkpoint loads through {init_cfg}, and a '
                     'classifier in the official / timm layout evaluates with a '
                     'configs/pretrain config once converted: tools/convert_checkpoint.py '
                     'SRC DST --to mmpretrain')
    elif lines and any(k.startswith('backbone.') for k in model_sd) and \
            '' in backbone_prefixes(sd):
        lines.insert(0, "the file holds a backbone at its top level ('patch_embed.*' and "
                     "'layers.*', not under 'backbone.'), as an ImageNet classifier or a "
                     f'converted backbone file does: it loads through {init_cfg}')
    elif lines and is_mmpretrain_classifier(sd) and not is_mmpretrain_classifier(model_sd) \
            and 'backbone.' in backbone_prefixes(sd):
        lines.insert(0, "the file is an mmpretrain ImageClassifier ('backbone.*' and "
                     "'head.fc.*'), an ImageNet checkpoint: its backbone loads through "
                     f'{init_cfg} (the classification head is left out)')
    details = dict(missing=missing, unexpected=unexpected, shapes=shapes,
                   nonfinite=nonfinite, notes=notes, origin=checkpoint_origin(ckpt),
                   entry=entry, total=sum(isinstance(v, torch.Tensor) for v in sd.values()))
    if lines and current_model_cfg is not None and isinstance(ckpt.get('meta'), dict) and \
            isinstance(ckpt['meta'].get('cfg'), str):
        saved = saved_config_value(ckpt['meta']['cfg'], 'model')
        if isinstance(saved, dict):
            details['config_differences'] = model_config_differences(saved, current_model_cfg)
    return lines, details


def _problem_lines(lines: List[str], details: Dict[str, Any]) -> List[str]:
    return [f'  - {line}' for line in lines] + (
        [f"  the file comes from {details['origin']}"] if details.get('origin') else [])


def format_fit_error(source: str, target: str, lines: List[str], details: Dict[str, Any],
                     mode: str) -> str:
    what = {'resume': 'resume from', 'test': 'evaluate', 'load': 'load'}.get(mode, mode)
    out = [f'{source} does not fit the model of {target}: refusing to {what} it.']
    out += _problem_lines(lines, details)
    diffs = details.get('config_differences')
    if diffs:
        out.append("  its saved config's model differs from this one in:")
        out += [f'    {d}' for d in diffs]
    out += [f'  note: {n}' for n in details.get('notes', [])]
    fix = ('Resume with the config the file was trained with (a resume continues the '
           'same run: weights, optimizer and schedulers must all fit)' if mode == 'resume'
           else 'Use the checkpoint of this config (or the config the file was trained with)')
    out.append(f'  {fix}; {PARTIAL_FLAG} (allow_partial=True in code) loads what fits '
               'and leaves the rest as initialised.')
    return '\n'.join(out)


def check_checkpoint_fit(model: torch.nn.Module, checkpoint: Any, source: str = '<checkpoint>',
                         mode: str = 'load', allow_partial: bool = False,
                         allow_nonfinite: bool = False, target: str = 'this config',
                         model_cfg: Optional[dict] = None, logger='current') -> Dict[str, Any]:
    """Refuse a checkpoint that does not fit ``model`` (keys, shapes) or holds NaN /
    inf weights, with a short report (:class:`CheckpointFitError`).

    Args:
        model (nn.Module): the model (wrappers are unwrapped, see :func:`unwrap_model`).
        checkpoint: a file path (:func:`read_checkpoint`: a missing or unreadable file
            is a :class:`CheckpointError`), a URI (read by MMEngine, on the CPU) or
            a read checkpoint.
        source (str): how to name the file in messages.
        mode (str): ``'load'`` (``load_from``), ``'resume'`` or ``'test'``.
        allow_partial (bool): warn instead of raising on mismatched keys.
        allow_nonfinite (bool): warn instead of raising on NaN / inf weights.
        target (str): the model's config, for messages.
        model_cfg (dict, optional): the config's ``model``, compared with ``meta['cfg']``.
        logger: where the warnings go. Defaults to 'current'.

    Returns:
        dict: the details of :func:`fit_report` (empty lists when it fits).
    """
    return _checked_fit(model, checkpoint, source, mode, allow_partial, allow_nonfinite,
                        target, model_cfg, logger)[0]


def _checked_fit(model, checkpoint, source, mode, allow_partial, allow_nonfinite, target,
                 model_cfg, logger='current') -> Tuple[Dict[str, Any], Any]:
    """:func:`check_checkpoint_fit`, which also returns the checkpoint it checked: read,
    and (but for a resume) as the backbones read it (:func:`as_loaded`)."""
    if isinstance(checkpoint, str):
        source = source if source != '<checkpoint>' else checkpoint
    checkpoint = _read(checkpoint, mode)
    model = unwrap_model(model)
    unread = None
    if mode != 'resume':  # what the backbones read of it (a resume keeps the layout)
        try:
            checkpoint = as_loaded(model, checkpoint, quiet=True)
        except CheckpointError as e:  # e.g. another kind of model: the whole report
            unread = e
    lines, details = fit_report(model.state_dict(), checkpoint, mode, model_cfg)
    if unread is not None:
        if not lines or allow_partial:  # (a partial load would stop on it too)
            raise unread
        details['notes'].append(f'its backbone could not be read as this one: {unread}')
    if lines:
        message = format_fit_error(source, target, lines, details, mode)
        if not allow_partial:
            raise CheckpointFitError(message)
        not_loaded = len(details['missing']) + len(details['shapes'])
        print_log(f'{source}: partial load ({PARTIAL_FLAG}): {not_loaded} model tensors '
                  'keep their initialisation, '
                  f"{len(details['unexpected'])} checkpoint tensors are ignored.\n"
                  + '\n'.join(_problem_lines(lines, details)),
                  logger=logger, level=logging.WARNING)
    if mode == 'load' and isinstance(checkpoint, dict) and ema_hook_raw_weights(checkpoint):
        print_log(f"{source}: load_from loads its 'state_dict', which EMAHook saved as the "
                  "EMA weights (the raw ones are its 'ema_state_dict'), as MMEngine does. "
                  "The raw weights, which the official fine-tuning starts from, are what "
                  "init_cfg=dict(type='Pretrained', ...) and tools/convert_checkpoint.py "
                  'read by default.', logger=logger)
    if mode == 'resume':
        meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
        state = [k for k in ('meta.epoch', 'meta.iter') if not isinstance(meta, dict)
                 or k[5:] not in meta] + [k for k in ('message_hub', ) if k not in checkpoint]
        if state:  # weights alone (a converted or published file): MMEngine needs these
            raise CheckpointFitError(
                f'{source} holds weights but no training state to resume (no '
                f"{' / '.join(state)}): --resume continues a run from a checkpoint its "
                "runner saved (the work dir's iter_*.pth / epoch_*.pth). To start a run "
                f'from these weights give them as load_from (--cfg-options '
                f"load_from={source}) or, for an ImageNet backbone, as "
                "model.backbone.init_cfg=dict(type='Pretrained', checkpoint=...).")
    refuse_nonfinite(details['nonfinite'], details['total'], source, allow_nonfinite,
                     NONFINITE_FLAG, CheckpointFitError, details.get('origin'), logger)
    return details, checkpoint


def _read(checkpoint: Any, mode: str) -> Any:
    """A path or URI read (on the CPU); anything else as it is."""
    if not isinstance(checkpoint, str):
        return checkpoint
    if '://' in checkpoint:  # MMEngine's schemes (open-mmlab://, http://, ...)
        from mmengine.runner.checkpoint import _load_checkpoint
        return _load_checkpoint(checkpoint, map_location='cpu')
    # a missing, unreadable or unsafe file: a CheckpointError naming it
    return read_checkpoint(checkpoint, what=dict(
        load='load_from', resume='--resume / load_from').get(mode, 'the checkpoint'))


def load_checked(model: torch.nn.Module, checkpoint: Any, source: Optional[str] = None,
                 allow_partial: bool = False, allow_nonfinite: bool = False,
                 target: str = 'this config',
                 model_cfg: Optional[dict] = None) -> Dict[str, Any]:
    """Load a checkpoint into a whole model as ``tools/test.py`` evaluates one, without
    a runner: :func:`check_checkpoint_fit` (``mode='test'``), then the weights as the
    backbones read them (:func:`as_loaded`); with ``allow_partial`` what fits. The file
    is read and converted once. Returns the fit check's details."""
    source = source or (checkpoint if isinstance(checkpoint, str) else '<checkpoint>')
    details, loaded = _checked_fit(model, checkpoint, source, 'test', allow_partial,
                                   allow_nonfinite, target, model_cfg)
    model = unwrap_model(model)
    sd, _ = checkpoint_weights(loaded)
    skip = {k for k, _, _ in details['shapes']}  # (only with allow_partial)
    # The fit check was the strict one: what it ignores (num_batches_tracked, the data
    # preprocessor's) or allowed stays as initialised.
    model.load_state_dict(OrderedDict((k, v) for k, v in sd.items() if k not in skip),
                          strict=False)
    return details


def as_loaded(model: torch.nn.Module, ckpt: Any, quiet: bool = False) -> Any:
    """``ckpt`` with the state dict MMEngine's runner loads (:func:`checkpoint_weights`)
    as ``model``'s backbones read it: :func:`~.loading.read_model_layout`, resized from
    the grid the file records. ``ckpt`` is not changed."""
    from .pre_hook import read_model_layout
    sd, entry = checkpoint_weights(ckpt)
    sd = read_model_layout(model, sd, ckpt, quiet)
    return dict(ckpt, state_dict=sd) if entry == 'state_dict' else sd
