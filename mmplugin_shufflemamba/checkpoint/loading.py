"""Loading ImageNet checkpoints (ShuffleMamba, ShuffleMamba-Reg, Vim, VideoMamba) into
:class:`ShuffleMamba`: read the file and pick its raw or EMA weights (:mod:`.files`),
convert them (:mod:`.layout`) and load them strictly. The formats, how a file's format is
read and what is refused: docs/loading.md."""
import logging
from typing import Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log

from ..errors import ArgumentTypeError
from .files import (CheckpointError, check_finite, check_flag,
                    non_tensor_values, nonfinite_tensors, own_meta, read_checkpoint,
                    refuse_nonfinite, select_state_dict)
from .fit import compare_state_dicts
from .layout import (backbone_prefixes, convert_to_backbone, detect_format,
                     is_mmpretrain_classifier, mmpretrain_to_official, strip_wrappers)
from .saved_config import format_evidence, recorded_grid


#: What each entry of a checkpoint holds, for the log line.
_ENTRY_NOTES = {
    'model': 'raw weights', 'model_ema': 'EMA weights', 'state_dict_ema': 'EMA weights',
    'ema_state_dict': "raw weights: MMEngine's EMAHook keeps them there",
}
# norm_cfg type -> (its name, what a checkpoint with it holds, the models that use it)
_NORMS = {'RMSNorm': ('RMSNorm', 'norm weights only, no norm biases',
                      'ShuffleMamba-B, L1 and every Reg model'),
          'LN': ('LayerNorm', 'norm weights and biases', 'ShuffleMamba-M')}
#: Why a tensor finite in the file is not after the conversion, and the fix.
_CONVERSION_MADE = (
    "The file's values are finite: the conversion to this model's layout made them "
    'overflow (in half precision, e.g. a position embedding resized past the fp16 '
    'maximum). Cast the checkpoint to float32 first, e.g. '
    '{k: v.float() for k, v in state_dict.items()}')
#: Why a tensor finite after the conversion is not in the model's own dtype, and the fix.
_PAST_MODEL_DTYPE = (
    "They would be: in float32 these weights are finite, but they exceed the range of the "
    "model's own dtype (e.g. VideoMamba's doubled out_proj past the float16 maximum in a "
    'float16 model). Keep the model in float32 (bfloat16, or float16 through autocast, '
    'hold them)')
#: Top-level modules of ShuffleMambaAdapter that the plain backbone does not have.
_ADAPTER_MODULES = ('spm', 'interactions', 'level_embed', 'up', 'norm1', 'norm2', 'norm3',
                    'norm4')


def norm_of(model) -> str:
    """The norm type of ``model``'s blocks: 'RMSNorm' or 'LN'."""
    return 'RMSNorm' if isinstance(model.layers[0].norm, torch.nn.RMSNorm) else 'LN'


def norm_mismatch(model_norm: str, ckpt_norm: Optional[str]) -> Optional[Tuple[str, str]]:
    """``(report line, norm_cfg fix)`` when a checkpoint trained with ``ckpt_norm``
    ('RMSNorm' / 'LN') does not fit a model whose norms are ``model_norm`` (its
    :func:`norm_of`), else None: loaded anyway, RMSNorm weights would sit in LayerNorms
    with their initial biases (REFERENCE: the official downstream code's silent
    failure)."""
    if ckpt_norm not in _NORMS or ckpt_norm == model_norm:
        return None
    fix = f"norm_cfg=dict(type='{ckpt_norm}', eps=1e-5)"
    name, holds, who = _NORMS[ckpt_norm]
    return (f'norm mismatch: the checkpoint was trained with {name} ({holds}) but the '
            f'backbone was built with {_NORMS[model_norm][0]}: set {fix} in the backbone '
            f'config (as for {who}).', fix)


def _argument_fixes(model, shapes) -> list:
    """``name=value`` for each backbone argument that the checkpoint's mismatched shapes
    give otherwise than the model's (patch size, input channels, d_state, expand,
    d_conv, cls_reduce)."""
    by_key = {k: (tuple(a), tuple(b)) for k, a, b in shapes}
    readers = (  # (argument, key, value from the tensor's shape)
        ('patch_size', 'patch_embed.proj.weight', lambda s: s[-1]),
        ('in_chans' if hasattr(model, 'num_classes') else 'in_channels',
         'patch_embed.proj.weight', lambda s: s[1]),
        ('d_state', 'layers.0.mixer.A_log', lambda s: s[1]),
        ('d_conv', 'layers.0.mixer.conv1d.weight', lambda s: s[-1]),
        ('cls_reduce', 'neck.weight', lambda s: s[1] // s[0]))
    fixes = [f'{arg}={read(by_key[k][0])}' for arg, k, read in readers
             if k in by_key and read(by_key[k][0]) != read(by_key[k][1])]
    a_log, pe = by_key.get('layers.0.mixer.A_log'), by_key.get('patch_embed.proj.weight')
    if a_log:  # d_inner = expand * width
        expand = a_log[0][0] / (pe[0][0] if pe else model.embed_dims)
        if expand != a_log[1][0] / model.embed_dims and expand.is_integer():
            fixes.append(f'expand={int(expand)}')
    return fixes


def _mismatch_report(model, summary, missing, unexpected, shapes) -> str:
    """The report of :func:`load_into_backbone`, led by the norm_cfg to set when the
    checkpoint's and the model's norms disagree, and ending with the arguments to set."""
    lines = [f'the checkpoint does not match the {type(model).__name__} backbone:']
    ckpt_norm, model_norm = summary.get('norm'), norm_of(model)
    norm = norm_mismatch(model_norm, ckpt_norm)
    if norm:
        lines.append('  ' + norm[0])
    for what, keys in (('missing', missing), ('unexpected', unexpected)):
        if keys:
            lines.append(f'  {what} in checkpoint ({len(keys)}): {keys[:12]}'
                         + (' ...' if len(keys) > 12 else ''))
    if shapes:
        lines.append(f'  shape mismatch ({len(shapes)}): ' + ', '.join(
            f'{k}: checkpoint {tuple(a)} vs model {tuple(b)}' for k, a, b in shapes[:8]))
    lines += [
        f"  checkpoint: depth {summary['depth']}, width {summary['embed_dims']}, "
        f"patch {summary['patch_size']}, norm {ckpt_norm}, "
        f"{summary['checkpoint_tokens']} cls/register token(s), grid {summary['grid']}, "
        f"format '{summary['format']}'",
        f'  model:      depth {model.num_layers}, width {model.embed_dims}, patch '
        f'{model.patch_size}, norm {model_norm}, ' + (
            'cls token first' if getattr(model, 'with_cls_token', False) else
            f'{model.num_registers} register(s)')]
    fixes = []
    size = (summary['depth'], summary['embed_dims'])
    if size != (model.num_layers, model.embed_dims):
        from ..models.archs import ARCHS
        name = next((n for n, a in ARCHS.items()
                     if (a['num_layers'], a['embed_dims']) == size), None)
        fixes.append(f"arch='{name}'" if name else
                     f'arch=dict(embed_dims={size[1]}, num_layers={size[0]})')
    if norm:
        fixes.append(norm[1])
    fixes += _argument_fixes(model, shapes)
    if 'neck.weight' in missing:
        lines.append('  the checkpoint has no classification neck (neck / norm_neck) for '
                     f'cls_reduce={getattr(model, "cls_reduce", 1)}: load the Mamba-Reg file '
                     'itself, or convert it with tools/convert_checkpoint.py '
                     '--num-registers R --keep-neck.')
    if any(k.split('.')[0] in _ADAPTER_MODULES for k in unexpected) and \
            not hasattr(model, 'interactions'):
        lines.append('  the file holds a ShuffleMambaAdapter (spm / interactions / level_embed '
                     'weights): load it into ShuffleMambaAdapter, or start this backbone '
                     'from the ImageNet checkpoint the adapter was fine-tuned from.')
    lines.append('  Fix: ' + (f"build the backbone with {' and '.join(fixes)} (what the "
                              'checkpoint was trained with), or ' if fixes else '')
                 + 'load the file made for this model.')
    return '\n'.join(lines)


#: how a checkpoint given as a dict is named in messages
IN_MEMORY = 'the given state dict'


def source_name(checkpoint: Union[str, dict]) -> str:
    """How the messages name a checkpoint: its path, or :data:`IN_MEMORY`."""
    return IN_MEMORY if isinstance(checkpoint, dict) else checkpoint


def read_backbone_weights(checkpoint: Union[str, dict], prefix: Optional[str] = None,
                          map_location: str = 'cpu', use_ema: bool = False,
                          ckpt_format: str = 'auto', allow_nonfinite: bool = False,
                          opt_out: str = 'allow_nonfinite=True',
                          source: Optional[str] = None
                          ) -> Tuple[Dict[str, torch.Tensor], str, str]:
    """Read a checkpoint file, pick the state dict to convert and settle its format.

    Args:
        checkpoint (str | dict): file path or URI (a placeholder path is refused
            first), or a checkpoint already in memory (e.g. a state dict).
        prefix (str, optional): take only keys under this prefix (e.g. 'backbone.').
        map_location (str): Defaults to 'cpu'.
        use_ema (bool): the EMA weights (:func:`select_state_dict`). Defaults to False.
        ckpt_format (str): 'auto' is settled here from the keys and the file's evidence
            (:func:`format_evidence`, :func:`detect_format`). Defaults to 'auto'.
        allow_nonfinite (bool): warn on NaN / inf weights instead of refusing them.
        opt_out (str): how the user asks for ``allow_nonfinite`` (named in the refusal).
        source (str, optional): how the messages name the checkpoint (a checkpoint
            already read from that file); defaults to its path, or :data:`IN_MEMORY`.

    Returns:
        tuple: (state dict, name of the entry used, format to convert with).
    """
    allow_nonfinite = check_flag('allow_nonfinite', allow_nonfinite)
    if prefix is not None and not isinstance(prefix, str):
        raise ArgumentTypeError(f"prefix must be a key prefix such as 'backbone.', got "
                                f'{prefix!r}')
    ckpt = checkpoint if isinstance(checkpoint, dict) else read_checkpoint(
        checkpoint, map_location)
    checkpoint = source or source_name(checkpoint)
    sd, entry = select_state_dict(ckpt, use_ema, checkpoint)
    if prefix:
        p = prefix if prefix.endswith('.') else prefix + '.'
        sd_all, sd = sd, {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
        if not sd:
            held = [k or '(the top level)' for k in backbone_prefixes(sd_all)]
            raise CheckpointError(f"{checkpoint} has no keys under prefix '{p}'" + (
                f"; it holds the backbone under {held}: give one of those." if held
                else '.'))
    elif is_mmpretrain_classifier(sd):
        sd = mmpretrain_to_official(sd)
    check_finite(sd, f"{checkpoint} (entry '{entry}')", allow_nonfinite, opt_out)
    hint, evidence = format_evidence(ckpt)
    if ckpt_format == 'auto':
        try:
            ckpt_format = detect_format(sd, hint)
        except CheckpointError as e:
            raise CheckpointError(f'{checkpoint}: {e} [evidence: {evidence}]') from None
    elif hint in ('shufflemamba', 'vim', 'videomamba'):
        try:
            said = detect_format(sd, hint)
        except CheckpointError:
            said = ckpt_format  # the file's own reading fails: nothing to override
        if said != ckpt_format and {said, ckpt_format} != {'shufflemamba', 'mmplugin'}:
            # (this project's one-token layout is cls first: the same reading)
            print_log(f"ckpt_format='{ckpt_format}' overrides what {checkpoint} says of "
                      f"itself ({evidence}: format '{said}'); leave ckpt_format at 'auto' "
                      'to read it as it says.', logger='current', level=logging.WARNING)
    return sd, entry, ckpt_format


def load_into_backbone(model, converted: Dict[str, torch.Tensor], summary: Dict[str, object],
                       source: str = '<checkpoint>', allow_nonfinite: bool = False,
                       original: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """Load converted weights into ``model``: exactly the keys and shapes of
    ``model.pretrained_state_dict()`` (a final norm the model lacks is dropped), or of its
    whole state dict where the weights hold more of it (an adapter's own modules), else a
    :class:`CheckpointError` with a report and nothing loaded. NaN / inf weights are
    refused, or with ``allow_nonfinite`` logged. ``original`` is the state dict before
    the conversion: its own NaN / inf were logged when it was read
    (:func:`read_backbone_weights`), and what the conversion made non-finite (a half
    precision value resized past its maximum) is refused saying so. Returns
    ``summary`` with ``loaded`` (key count) and ``dropped`` updated."""
    target, whole = model.pretrained_state_dict(), model.state_dict()
    if any(k in whole and k not in target for k in converted):
        target = whole  # the model's own modules too (an adapter fine-tuned before): all
    converted, no_norm = without_final_norm(converted, target)
    dropped = list(summary.get('dropped', [])) + no_norm
    missing, unexpected, shapes = map(sorted, compare_state_dicts(converted, target))
    if missing or unexpected or shapes:
        raise CheckpointError(f'{source}: ' + _mismatch_report(
            model, summary, missing, unexpected, shapes))
    bad, total = nonfinite_tensors(converted), len(converted)
    original = strip_wrappers(dict(original)) if original is not None else None
    in_file = nonfinite_tensors(original) if original is not None else {}
    made = {k: v for k, v in bad.items()
            if original is not None and k in original and k not in in_file}
    if not (allow_nonfinite and original is not None):
        refuse_nonfinite({k: v for k, v in bad.items() if k not in made}, total, source,
                         allow_nonfinite, 'allow_nonfinite=True')
    refuse_nonfinite(made, total, source, allow_nonfinite, 'allow_nonfinite=True',
                     cause=_CONVERSION_MADE)
    narrower = {k: v.to(target[k].dtype) for k, v in converted.items()
                if k not in bad and v.is_floating_point() and target[k].is_floating_point()
                and v.dtype != target[k].dtype}
    refuse_nonfinite(nonfinite_tensors(narrower), total, source, allow_nonfinite,
                     'allow_nonfinite=True', cause=_PAST_MODEL_DTYPE)
    result = model.load_state_dict(converted, strict=False)
    own = set(model.state_dict()) - set(target)
    # Anything load_state_dict left out beyond the model's own (non-pretrained) keys
    # would be a bug in pretrained_state_dict(): fail rather than load partially.
    if set(result.missing_keys) - own or result.unexpected_keys:
        raise CheckpointError(f'{source}: internal key mismatch {result}')
    return dict(summary, dropped=dropped, loaded=len(converted))


def load_pretrained_backbone(model, checkpoint: Union[str, dict], prefix: Optional[str] = None,
                             map_location: str = 'cpu', use_ema: bool = False,
                             ckpt_format: str = 'auto', allow_nonfinite: bool = False,
                             **kwargs) -> Dict[str, object]:
    """Load a checkpoint into a ShuffleMamba backbone, strictly, and log what was used:
    :func:`read_backbone_weights`, then :func:`load_backbone_state`.

    Args:
        model (ShuffleMambaEncoder): the backbone, the adapter or the classifier.
        checkpoint (str | dict): file path or URI, or a checkpoint in memory.
        prefix (str, optional): take only keys under this prefix (e.g. 'backbone.').
        map_location (str): Defaults to 'cpu'.
        use_ema (bool): load the EMA weights instead of the raw ones. Defaults to False.
        ckpt_format (str): see :data:`CHECKPOINT_FORMATS`. Defaults to 'auto'.
        allow_nonfinite (bool): load weights holding NaN / inf. Defaults to False.

    Returns:
        dict: the conversion summary.
    """
    if kwargs:
        raise ArgumentTypeError(f'unsupported Pretrained init_cfg keys: {sorted(kwargs)}')
    w = read_weights(checkpoint, prefix, map_location, use_ema, ckpt_format, allow_nonfinite)
    return load_backbone_state(model, w.state_dict, w.entry, w.format, w.source,
                               allow_nonfinite, w.grid)


class BackboneWeights(NamedTuple):
    """What :func:`read_weights` read: the state dict to convert, its entry, its format,
    how the messages name the file, the grid the file records (or None), which weights
    they are ('ema', also for a file converted from EMA weights, or 'raw') and the
    checkpoint object read."""
    state_dict: Dict[str, torch.Tensor]
    entry: str
    format: str
    source: str
    grid: Optional[Tuple[int, int]]
    weights: str
    checkpoint: object


def read_weights(checkpoint: Union[str, dict], prefix: Optional[str] = None,
                 map_location: str = 'cpu', use_ema: bool = False,
                 ckpt_format: str = 'auto', allow_nonfinite: bool = False,
                 opt_out: str = 'allow_nonfinite=True') -> BackboneWeights:
    """:func:`read_backbone_weights` of a file or a checkpoint in memory, with the name
    the messages give it and the grid it records for the backbone at ``prefix``
    (:func:`recorded_grid`)."""
    if isinstance(checkpoint, dict):
        ckpt, source = checkpoint, source_name(checkpoint)
    else:
        ckpt, source = read_checkpoint(checkpoint, map_location), str(checkpoint)
        if not isinstance(ckpt, dict):  # (e.g. a tensor saved alone)
            select_state_dict(ckpt, filename=source)  # the error naming what it holds
    sd, entry, fmt = read_backbone_weights(ckpt, prefix, map_location, use_ema, ckpt_format,
                                           allow_nonfinite, opt_out, source=source)
    weights = 'ema' if use_ema or own_meta(ckpt).get('weights') == 'ema' else 'raw'
    return BackboneWeights(sd, entry, fmt, source, recorded_grid(ckpt, prefix), weights,
                           ckpt)


def convert_for(model, sd: Dict[str, torch.Tensor], ckpt_format: str = 'auto',
                source_grid: Optional[Tuple[int, int]] = None):
    """:func:`convert_to_backbone` to ``model``'s tokens, position grid and neck. A
    model that returns its registers' classification feature (``out_cls``) without the
    neck that reduces the file's is refused: its feature would not be the file's."""
    reduce = getattr(model, 'cls_reduce', 1)
    if getattr(model, 'out_cls', False) and getattr(model, 'tokens', None) is not None and \
            model.tokens.num_extra and not any(k.split('.')[-1] == 'cls_token' for k in sd):
        raise CheckpointError(
            f'the checkpoint has no cls / register tokens, and {type(model).__name__} reads '
            'its classification feature from them: it holds a dense backbone (segmentation '
            'and detection models drop the tokens, and so does tools/convert_checkpoint.py '
            'without --num-registers). Load an ImageNet classifier checkpoint (an official '
            'training file, or an mmpretrain / timm classifier\'s).')
    converted, summary = convert_to_backbone(
        sd, ckpt_format, model.num_registers, model.patch_resolution,
        model.interpolate_mode, with_cls_token=getattr(model, 'with_cls_token', False),
        keep_neck=reduce > 1, source_grid=source_grid)
    neck = sd.get('neck.weight')
    if getattr(model, 'out_cls', False) and model.num_registers and reduce == 1 and \
            isinstance(neck, torch.Tensor) and neck.dim() == 2:
        r = neck.shape[1] // max(neck.shape[0], 1)
        raise CheckpointError(
            f'the checkpoint reduces its registers with a classification neck (neck / '
            f'norm_neck, cls_reduce={r}) that {type(model).__name__} (cls_reduce=1) does '
            "not have, so its classification feature would not be the file's: build it "
            f'with cls_reduce={r}' + (', or without out_cls for the dense features alone'
                                      if 'out_cls' in vars(model) else '') +
            ' (the registers unreduced: a file converted by tools/convert_checkpoint.py '
            f'--num-registers {model.num_registers} without --keep-neck).')
    return converted, summary


def load_backbone_state(model, sd: Dict[str, torch.Tensor], entry: str, ckpt_format: str,
                        source: str = '<checkpoint>', allow_nonfinite: bool = False,
                        source_grid: Optional[Tuple[int, int]] = None, log: bool = True
                        ) -> Dict[str, object]:
    """Convert a state dict of :func:`read_backbone_weights` (:func:`convert_for`; the
    grid the file records, :func:`recorded_grid`, as ``source_grid``), load it
    (:func:`load_into_backbone`) and log what was used (:func:`loaded_message`; a caller
    that loads more of the file, e.g. a classifier's head, passes ``log=False`` and
    logs the message with what it loaded)."""
    odd = non_tensor_values(sd)
    if odd:
        raise CheckpointError(f'{source}: values that are not tensors: {", ".join(odd[:4])}; '
                              'a state dict maps parameter names to tensors.')
    try:
        converted, summary = convert_for(model, sd, ckpt_format, source_grid)
    except CheckpointError as e:
        raise CheckpointError(f'{source}: {e}') from None
    summary = dict(load_into_backbone(model, converted, summary, source, allow_nonfinite,
                                      sd), entry=entry)
    if log:
        print_log(loaded_message(model, summary, source), logger='current')
    return summary


def loaded_message(model, summary: Dict[str, object], source: str,
                   also_loaded: Sequence[str] = ()) -> str:
    """The log line of :func:`load_backbone_state`'s ``summary``; ``also_loaded``: keys
    the caller loaded besides (and took out of ``summary['dropped']``)."""
    own = len(model.state_dict()) - summary['loaded'] - len(also_loaded)
    note = _ENTRY_NOTES.get(summary['entry'])
    return (f"Loaded {source} (entry '{summary['entry']}'" + (f' = {note}' if note else '')
            + f", format '{summary['format']}', depth {summary['depth']}, width "
            f"{summary['embed_dims']}): all {summary['loaded']} backbone tensors"
            + (f" and {', '.join(also_loaded)}" if also_loaded else '') +
            f"; pos_embed {summary['grid']} -> {summary['target_grid']}; cls/register "
            f"tokens {summary['checkpoint_tokens']} -> {summary['kept_tokens']}; dropped "
            f"keys: {summary['dropped']}" + (
                f'; {own} tensors of {type(model).__name__} keep their initialisation'
                if own else ''))


def without_final_norm(converted, target):
    """``(converted without norm_f.*, those keys)`` for a target without a final norm
    (``final_norm=False``, the adapter); else ``(a copy of converted, [])``."""
    norm = [] if any(k.startswith('norm_f.') for k in target) else [
        k for k in converted if k.startswith('norm_f.')]
    return {k: v for k, v in converted.items() if k not in norm}, norm


__all__ = ['BackboneWeights', 'norm_mismatch', 'norm_of', 'read_backbone_weights',
           'read_weights', 'load_into_backbone', 'load_pretrained_backbone',
           'load_backbone_state', 'loaded_message', 'convert_for']
