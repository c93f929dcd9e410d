"""Loading ImageNet checkpoints (ShuffleMamba, ShuffleMamba-Reg, Vim, VideoMamba) into
:class:`ShuffleMamba`, as a pure ``state_dict -> state_dict`` conversion.

Formats (a user can force one with ``ckpt_format``):

- ``'shufflemamba'``: plain models, ``cls_token`` (1, 1, D) at the sequence front,
  ``pos_embed`` (1, N + 1, D) with the cls position first.
- ``'videomamba'``: VideoMamba's image models: the same keys and cls-first layout, but
  their mixer sums its two directions where the others average them, so the conversion
  doubles each ``mixer.out_proj.weight`` (exact). VideoMamba's files carry no model
  name: pass ``ckpt_format='videomamba'``.
- ``'vim'``: as above but the cls token sits in the middle of the sequence (position
  ``N // 2``), and so does its position embedding.
- ``'reg'``: register models, ``cls_token`` (1, R, D) spread evenly through the
  patches, ``pos_embed_cls`` (1, R, D), ``pos_embed`` (1, N, D).
- ``'mmplugin'``: this project's layout (what ``tools/convert_checkpoint.py``
  writes and what ``ShuffleMamba.state_dict()`` holds). Its classification layouts
  are the official ones: ``with_cls_token=True`` is ``'shufflemamba'``'s, registers
  with ``cls_reduce`` are ``'reg'``'s (``neck`` / ``norm_neck`` included).

Classifier layouts: the official and timm classifiers store the backbone keys at the
top and the linear classifier at ``head.*``; mmpretrain's ``ImageClassifier`` stores
``backbone.*`` and ``head.fc.*``; :func:`mmpretrain_to_official` (applied when a file
is read) and :func:`official_to_mmpretrain` map one to the other.

``'shufflemamba'`` and ``'vim'`` share their keys and shapes: where the cls token sits
is read from evidence in the file, never guessed (:func:`format_hint`): the model name
in an official checkpoint's ``args`` (``mambar_*``: first; ``videomamba_*``: VideoMamba;
``*midclstok*``: middle), MMEngine's ``meta`` (this project's layout) or the
``meta['shufflemamba_format']`` marker this project's writers emit. Without evidence a
(1, 1, D) cls token is a :class:`CheckpointError` that asks for ``ckpt_format``.

Weights: the raw weights by default (``checkpoint['model']``, as the official
downstream code loads them); ``use_ema=True`` selects the EMA weights (``model_ema``;
in MMEngine checkpoints written with ``EMAHook``, ``state_dict``, whose raw
counterpart EMAHook keeps in ``ema_state_dict``).

Nothing is loaded partially: a missing, unexpected or mis-shaped backbone key is a
:class:`CheckpointError` that lists the keys and compares checkpoint and model.

Nothing non-finite is loaded: weights holding NaN or inf (what a diverged run saves) are
a :class:`CheckpointError` that counts and names them (:func:`check_finite`);
``allow_nonfinite=True`` (e.g. in ``init_cfg``) loads them anyway.
"""
from typing import Dict, Optional, Tuple

import torch
from mmengine.logging import MMLogger, print_log

from .files import (ENTRY_NOTES, CheckpointError, check_finite,
                            nonfinite_tensors, read_checkpoint, select_state_dict)
from .layout import (CLASSIFIER_PREFIXES, convert_to_backbone, detect_format,
                     format_evidence, is_mmpretrain_classifier, mmpretrain_to_official)


def _model_norm(model) -> str:
    return 'RMSNorm' if isinstance(model.layers[0].norm, torch.nn.RMSNorm) else 'LN'


_NORM_FIX = {
    'RMSNorm': ("RMSNorm (norm weights only, no norm biases)",
                "norm_cfg=dict(type='RMSNorm', eps=1e-5)",
                'ShuffleMamba-B, L1 and every Reg model'),
    'LN': ('LayerNorm (norm weights and biases)', "norm_cfg=dict(type='LN', eps=1e-5)",
           'ShuffleMamba-M'),
}


def _norm_advice(model, summary) -> Optional[str]:
    """The fix when checkpoint and backbone disagree on the norm, else None."""
    ckpt_norm, model_norm = summary.get('norm'), _model_norm(model)
    if ckpt_norm not in _NORM_FIX or ckpt_norm == model_norm:
        return None
    what, fix, who = _NORM_FIX[ckpt_norm]
    return (f'norm mismatch: the checkpoint was trained with {what} but the backbone was '
            f'built with {_NORM_FIX[model_norm][0].split(" (")[0]}: set {fix} in the '
            f'backbone config (as for {who}).')


def _mismatch_report(model, summary, missing, unexpected, shapes) -> str:
    lines = [f'the checkpoint does not match the {type(model).__name__} backbone:']
    advice = _norm_advice(model, summary)
    if advice:
        lines.append('  ' + advice)
    if missing:
        lines.append(f'  missing in checkpoint ({len(missing)}): {missing[:12]}'
                     + (' ...' if len(missing) > 12 else ''))
    if unexpected:
        lines.append(f'  unexpected in checkpoint ({len(unexpected)}): {unexpected[:12]}'
                     + (' ...' if len(unexpected) > 12 else ''))
    if shapes:
        lines.append(f'  shape mismatch ({len(shapes)}): ' + ', '.join(
            f'{k}: checkpoint {tuple(a)} vs model {tuple(b)}' for k, a, b in shapes[:8]))
    norm_model = type(model.layers[0].norm).__name__
    lines.append(
        f"  checkpoint: depth {summary['depth']}, width {summary['embed_dims']}, "
        f"patch {summary['patch_size']}, norm {summary['norm']}, "
        f"{summary['checkpoint_tokens']} cls/register token(s), grid {summary['grid']}, "
        f"format '{summary['format']}'")
    lines.append(
        f'  model:      depth {model.num_layers}, width {model.embed_dims}, patch '
        f'{model.patch_size}, norm {norm_model}, {model.num_registers} register(s)')
    lines.append('  Pick the matching arch (e.g. arch=\'b\' for depth 24 / width 768), '
                 "norm_cfg=dict(type='RMSNorm', eps=1e-5) for RMSNorm checkpoints "
                 "(ShuffleMamba-B, L1, every Reg model), norm_cfg=dict(type='LN', "
                 "eps=1e-5) for LayerNorm ones (ShuffleMamba-M), or the right file.")
    return '\n'.join(lines)


def read_backbone_weights(checkpoint: str,
                          prefix: Optional[str] = None,
                          map_location: str = 'cpu',
                          use_ema: bool = False,
                          ckpt_format: str = 'auto',
                          allow_nonfinite: bool = False,
                          opt_out: str = 'allow_nonfinite=True'
                          ) -> Tuple[Dict[str, torch.Tensor], str, str]:
    """Read a checkpoint file, pick the state dict to convert and settle its format.

    Args:
        checkpoint (str): file path or URI (a placeholder path is refused first).
        prefix (str, optional): take only keys under this prefix (e.g. 'backbone.').
        map_location (str): Defaults to 'cpu'.
        use_ema (bool): the EMA weights instead of the raw ones; see
            :func:`select_state_dict`. Defaults to False.
        ckpt_format (str): the requested format; 'auto' is settled here from the
            keys and the file's evidence (:func:`format_hint`, :func:`detect_format`):
            a checkpoint whose cls-token position its contents do not establish is a
            :class:`CheckpointError` asking for ``ckpt_format``.
        allow_nonfinite (bool): read weights holding NaN / inf (a warning instead of
            the :class:`CheckpointError` of :func:`check_finite`). Defaults to False.
        opt_out (str): how the caller's user asks for ``allow_nonfinite`` (named in
            the refusal), e.g. a tool's flag.

    Returns:
        tuple: (state dict, name of the entry used, format to convert with).
    """
    ckpt = read_checkpoint(checkpoint, map_location)
    sd, entry = select_state_dict(ckpt, use_ema, checkpoint)
    if not prefix and is_mmpretrain_classifier(sd):
        sd = mmpretrain_to_official(sd)
    if prefix:
        p = prefix if prefix.endswith('.') else prefix + '.'
        sd = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
        if not sd:
            raise CheckpointError(f"{checkpoint} has no keys under prefix '{p}'.")
    check_finite(sd, f"{checkpoint} (entry '{entry}')", allow_nonfinite, opt_out)
    if ckpt_format == 'auto':
        hint, evidence = format_evidence(ckpt)
        try:
            ckpt_format = detect_format(sd, hint)
        except CheckpointError as e:
            raise CheckpointError(f'{checkpoint}: {e} [evidence: {evidence}]') from None
    return sd, entry, ckpt_format


def load_into_backbone(model, converted: Dict[str, torch.Tensor],
                       summary: Dict[str, object],
                       source: str = '<checkpoint>',
                       allow_nonfinite: bool = False) -> Dict[str, object]:
    """Load converted backbone weights into ``model``, strictly on its backbone part.

    The backbone part is ``model.pretrained_state_dict()``: the whole state dict of a
    plain :class:`ShuffleMamba`, the blocks and embeddings of a
    :class:`ShuffleMambaAdapter` (its adapter modules keep their own initialisation).
    Every key of that part must be provided with its shape, and nothing else may be:
    otherwise :class:`CheckpointError` with a report (led by the ``norm_cfg`` to set
    when the norms disagree), and nothing is loaded. A final norm in the checkpoint is
    dropped (and logged) when the model has none (``final_norm=False``, the adapter).
    Weights holding NaN / inf are refused (:func:`check_finite`) unless
    ``allow_nonfinite``.

    Returns:
        dict: ``summary`` with ``loaded`` (key count) and ``dropped`` updated.
    """
    target = model.pretrained_state_dict()
    converted = dict(converted)
    dropped = list(summary.get('dropped', []))
    if not any(k.startswith('norm_f.') for k in target):
        for k in [k for k in converted if k.startswith('norm_f.')]:
            del converted[k]
            dropped.append(k)
    missing = sorted(k for k in target if k not in converted)
    unexpected = sorted(k for k in converted if k not in target)
    shapes = [(k, converted[k].shape, target[k].shape) for k in sorted(converted)
              if k in target and converted[k].shape != target[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f'{source}: ' + _mismatch_report(
            model, summary, missing, unexpected, shapes))
    check_finite(converted, source, allow_nonfinite)
    result = model.load_state_dict(converted, strict=False)
    own = set(model.state_dict()) - set(target)
    # Anything load_state_dict left out beyond the model's own (non-pretrained) keys
    # would be a bug in pretrained_state_dict(): fail rather than load partially.
    if set(result.missing_keys) - own or result.unexpected_keys:
        raise CheckpointError(f'{source}: internal key mismatch {result}')
    return dict(summary, dropped=dropped, loaded=len(converted))


def load_pretrained_backbone(model,
                             checkpoint: str,
                             prefix: Optional[str] = None,
                             map_location: str = 'cpu',
                             use_ema: bool = False,
                             ckpt_format: str = 'auto',
                             allow_nonfinite: bool = False,
                             **kwargs) -> Dict[str, object]:
    """Load a checkpoint into a ShuffleMamba backbone, strictly, and log what was used.

    Reads (:func:`read_backbone_weights`), converts to the backbone's keys
    (:func:`convert_to_backbone`) and loads into the model's backbone part
    (:func:`load_into_backbone`).

    Args:
        model (ShuffleMambaEncoder): the backbone, the adapter or the classifier.
        checkpoint (str): file path or URI.
        prefix (str, optional): take only keys under this prefix (e.g. 'backbone.').
        use_ema (bool): load the EMA weights instead of the raw ones (the official
            downstream code loads the raw ``model`` weights). Defaults to False.
        ckpt_format (str): see :data:`CHECKPOINT_FORMATS`.
        allow_nonfinite (bool): load weights holding NaN / inf (refused by default:
            :func:`check_finite`). Defaults to False.

    Returns:
        dict: the conversion summary.
    """
    if kwargs:
        raise TypeError(f'unsupported Pretrained init_cfg keys: {sorted(kwargs)}')
    sd, entry, ckpt_format = read_backbone_weights(checkpoint, prefix, map_location,
                                                   use_ema, ckpt_format, allow_nonfinite)
    return load_backbone_state(model, sd, entry, ckpt_format, checkpoint, allow_nonfinite)


def convert_for(model, sd: Dict[str, torch.Tensor], ckpt_format: str = 'auto'):
    """:func:`convert_to_backbone` to ``model``'s layout: its extra tokens (kept or
    dropped), its position grid, and Mamba-Reg's neck when it has one."""
    return convert_to_backbone(
        sd, ckpt_format, model.num_registers, model.patch_resolution,
        model.interpolate_mode, with_cls_token=getattr(model, 'with_cls_token', False),
        keep_neck=getattr(model, 'cls_reduce', 1) > 1)


def load_backbone_state(model, sd: Dict[str, torch.Tensor], entry: str, ckpt_format: str,
                        source: str = '<checkpoint>',
                        allow_nonfinite: bool = False) -> Dict[str, object]:
    """Convert a state dict read by :func:`read_backbone_weights` to the backbone's keys
    (:func:`convert_to_backbone`), load it (:func:`load_into_backbone`) and log what was
    used; the second half of :func:`load_pretrained_backbone`."""
    logger = MMLogger.get_current_instance()
    try:
        converted, summary = convert_for(model, sd, ckpt_format)
    except CheckpointError as e:
        raise CheckpointError(f'{source}: {e}') from None
    summary = load_into_backbone(model, converted, summary, source, allow_nonfinite)
    own = len(model.state_dict()) - summary['loaded']
    note = ENTRY_NOTES.get(entry)
    print_log(
        f"Loaded {source} (entry '{entry}'" + (f' = {note}' if note else '') +
        f", format '{summary['format']}', depth "
        f"{summary['depth']}, width {summary['embed_dims']}): all {summary['loaded']} "
        f"backbone tensors; pos_embed {summary['grid']} -> {summary['target_grid']}; "
        f"cls/register tokens {summary['checkpoint_tokens']} -> "
        f"{summary['kept_tokens']}; dropped keys: {summary['dropped']}" +
        (f'; {own} tensors of {type(model).__name__} keep their initialisation'
         if own else ''),
        logger=logger)
    return dict(summary, entry=entry)


# --------------------------------------------------- load_state_dict pre-hook
_PUBLISHED_ONLY = ('cls_token', 'pos_embed_cls') + CLASSIFIER_PREFIXES


def _is_published_layout(sub: Dict[str, torch.Tensor], own: Dict[str, torch.Tensor]) -> bool:
    """Whether ``sub`` (keys under the backbone's prefix) is an ImageNet checkpoint of
    this width in a layout other than the module's own: the same patch embedding, and
    tokens, a classifier or a position grid the module does not have."""
    pe = sub.get('patch_embed.proj.weight')
    if pe is None or 'pos_embed' not in sub or \
            pe.shape != own['patch_embed.proj.weight'].shape:
        return False  # another model: the loader's own key report says so
    if set(sub) <= set(own) and all(sub[k].shape == own[k].shape for k in sub):
        return False  # the module's own layout
    return (sub['pos_embed'].shape != own['pos_embed'].shape or any(
        k.startswith(_PUBLISHED_ONLY) and k not in own for k in sub)
        or any(k.startswith('norm_f.') and k not in own for k in sub))


def published_layout_pre_hook(module, state_dict, prefix, *args) -> None:
    """``load_state_dict`` pre-hook of the backbones: an ImageNet checkpoint of the
    family in its published layout (cls token first or in the middle, registers, a
    classifier head, another position grid; a whole training checkpoint with its
    ``model`` entry at the top level) is converted to the module's keys
    (:func:`convert_to_backbone`, the raw weights of :func:`select_state_dict`), so
    that MMEngine's ``load_checkpoint(backbone, file)`` and a plain ``PretrainedInit``
    read it as it is; strictness stays the caller's. A state dict in the module's own
    layout passes untouched. A file whose cls-token position its keys cannot tell
    (ShuffleMamba's and Vim's one-token layouts) is a :class:`CheckpointError`
    asking for the format."""
    keys = [k for k in state_dict if k.startswith(prefix)]
    sub = {k[len(prefix):]: state_dict[k] for k in keys}
    whole = not prefix and bool(sub) and not all(
        isinstance(v, torch.Tensor) for v in sub.values())
    hint = None
    if whole:  # a whole training checkpoint passed as it is: its raw weights
        try:
            hint = format_evidence(sub)[0]
            sub, _ = select_state_dict(sub)
        except CheckpointError:
            return
    own = module.state_dict()
    if not _is_published_layout(sub, own):
        if whole:
            for k in keys:
                del state_dict[k]
            state_dict.update(sub)
        return
    fmt = 'auto' if hint is None else detect_format(sub, hint)
    try:
        converted, summary = convert_for(module, sub, fmt)
    except CheckpointError as e:
        raise CheckpointError(
            f'loading a published checkpoint into {type(module).__name__}: {e} (with '
            "this package's loader, init_cfg=dict(type='Pretrained', checkpoint=..., "
            "ckpt_format=...) or tools/convert_checkpoint.py --format, the format can "
            'be given)') from None
    dropped = list(summary['dropped'])
    if not any(k.startswith('norm_f.') for k in own):
        dropped += [k for k in converted if k.startswith('norm_f.')]
        converted = {k: v for k, v in converted.items() if not k.startswith('norm_f.')}
    for k in keys:
        del state_dict[k]
    for k, v in converted.items():
        state_dict[prefix + k] = v
    print_log(f"{type(module).__name__}: read a '{summary['format']}' checkpoint "
              f"(pos_embed {summary['grid']} -> {summary['target_grid']}, cls/register "
              f"tokens {summary['checkpoint_tokens']} -> {summary['kept_tokens']}, "
              f'dropped {dropped})', logger='current')


__all__ = [
    'CheckpointError', 'check_finite', 'nonfinite_tensors', 'read_backbone_weights',
    'load_into_backbone', 'load_pretrained_backbone', 'load_backbone_state',
    'published_layout_pre_hook'
]
