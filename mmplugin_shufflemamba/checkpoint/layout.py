"""Checkpoint layouts as pure ``state_dict -> state_dict`` conversions: the published
layouts of the family (ShuffleMamba / VideoMamba cls first, Vim cls in the middle,
Mamba-Reg registers, mmpretrain's classifier) to this backbone's keys, with the
position embedding resized and the tokens kept or dropped. See :mod:`.loading` for
the format table and the loaders that use it."""
import math
import re
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch

from ..models.layers import resize_pos_embed
from .files import CheckpointError, is_mmengine_checkpoint, model_name, own_meta

CHECKPOINT_FORMATS = ('auto', 'shufflemamba', 'videomamba', 'vim', 'reg', 'mmplugin')
CLASSIFIER_PREFIXES = ('head.', 'neck.', 'norm_neck.', 'head_dist.', 'fc_norm.')
_WRAPPER_PREFIXES = ('module.', 'backbone.', 'model.', '_orig_mod.')


_CFG_SHUFFLEMAMBA = re.compile(r"type\s*=\s*['\"]ShuffleMamba['\"]")
_CFG_CLS_FIRST = re.compile(r'with_cls_token\s*=\s*True')


def format_evidence(ckpt: object) -> Tuple[Optional[str], str]:
    """What a checkpoint object says about its own layout.

    Returns:
        tuple: (format or None, the evidence in words).
    """
    own = own_meta(ckpt)
    if own.get('shufflemamba_format') in CHECKPOINT_FORMATS[1:]:
        return own['shufflemamba_format'], "meta['shufflemamba_format']"
    name = model_name(ckpt)
    low = name.lower()
    if 'midclstok' in low or 'middle_cls' in low:
        return 'vim', f'args.model={name!r} (Vim, middle cls token)'
    if low.startswith('videomamba'):
        return 'videomamba', (f'args.model={name!r} (VideoMamba: cls first, the two '
                              'directions summed, not averaged)')
    if low.startswith(('mambar', 'shufflemamba', 'shuffle_mamba')):
        return 'shufflemamba', f'args.model={name!r} (cls token first)'
    if is_mmengine_checkpoint(ckpt):
        cfg_text = ckpt['meta'].get('cfg') if isinstance(ckpt.get('meta'), dict) else None
        if isinstance(cfg_text, str) and _CFG_CLS_FIRST.search(cfg_text) and \
                _CFG_SHUFFLEMAMBA.search(cfg_text):
            # A classifier trained here (e.g. configs/pretrain/*): with_cls_token puts
            # the cls token first, as the official plain classifiers.
            return 'shufflemamba', ("MMEngine meta: the config's ShuffleMamba backbone "
                                    'has with_cls_token=True (cls first)')
        return 'mmplugin', "MMEngine 'meta' (a model trained in this framework)"
    return None, (f'args.model={name!r} is not a known factory name' if name
                  else 'no args.model, no MMEngine meta, no shufflemamba_format marker')


def format_hint(ckpt: object) -> Optional[str]:
    """The format a checkpoint object's own contents establish, or None.

    Evidence, in order: the ``meta['shufflemamba_format']`` marker of this project's
    writers; the model name in an official checkpoint's ``args`` (``*midclstok*``:
    Vim's middle cls token; ``mambar_*`` / ``videomamba_*`` / ``shufflemamba*``: cls
    first); MMEngine's ``meta`` / ``message_hub`` (this project's layout).
    """
    return format_evidence(ckpt)[0]


def _backbone_only(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    if any(k.startswith('backbone.') for k in sd) and \
            any(not k.startswith('backbone.') for k in sd):
        return {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    return sd


def _strip_wrappers(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove DDP/EMA/compile prefixes and keep only ``backbone.*`` of a whole model,
    in any nesting (e.g. ``module.backbone.*`` beside ``module.decode_head.*`` of a
    state dict saved by hand from a DDP-wrapped segmentor)."""
    while True:
        before = sd
        sd = _backbone_only(sd)
        for p in _WRAPPER_PREFIXES:
            if sd and all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
        if sd is before:
            return sd


# ------------------------------------------------------------------- classifier layouts
#: mmpretrain's ImageClassifier(backbone=ShuffleMamba, head=LinearClsHead) stores the
#: backbone under 'backbone.' and the linear classifier under 'head.fc.'; the official
#: layout (and timm's) has the backbone keys at the top and the classifier at 'head.'.
MMPRETRAIN_HEAD = 'head.fc.'


def is_mmpretrain_classifier(sd: Dict[str, torch.Tensor]) -> bool:
    """Whether a state dict is an mmpretrain ``ImageClassifier``'s (``backbone.*`` and
    a ``head.fc.*`` linear classifier)."""
    return any(k.startswith(MMPRETRAIN_HEAD) for k in sd) and \
        any(k.startswith('backbone.') for k in sd)


def mmpretrain_to_official(sd: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """mmpretrain ``ImageClassifier`` layout -> the official (and timm) layout.

    ``backbone.<k>`` -> ``<k>`` (the backbone's keys already are the official ones:
    ``cls_token``, ``pos_embed``, ``pos_embed_cls``, ``layers.*``, ``norm_f.*``, and
    Mamba-Reg's ``neck.*`` / ``norm_neck.*``), ``head.fc.<k>`` -> ``head.<k>``.
    Anything else (parameters in the classifier's own ``neck`` slot, other head types)
    has no official counterpart: a :class:`CheckpointError` that names the keys.
    """
    out = OrderedDict()
    unknown = []
    for k, v in sd.items():
        if k.startswith('backbone.'):
            out[k[len('backbone.'):]] = v
        elif k.startswith(MMPRETRAIN_HEAD):
            out['head.' + k[len(MMPRETRAIN_HEAD):]] = v
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(
            f'keys with no official counterpart in an mmpretrain classifier: '
            f'{unknown[:8]}: the official layout has the backbone and a linear head '
            "('head.fc' of LinearClsHead) only; the classifier's own neck must hold no "
            'parameters (the Reg models\' neck lives in the backbone).')
    return out


def official_to_mmpretrain(sd: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """The inverse of :func:`mmpretrain_to_official`: an official / timm state dict
    as an mmpretrain ``ImageClassifier`` with a ``LinearClsHead`` loads it."""
    out = OrderedDict()
    for k, v in sd.items():
        if k.startswith('head.'):
            out[MMPRETRAIN_HEAD + k[len('head.'):]] = v
        else:
            out['backbone.' + k] = v
    return out


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


def detect_format(sd: Dict[str, torch.Tensor], hint: Optional[str] = None) -> str:
    """The checkpoint format from keys and shapes, with ``hint`` (:func:`format_hint`)
    deciding what shapes cannot.

    A (1, 1, D) ``cls_token`` without ``pos_embed_cls`` is ShuffleMamba's / VideoMamba's
    (cls first) or Vim's (cls in the middle) layout, identical in keys and shapes:
    without a hint that says which, this is a :class:`CheckpointError`.
    """
    sd = _strip_wrappers(dict(sd))
    if 'pos_embed_cls' in sd:
        return 'mmplugin' if hint == 'mmplugin' else 'reg'
    cls = sd.get('cls_token')
    if cls is None:
        return 'mmplugin'
    if cls.dim() == 3 and cls.shape[1] == 1:
        if hint in ('shufflemamba', 'videomamba', 'vim'):
            return hint
        raise CheckpointError(
            f'cannot tell where the cls token sits: the checkpoint has one cls token '
            f'{tuple(cls.shape)} and a pos_embed with its position, a layout that '
            'ShuffleMamba / VideoMamba (cls first) and Vim (cls in the middle) share, '
            'and nothing in the file says which it is (official checkpoints name their '
            "model in 'args'; this project's converted files carry "
            "meta['shufflemamba_format']). Pass ckpt_format='shufflemamba' (cls first), "
            "ckpt_format='videomamba' (VideoMamba's image models: cls first, the two "
            "directions summed) or ckpt_format='vim' (middle), e.g. "
            "init_cfg=dict(type='Pretrained', "
            "checkpoint=..., ckpt_format='shufflemamba'), or convert the file once with "
            'tools/convert_checkpoint.py --format shufflemamba.')
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
                        logger=None,
                        with_cls_token: bool = False,
                        keep_neck: bool = False
                        ) -> Tuple[Dict[str, torch.Tensor], Dict[str, object]]:
    """Map a checkpoint state dict to :class:`ShuffleMamba`'s key layout.

    Args:
        sd (dict): state dict (wrapper prefixes are removed here).
        ckpt_format (str): one of :data:`CHECKPOINT_FORMATS`. Defaults to 'auto':
            decided from keys and shapes alone (:func:`detect_format` without a hint),
            so a (1, 1, D) cls token without ``pos_embed_cls`` is an error here;
            :func:`read_backbone_weights` settles the format from the whole file.
        num_registers (int): registers of the target backbone. 0 drops the
            checkpoint's cls/register tokens (what the paper does for dense tasks);
            R > 0 keeps R registers (must match the checkpoint, positions kept).
        patch_resolution (tuple, optional): target grid of ``pos_embed``; None keeps
            the checkpoint's grid.
        interpolate_mode (str): Defaults to 'bicubic'.
        with_cls_token (bool): the target keeps a front cls token
            (``ShuffleMamba(with_cls_token=True)``): the cls token of a cls-first
            checkpoint is kept with its position. Defaults to False.
        keep_neck (bool): the target has Mamba-Reg's classification ``neck`` /
            ``norm_neck`` (``cls_reduce > 1``): keep them. Defaults to False.

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
    # VideoMamba's mixer sums its two directions (out_proj(y_f + y_b)); this one, like
    # ShuffleMamba's, Vim's and Mamba-Reg's, averages them: out_proj's weight doubles.
    summed = fmt == 'videomamba'
    if summed:
        fmt = 'shufflemamba'
    if fmt == 'mmplugin' and 'pos_embed_cls' not in sd and \
            getattr(sd.get('cls_token'), 'shape', (0, 0))[1:2] == (1,):
        fmt = 'shufflemamba'  # this project's one-token layout: with_cls_token (first)
    out = OrderedDict()
    kept = ('neck.', 'norm_neck.') if keep_neck else ()
    dropped = [k for k in sd if k.startswith(CLASSIFIER_PREFIXES) and
               not k.startswith(kept)]
    for k, v in sd.items():
        if k in ('cls_token', 'pos_embed', 'pos_embed_cls'):
            continue
        if not k.startswith(CLASSIFIER_PREFIXES) or (kept and k.startswith(kept)):
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
        if with_cls_token and fmt == 'vim':
            raise CheckpointError(
                "a 'vim' checkpoint's cls token sits in the middle of the sequence; "
                'with_cls_token=True puts it first. Use with_cls_token=False with '
                'num_registers=1 to keep it in the middle, or 0 to drop it.')
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
    if with_cls_token and fmt != 'shufflemamba':
        raise CheckpointError(
            'the backbone has with_cls_token=True (one cls token in front) but the '
            + (f'checkpoint has {ckpt_regs} register tokens (Mamba-Reg): build the '
               f'backbone with num_registers={ckpt_regs} instead' if ckpt_regs else
               'checkpoint has no cls token: build the backbone with '
               'with_cls_token=False') + '.')
    src_grid = _square_grid(patch_pos.shape[1], 'pos_embed')
    dst_grid = tuple(patch_resolution) if patch_resolution is not None else src_grid
    out['pos_embed'] = resize_pos_embed(patch_pos, src_grid, dst_grid, interpolate_mode)
    if with_cls_token:
        out['pos_embed'] = torch.cat([reg_pos, out['pos_embed']], dim=1)
        out['cls_token'] = reg_tokens
    if num_registers > 0:
        out['cls_token'] = reg_tokens
        out['pos_embed_cls'] = reg_pos
    if summed:
        for k in [k for k in out if k.endswith('mixer.out_proj.weight')]:
            out[k] = out[k] * 2
    summary = dict(
        format='videomamba' if summed else fmt,
        **{k: v for k, v in describe_state_dict(sd).items()
           if k not in ('registers', 'pos_tokens')},
        checkpoint_tokens=ckpt_regs, kept_tokens=num_registers + int(with_cls_token),
        grid=src_grid, target_grid=dst_grid, dropped=dropped)
    return out, summary
