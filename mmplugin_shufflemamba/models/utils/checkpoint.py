"""Loading ImageNet checkpoints (ShuffleMamba, ShuffleMamba-Reg, Vim, VideoMamba) into
:class:`ShuffleMamba`, as a pure ``state_dict -> state_dict`` conversion.

Formats (``detect_format`` decides from keys and shapes; a user can force one):

- ``'shufflemamba'``: plain models, ``cls_token`` (1, 1, D) at the sequence front,
  ``pos_embed`` (1, N + 1, D) with the cls position first. VideoMamba image models
  use the same layout (``'videomamba'`` is an alias).
- ``'vim'``: as above but the cls token sits in the middle of the sequence (position
  ``N // 2``), and so does its position embedding.
- ``'reg'``: register models, ``cls_token`` (1, R, D) spread evenly through the
  patches, ``pos_embed_cls`` (1, R, D), ``pos_embed`` (1, N, D).
- ``'mmplugin'``: this project's layout (what ``tools/convert_checkpoint.py``
  writes and what ``ShuffleMamba.state_dict()`` holds).

Nothing is loaded partially: a missing, unexpected or mis-shaped backbone key is a
:class:`CheckpointError` that lists the keys and compares checkpoint and model.
"""
import io
import math
import os.path as osp
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch
from mmengine.logging import MMLogger, print_log

from ..layers import resize_pos_embed

CHECKPOINT_FORMATS = ('auto', 'shufflemamba', 'videomamba', 'vim', 'reg', 'mmplugin')
CLASSIFIER_PREFIXES = ('head.', 'neck.', 'norm_neck.', 'head_dist.', 'fc_norm.')
_WRAPPER_PREFIXES = ('module.', 'backbone.', 'model.', '_orig_mod.')

class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded as asked (the message says why and how)."""


# ----------------------------------------------------------------------------- reading
def read_checkpoint(filename: str, map_location: str = 'cpu') -> object:
    """Read a checkpoint file (local path or any MMEngine-supported URI).

    Uses ``torch.load(weights_only=True)``; the globals MMEngine and the official
    training script write are allow-listed (see ``mmplugin_shufflemamba.compat``).
    """
    from ...compat import safe_torch_load
    filename = str(filename)
    is_local = '://' not in filename
    if is_local and not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    try:
        if is_local:
            return safe_torch_load(filename, map_location)
        from mmengine.fileio import get
        return safe_torch_load(io.BytesIO(get(filename)), map_location)
    except FileNotFoundError:
        raise
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if 'Unsupported global' in str(e) or 'weights_only' in str(e):
            raise CheckpointError(
                f'{filename}: refused by the safe loader (torch.load weights_only=True): '
                f'{msg}. If you trust this file, load it with torch.load(..., '
                "weights_only=False), keep only the 'model' / 'model_ema' state dicts "
                'and save those.') from e
        raise CheckpointError(
            f'{filename} is not a readable PyTorch checkpoint (truncated, corrupted or '
            f'not a checkpoint at all): {type(e).__name__}: {msg}') from e


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(v, torch.Tensor) for v in obj.values())


def select_state_dict(ckpt: object, use_ema: Optional[bool] = None,
                      filename: str = '<checkpoint>') -> Tuple[Dict[str, torch.Tensor], str]:
    """Pick the weights to load from a checkpoint object.

    Args:
        ckpt: what :func:`read_checkpoint` returned.
        use_ema (bool, optional): None (default) takes EMA weights when present,
            True requires them, False takes the raw weights.

    Returns:
        tuple: (state dict, name of the entry used).
    """
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{filename} holds a {type(ckpt).__name__}, not a '
                              'checkpoint dict or state dict.')
    if _is_state_dict(ckpt):
        if use_ema:
            raise CheckpointError(f'use_ema=True but {filename} is a bare state dict '
                                  'without EMA weights; use use_ema=False.')
        return dict(ckpt), '<state dict>'
    ema_keys = [k for k in ('model_ema', 'state_dict_ema', 'ema_state_dict')
                if _is_state_dict(ckpt.get(k))]
    raw_keys = [k for k in ('model', 'state_dict', 'module') if _is_state_dict(ckpt.get(k))]
    if use_ema is None or use_ema:
        if ema_keys:
            return dict(ckpt[ema_keys[0]]), ema_keys[0]
        if use_ema:
            raise CheckpointError(
                f'use_ema=True but {filename} has no EMA weights (entries: '
                f'{sorted(ckpt)}; model_ema is None when trained without EMA).')
    if raw_keys:
        return dict(ckpt[raw_keys[0]]), raw_keys[0]
    raise CheckpointError(
        f'{filename} has no model weights: expected a state dict or one of the entries '
        f"'model', 'model_ema', 'state_dict'; found {sorted(ckpt)[:20]}.")


def format_hint(ckpt: object) -> Optional[str]:
    """A format implied by the training arguments stored in an official checkpoint.

    Vim's checkpoints keep their model name (e.g. ``..._with_midclstok_div2``) in
    ``args``; that name is the only trace of the middle cls token.
    """
    args = ckpt.get('args') if isinstance(ckpt, dict) else None
    name = str(getattr(args, 'model', '') or '').lower()
    if 'midclstok' in name or 'middle_cls' in name:
        return 'vim'
    return None


def _strip_wrappers(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove DDP/EMA/compile prefixes; keep only ``backbone.*`` of a whole detector."""
    if any(k.startswith('backbone.') for k in sd) and \
            any(not k.startswith('backbone.') for k in sd):
        sd = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    changed = True
    while changed:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if sd and all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


# ----------------------------------------------------------------------------- formats
def describe_state_dict(sd: Dict[str, torch.Tensor]) -> Dict[str, object]:
    """Depth, width, registers, grid and norm type of a (stripped) state dict."""
    layer_ids = {int(k.split('.')[1]) for k in sd if k.startswith('layers.')
                 and k.split('.')[1].isdigit()}
    pe = sd.get('patch_embed.proj.weight')
    info = dict(
        depth=(max(layer_ids) + 1) if layer_ids else 0,
        embed_dims=int(pe.shape[0]) if pe is not None else None,
        patch_size=int(pe.shape[-1]) if pe is not None else None,
        in_channels=int(pe.shape[1]) if pe is not None else None,
        norm='RMSNorm' if ('layers.0.norm.weight' in sd and 'layers.0.norm.bias' not in sd)
        else 'LN',
        registers=0, pos_tokens=None)
    cls = sd.get('cls_token')
    if cls is not None:
        info['registers'] = int(cls.shape[1])
    if 'pos_embed' in sd:
        info['pos_tokens'] = int(sd['pos_embed'].shape[1])
    return info


def detect_format(sd: Dict[str, torch.Tensor]) -> str:
    """Guess the checkpoint format from keys and shapes (see module docstring)."""
    if 'pos_embed_cls' in sd:
        return 'reg'
    cls = sd.get('cls_token')
    if cls is None:
        return 'mmplugin'
    if cls.dim() == 3 and cls.shape[1] == 1:
        # Vim and ShuffleMamba share the key layout. Vim checkpoints keep the
        # middle-cls flag in their training args when present (see read); by default
        # the ShuffleMamba / VideoMamba layout (cls first) is assumed.
        return 'shufflemamba'
    raise CheckpointError(
        f'cannot tell the checkpoint format: cls_token has shape {tuple(cls.shape)} but '
        "there is no 'pos_embed_cls'. Pass ckpt_format= one of "
        f'{CHECKPOINT_FORMATS[1:]}.')


def _square_grid(num: int, what: str) -> Tuple[int, int]:
    side = int(round(math.sqrt(num)))
    if side * side != num:
        raise CheckpointError(f'{what} has {num} patch positions, not a square grid; '
                              'cannot infer its grid size.')
    return side, side


def convert_to_backbone(sd: Dict[str, torch.Tensor],
                        ckpt_format: str = 'auto',
                        num_registers: int = 0,
                        patch_resolution: Optional[Tuple[int, int]] = None,
                        interpolate_mode: str = 'bicubic',
                        logger=None) -> Tuple[Dict[str, torch.Tensor], Dict[str, object]]:
    """Map a checkpoint state dict to :class:`ShuffleMamba`'s key layout.

    Args:
        sd (dict): state dict (wrapper prefixes are removed here).
        ckpt_format (str): one of :data:`CHECKPOINT_FORMATS`. Defaults to 'auto'.
        num_registers (int): registers of the target backbone. 0 drops the
            checkpoint's cls/register tokens (what the paper does for dense tasks);
            R > 0 keeps R registers (must match the checkpoint, positions kept).
        patch_resolution (tuple, optional): target grid of ``pos_embed``; None keeps
            the checkpoint's grid.
        interpolate_mode (str): Defaults to 'bicubic'.

    Returns:
        tuple: (converted state dict, summary dict).
    """
    if ckpt_format not in CHECKPOINT_FORMATS:
        raise ValueError(f'ckpt_format must be one of {CHECKPOINT_FORMATS}, got '
                         f'{ckpt_format!r}')
    sd = _strip_wrappers(dict(sd))
    if not any(k.startswith('layers.') for k in sd) and 'patch_embed.proj.weight' not in sd:
        raise CheckpointError(
            'the state dict has none of the expected ShuffleMamba / Vim keys '
            "('patch_embed.proj.weight', 'layers.N.mixer.*'); first keys: "
            f'{sorted(sd)[:8]}')
    fmt = detect_format(sd) if ckpt_format == 'auto' else ckpt_format
    if fmt == 'videomamba':
        fmt = 'shufflemamba'
    out = OrderedDict()
    dropped = [k for k in sd if k.startswith(CLASSIFIER_PREFIXES)]
    for k, v in sd.items():
        if not k.startswith(CLASSIFIER_PREFIXES) and k not in (
                'cls_token', 'pos_embed', 'pos_embed_cls'):
            out[k] = v
    pos = sd.get('pos_embed')
    if pos is None:
        raise CheckpointError("the checkpoint has no 'pos_embed'.")
    ckpt_regs = 0
    reg_tokens = reg_pos = None
    if fmt in ('shufflemamba', 'vim'):
        if 'cls_token' not in sd:
            raise CheckpointError(f"format '{fmt}' needs a cls_token, the checkpoint has "
                                  'none (is it in this project\'s layout? use '
                                  "ckpt_format='mmplugin').")
        n = pos.shape[1] - 1
        cls_at = 0 if fmt == 'shufflemamba' else n // 2
        patch_pos = torch.cat([pos[:, :cls_at], pos[:, cls_at + 1:]], dim=1)
        reg_tokens, reg_pos = sd['cls_token'], pos[:, cls_at:cls_at + 1]
        ckpt_regs = 1
        if num_registers not in (0, 1) or (num_registers == 1 and fmt != 'vim'):
            raise CheckpointError(
                f"a '{fmt}' checkpoint has one cls token "
                f"{'at the sequence front' if fmt == 'shufflemamba' else 'in the middle'}"
                f'; the backbone asks for num_registers={num_registers}. Use '
                'num_registers=0 to drop it' +
                (" (or 1 to keep Vim's middle token)." if fmt == 'vim' else '.'))
    elif fmt == 'reg':
        if 'cls_token' not in sd or 'pos_embed_cls' not in sd:
            raise CheckpointError("format 'reg' needs 'cls_token' and 'pos_embed_cls'.")
        patch_pos = pos
        reg_tokens, reg_pos = sd['cls_token'], sd['pos_embed_cls']
        ckpt_regs = int(reg_tokens.shape[1])
        if num_registers not in (0, ckpt_regs):
            raise CheckpointError(
                f'the checkpoint has {ckpt_regs} register tokens but the backbone has '
                f'num_registers={num_registers}: use num_registers={ckpt_regs} to keep '
                'them or 0 to drop them.')
    else:  # mmplugin
        patch_pos = pos
        if 'cls_token' in sd:
            reg_tokens, reg_pos = sd['cls_token'], sd.get('pos_embed_cls')
            ckpt_regs = int(reg_tokens.shape[1])
        if num_registers not in (0, ckpt_regs):
            raise CheckpointError(
                f'the checkpoint has {ckpt_regs} register tokens but the backbone has '
                f'num_registers={num_registers}.')
    src_grid = _square_grid(patch_pos.shape[1], 'pos_embed')
    dst_grid = tuple(patch_resolution) if patch_resolution is not None else src_grid
    out['pos_embed'] = resize_pos_embed(patch_pos, src_grid, dst_grid, interpolate_mode)
    if num_registers > 0:
        out['cls_token'] = reg_tokens
        out['pos_embed_cls'] = reg_pos
    summary = dict(
        format=fmt, **{k: v for k, v in describe_state_dict(sd).items()
                       if k not in ('registers', 'pos_tokens')},
        checkpoint_tokens=ckpt_regs, kept_tokens=num_registers,
        grid=src_grid, target_grid=dst_grid, dropped=dropped)
    return out, summary


def _mismatch_report(model, summary, missing, unexpected, shapes) -> str:
    lines = [f'the checkpoint does not match the {type(model).__name__} backbone:']
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
                 "norm_cfg=dict(type='RMSNorm') for RMSNorm checkpoints (ShuffleMamba-B, "
                 "L1, every Reg model), norm_cfg=dict(type='LN') for LayerNorm ones "
                 '(ShuffleMamba-M), or the right file.')
    return '\n'.join(lines)


def read_backbone_weights(checkpoint: str,
                          prefix: Optional[str] = None,
                          map_location: str = 'cpu',
                          use_ema: Optional[bool] = None,
                          ckpt_format: str = 'auto'
                          ) -> Tuple[Dict[str, torch.Tensor], str, str]:
    """Read a checkpoint file and pick the state dict to convert.

    Args:
        checkpoint (str): file path or URI.
        prefix (str, optional): take only keys under this prefix (e.g. 'backbone.').
        map_location (str): Defaults to 'cpu'.
        use_ema (bool, optional): see :func:`select_state_dict`.
        ckpt_format (str): the requested format; 'auto' may be refined by the
            checkpoint's training arguments (:func:`format_hint`).

    Returns:
        tuple: (state dict, name of the entry used, format to convert with).
    """
    ckpt = read_checkpoint(checkpoint, map_location)
    sd, entry = select_state_dict(ckpt, use_ema, checkpoint)
    if prefix:
        p = prefix if prefix.endswith('.') else prefix + '.'
        sd = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
        if not sd:
            raise CheckpointError(f"{checkpoint} has no keys under prefix '{p}'.")
    if ckpt_format == 'auto' and 'pos_embed_cls' not in sd:
        ckpt_format = format_hint(ckpt) or 'auto'
    return sd, entry, ckpt_format


def load_into_backbone(model, converted: Dict[str, torch.Tensor],
                       summary: Dict[str, object],
                       source: str = '<checkpoint>') -> Dict[str, object]:
    """Load converted backbone weights into ``model``, strictly on its backbone part.

    The backbone part is ``model.pretrained_state_dict()``: the whole state dict of a
    plain :class:`ShuffleMamba`, the blocks and embeddings of a
    :class:`ShuffleMambaAdapter` (its adapter modules keep their own initialisation).
    Every key of that part must be provided with its shape, and nothing else may be:
    otherwise :class:`CheckpointError` with a report, and nothing is loaded. A final
    norm in the checkpoint is dropped (and logged) when the model has none
    (``final_norm=False``, the adapter).

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
                             use_ema: Optional[bool] = None,
                             ckpt_format: str = 'auto',
                             **kwargs) -> Dict[str, object]:
    """Load a checkpoint into a ShuffleMamba backbone, strictly, and log what was used.

    Reads (:func:`read_backbone_weights`), converts to the backbone's keys
    (:func:`convert_to_backbone`) and loads into the model's backbone part
    (:func:`load_into_backbone`).

    Args:
        model (ShuffleMamba): the backbone (or a subclass such as the adapter).
        checkpoint (str): file path or URI.
        prefix (str, optional): take only keys under this prefix (e.g. 'backbone.').
        use_ema (bool, optional): None = EMA weights when present.
        ckpt_format (str): see :data:`CHECKPOINT_FORMATS`.

    Returns:
        dict: the conversion summary.
    """
    if kwargs:
        raise TypeError(f'unsupported Pretrained init_cfg keys: {sorted(kwargs)}')
    logger = MMLogger.get_current_instance()
    sd, entry, ckpt_format = read_backbone_weights(checkpoint, prefix, map_location,
                                                   use_ema, ckpt_format)
    try:
        converted, summary = convert_to_backbone(
            sd, ckpt_format, model.num_registers, model.patch_resolution,
            model.interpolate_mode)
    except CheckpointError as e:
        raise CheckpointError(f'{checkpoint}: {e}') from None
    summary = load_into_backbone(model, converted, summary, checkpoint)
    own = len(model.state_dict()) - summary['loaded']
    print_log(
        f"Loaded {checkpoint} (entry '{entry}', format '{summary['format']}', depth "
        f"{summary['depth']}, width {summary['embed_dims']}): all {summary['loaded']} "
        f"backbone tensors; pos_embed {summary['grid']} -> {summary['target_grid']}; "
        f"cls/register tokens {summary['checkpoint_tokens']} -> "
        f"{summary['kept_tokens']}; dropped keys: {summary['dropped']}" +
        (f'; {own} tensors of {type(model).__name__} keep their initialisation'
         if own else ''),
        logger=logger)
    return dict(summary, entry=entry)
