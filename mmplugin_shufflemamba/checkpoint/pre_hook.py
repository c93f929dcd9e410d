"""Loading through ``load_state_dict``: the backbones' pre-hook reads a checkpoint of
the family in a published layout, or a whole training checkpoint, as
:func:`~.loading.load_pretrained_backbone` does; :func:`read_model_layout` does the same
for a whole model's state dict, for MMEngine's runner (docs/loading.md, "Through
MMEngine and load_state_dict")."""
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch
from mmengine.logging import print_log

from .files import CHECKPOINT_ENTRIES, CheckpointError, select_state_dict
from .layout import CLASSIFIER_PREFIXES, detect_format, norm_type
from .loading import convert_for, norm_mismatch, norm_of, without_final_norm
from .saved_config import format_evidence, recorded_grid

_PUBLISHED_ONLY = ('cls_token', 'pos_embed_cls', 'norm_f.') + CLASSIFIER_PREFIXES


def _is_published_layout(sub: Dict[str, torch.Tensor], own: Dict[str, torch.Tensor],
                         hint: Optional[str] = None) -> bool:
    """Whether ``sub`` is a checkpoint of this patch embedding in a published layout:
    the file says its tokens or mixer read otherwise than the module's own shapes would
    (``hint`` 'vim': the cls token in the middle; 'videomamba': summed directions), or it
    has tokens, a classifier, a final norm or a position grid the module ``own`` does not
    have."""
    pe = sub.get('patch_embed.proj.weight')
    if pe is None or 'pos_embed' not in sub or \
            pe.shape != own['patch_embed.proj.weight'].shape:
        return False  # another model: the loader's own key report says so
    if hint in ('vim', 'videomamba'):
        return True
    if set(sub) <= set(own) and all(
            getattr(v, 'shape', None) == getattr(own[k], 'shape', None)
            for k, v in sub.items()):
        return False  # the module's own layout (a non-tensor extra state included)
    return sub['pos_embed'].shape != own['pos_embed'].shape or any(
        k.startswith(_PUBLISHED_ONLY) and k not in own for k in sub)


def published_layout_pre_hook(module, state_dict, prefix, *args) -> None:
    """``load_state_dict`` pre-hook of the backbones: an ImageNet checkpoint of the
    family in a published layout (or a whole training checkpoint: its raw weights) is
    converted to the module's keys (:func:`convert_to_backbone`); the module's own layout
    passes untouched; strictness stays the caller's, but a file of the other norm type
    is refused either way. A one-token file whose cls position nothing tells is a
    :class:`CheckpointError` asking for the format. See docs/loading.md, "Through
    MMEngine and load_state_dict"."""
    read_layout(module, state_dict, prefix)


def read_layout(module, state_dict, prefix: str, grid: Optional[Tuple[int, int]] = None,
                quiet: bool = False, hint: Optional[str] = None) -> None:
    """:func:`published_layout_pre_hook`, in place on ``state_dict``'s keys under
    ``prefix``, whose position embedding the file records on ``grid`` and whose format
    the file says is ``hint`` (:func:`~.saved_config.format_hint`; a whole checkpoint says
    both itself)."""
    keys = [k for k in state_dict if k.startswith(prefix)]
    sub = {k[len(prefix):]: state_dict[k] for k in keys}
    own = module.state_dict()
    whole = not prefix and any(k in sub and not isinstance(sub[k], torch.Tensor)
                               for k in CHECKPOINT_ENTRIES)
    if whole:  # a whole training checkpoint passed as it is: its raw weights
        hint, grid = format_evidence(sub)[0], recorded_grid(sub)
        try:
            sub, _ = select_state_dict(sub, filename='the checkpoint')
        except CheckpointError as e:
            raise CheckpointError(f'loading into {type(module).__name__}: {e}') from None
    pe = sub.get('patch_embed.proj.weight')
    norm = norm_mismatch(norm_of(module), norm_type(sub)) if getattr(
        pe, 'shape', None) == own['patch_embed.proj.weight'].shape else None
    if norm:  # whatever ``strict`` says: non-strict, the wrong norms would only log keys
        raise CheckpointError(f'loading into {type(module).__name__}: {norm[0]}')
    regrid = grid is not None and tuple(grid) != tuple(module.patch_resolution) and \
        'pos_embed' in sub
    if regrid or _is_published_layout(sub, own, hint):
        fmt = 'auto' if hint is None else detect_format(sub, hint)
        try:
            converted, summary = convert_for(module, sub, fmt, grid)
        except CheckpointError as e:
            raise CheckpointError(
                f'loading a published checkpoint into {type(module).__name__}: {e}' + (
                    '' if hint or 'ckpt_format' in str(e) else
                    " (with this package's loader, init_cfg=dict(type="
                    "'Pretrained', checkpoint=..., ckpt_format=...) or tools/"
                    'convert_checkpoint.py --format, the format can be given)')) from None
        sub, no_norm = without_final_norm(converted, own)
        if not quiet:
            print_log(f"{type(module).__name__}: read a '{summary['format']}' checkpoint "
                      f"(pos_embed {summary['grid']} -> {summary['target_grid']}, "
                      f"cls/register tokens {summary['checkpoint_tokens']} -> "
                      f"{summary['kept_tokens']}, dropped {list(summary['dropped']) + no_norm})",
                      logger='current')
    elif not whole:
        return
    for k in keys:
        del state_dict[k]
    state_dict.update((prefix + k, v) for k, v in sub.items())


def read_model_layout(model, sd: Dict[str, object], ckpt: object = None,
                      quiet: bool = False) -> Dict[str, object]:
    """``sd``, a whole model's state dict, as ``model``'s backbones of this family read
    it when it is loaded (:func:`published_layout_pre_hook`), each position embedding
    resized from the grid ``ckpt`` records for that backbone (:func:`recorded_grid`):
    MMEngine's runner loads a checkpoint's state dict without the rest of the file. A
    new dict; ``sd`` is not changed."""
    from ..models.backbones.encoder import ShuffleMambaEncoder
    out = OrderedDict(sd)
    hint = format_evidence(ckpt)[0] if ckpt is not None else None
    for name, module in model.named_modules():
        prefix = name + '.'
        if name and isinstance(module, ShuffleMambaEncoder) and \
                any(k.startswith(prefix) for k in out):
            read_layout(module, out, prefix, recorded_grid(ckpt, prefix), quiet, hint)
    return out


__all__ = ['published_layout_pre_hook', 'read_layout', 'read_model_layout']
