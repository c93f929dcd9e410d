"""Loading ImageNet checkpoints (ShuffleMamba, ShuffleMamba-Reg, Vim, VideoMamba) into
:class:`ShuffleMamba`, as a pure ``state_dict -> state_dict`` conversion.

Formats (a user can force one with ``ckpt_format``):

- ``'shufflemamba'``: plain models, ``cls_token`` (1, 1, D) at the sequence front,
  ``pos_embed`` (1, N + 1, D) with the cls position first. VideoMamba image models
  use the same layout (``'videomamba'`` is an alias).
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
in an official checkpoint's ``args`` (``mambar_*`` / ``videomamba_*``: first;
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
import io
import logging
import math
import os.path as osp
import re
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


def nonfinite_tensors(sd: Dict[str, object]) -> Dict[str, str]:
    """The floating-point tensors of ``sd`` that hold NaN or inf values.

    Returns:
        dict: name -> ``'NaN'``, ``'inf'`` or ``'NaN and inf'``, in the order of ``sd``.
    """
    bad = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor) or not (v.is_floating_point() or v.is_complex()):
            continue
        if v.numel() == 0 or bool(torch.isfinite(v).all()):
            continue
        nan, inf = bool(torch.isnan(v).any()), bool(torch.isinf(v).any())
        bad[k] = 'NaN and inf' if nan and inf else ('NaN' if nan else 'inf')
    return bad


def nonfinite_message(bad: Dict[str, str], total: int, source: str = '<checkpoint>',
                      opt_out: str = 'allow_nonfinite=True') -> str:
    """The refusal of a state dict with non-finite values: how many tensors, a few
    names, what to do and how to load it anyway (``opt_out``)."""
    names = ', '.join(f'{k} ({what})' for k, what in list(bad.items())[:5])
    more = f' and {len(bad) - 5} more' if len(bad) > 5 else ''
    return (f'{source}: {len(bad)} of {total} tensors hold NaN/inf values: {names}{more}. '
            'The run that wrote this checkpoint diverged; loading it would train or '
            'evaluate garbage. Use a checkpoint saved before the divergence (or retrain '
            'with a lower learning rate / gradient clipping); '
            f'{opt_out} loads it anyway.')


def check_finite(sd: Dict[str, object], source: str = '<checkpoint>',
                 allow_nonfinite: bool = False,
                 opt_out: str = 'allow_nonfinite=True') -> Dict[str, str]:
    """Refuse a state dict with NaN / inf values (:class:`CheckpointError` naming how many
    tensors, a few of them and the fix); with ``allow_nonfinite`` log a warning instead.

    Returns:
        dict: the non-finite tensors (see :func:`nonfinite_tensors`).
    """
    bad = nonfinite_tensors(sd)
    if bad:
        total = sum(isinstance(v, torch.Tensor) for v in sd.values())
        msg = nonfinite_message(bad, total, source, opt_out)
        if not allow_nonfinite:
            raise CheckpointError(msg)
        print_log(f'{source}: loading {len(bad)} tensors with NaN/inf values as asked '
                  f'({opt_out}): {list(bad)[:5]}', logger='current', level=logging.WARNING)
    return bad


# Paths that are documentation, not files: the configs' documented placeholder
# ('path/to/...'), angle-bracket templates and the official configs' 'your_model_path'.
_PLACEHOLDER = re.compile(
    r'(^|[/\\])path[/\\]to[/\\]|<[^<>]*>|your[_-]?(model|checkpoint|ckpt)[_-]?(path|file)?'
    r'|^(none|null|todo|xxx|placeholder|changeme)$', re.IGNORECASE)


def check_checkpoint_path(checkpoint) -> str:
    """Refuse an empty or placeholder ``init_cfg.checkpoint`` with a message saying what
    to set (before anything is read); return the path as a string."""
    if checkpoint is None or not str(checkpoint).strip():
        raise CheckpointError(
            "init_cfg=dict(type='Pretrained') has no 'checkpoint': set "
            'model.backbone.init_cfg.checkpoint to an ImageNet ShuffleMamba checkpoint, '
            'or drop init_cfg to train from scratch.')
    checkpoint = str(checkpoint)
    if _PLACEHOLDER.search(checkpoint) and not osp.exists(checkpoint):
        raise CheckpointError(
            f'init_cfg.checkpoint={checkpoint!r} is the documented placeholder, not a '
            'file. Set it to your ImageNet-pretrained checkpoint (no ShuffleMamba weights '
            'were released upstream: train one with the official code, whose training '
            'checkpoints load as they are), e.g. --cfg-options '
            'model.backbone.init_cfg.checkpoint=/data/shufflemamba_b_in1k.pth')
    return checkpoint


# ----------------------------------------------------------------------------- reading
def read_checkpoint(filename: str, map_location: str = 'cpu') -> object:
    """Read a checkpoint file (local path or any MMEngine-supported URI).

    Uses ``torch.load(weights_only=True)``; the globals MMEngine and the official
    training script write are allow-listed (see ``mmplugin_shufflemamba.compat``).
    """
    from ...compat import safe_torch_load
    filename = check_checkpoint_path(filename)
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


def is_mmengine_checkpoint(ckpt: object) -> bool:
    """Whether ``ckpt`` was written by MMEngine's runner (``meta`` / ``message_hub``
    beside ``state_dict``) or by this project's tools (``meta`` too)."""
    return isinstance(ckpt, dict) and not _is_state_dict(ckpt) and (
        isinstance(ckpt.get('meta'), dict) or 'message_hub' in ckpt)


def _own_meta(ckpt: object) -> dict:
    """``meta`` of a file written by this project's tools (empty for any other)."""
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    return meta if isinstance(meta, dict) and 'shufflemamba_format' in meta else {}


def _ema_hook_raw_weights(ema_state: dict) -> Dict[str, torch.Tensor]:
    """The raw weights MMEngine's ``EMAHook`` leaves in ``ema_state_dict``.

    Before saving, EMAHook swaps the values of ``state_dict`` (now: the EMA weights)
    and of its averaged model's state dict (``module.<name>`` keys, now: the raw
    weights; plus the ``steps`` counter).
    """
    return {k[len('module.'):]: v for k, v in ema_state.items()
            if k.startswith('module.') and isinstance(v, torch.Tensor)}


def select_state_dict(ckpt: object, use_ema: bool = False,
                      filename: str = '<checkpoint>') -> Tuple[Dict[str, torch.Tensor], str]:
    """Pick the weights to load from a checkpoint object.

    Raw and EMA weights per writer:

    ======================================  =====================  ===================
    checkpoint                              raw (default)          EMA (use_ema=True)
    ======================================  =====================  ===================
    official / DeiT-style training script   ``model``              ``model_ema``
    MMEngine with ``EMAHook``               ``ema_state_dict`` *   ``state_dict``
    MMEngine without ``EMAHook``            ``state_dict``         (error)
    timm training script                    ``state_dict``         ``state_dict_ema``
    ``tools/convert_checkpoint.py``         ``state_dict`` as converted (its meta says
                                            which weights it holds)
    bare state dict                         the dict               (error)
    ======================================  =====================  ===================

    \\* EMAHook swaps the two before saving: ``ema_state_dict`` holds the raw weights
    (``module.``-prefixed), ``state_dict`` the averaged ones.

    Args:
        ckpt: what :func:`read_checkpoint` returned.
        use_ema (bool): take the EMA weights instead of the raw ones (an error when the
            checkpoint has none). Defaults to False, as the official downstream code.
            None is read as False.

    Returns:
        tuple: (state dict, name of the entry used).
    """
    use_ema = bool(use_ema)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{filename} holds a {type(ckpt).__name__}, not a '
                              'checkpoint dict or state dict.')

    def no_ema(why):
        return CheckpointError(f'use_ema=True but {filename} has no EMA weights ({why}); '
                               'load the raw weights (use_ema=False, the default).')

    if _is_state_dict(ckpt):
        if use_ema:
            raise no_ema('it is a bare state dict')
        return dict(ckpt), '<state dict>'
    own = _own_meta(ckpt)
    if own and _is_state_dict(ckpt.get('state_dict')):
        if use_ema and own.get('weights') != 'ema':
            raise no_ema(f"converted from the raw weights, entry {own.get('entry')!r}")
        return dict(ckpt['state_dict']), 'state_dict'
    if 'model' in ckpt or 'model_ema' in ckpt:  # official (DeiT-style) training script
        key = 'model_ema' if use_ema else 'model'
        if _is_state_dict(ckpt.get(key)):
            return dict(ckpt[key]), key
        if use_ema:
            raise no_ema("'model_ema' is None: trained without --model-ema")
    if is_mmengine_checkpoint(ckpt) and _is_state_dict(ckpt.get('state_dict')):
        ema_state = ckpt.get('ema_state_dict')
        if isinstance(ema_state, dict) and _ema_hook_raw_weights(ema_state):
            if use_ema:
                return dict(ckpt['state_dict']), 'state_dict'
            return _ema_hook_raw_weights(ema_state), 'ema_state_dict'
        if use_ema:
            raise no_ema('an MMEngine checkpoint saved without EMAHook')
        return dict(ckpt['state_dict']), 'state_dict'
    if use_ema:
        for key in ('state_dict_ema', 'model_ema'):
            if _is_state_dict(ckpt.get(key)):
                return dict(ckpt[key]), key
        raise no_ema(f'entries: {sorted(ckpt)[:20]}')
    for key in ('model', 'state_dict', 'module'):
        if _is_state_dict(ckpt.get(key)):
            return dict(ckpt[key]), key
    raise CheckpointError(
        f'{filename} has no model weights: expected a state dict or one of the entries '
        f"'model', 'model_ema', 'state_dict'; found {sorted(ckpt)[:20]}.")


_ENTRY_NOTES = {
    'model': 'raw weights',
    'model_ema': 'EMA weights',
    'ema_state_dict': "raw weights: MMEngine's EMAHook keeps them there",
    'state_dict_ema': 'EMA weights',
}


def _model_name(ckpt: object) -> str:
    args = ckpt.get('args') if isinstance(ckpt, dict) else None
    name = args.get('model') if isinstance(args, dict) else getattr(args, 'model', None)
    return str(name or '')


_CFG_SHUFFLEMAMBA = re.compile(r"type\s*=\s*['\"]ShuffleMamba['\"]")
_CFG_CLS_FIRST = re.compile(r'with_cls_token\s*=\s*True')


def format_evidence(ckpt: object) -> Tuple[Optional[str], str]:
    """What a checkpoint object says about its own layout.

    Returns:
        tuple: (format or None, the evidence in words).
    """
    own = _own_meta(ckpt)
    if own.get('shufflemamba_format') in CHECKPOINT_FORMATS[1:]:
        return own['shufflemamba_format'], "meta['shufflemamba_format']"
    name = _model_name(ckpt)
    low = name.lower()
    if 'midclstok' in low or 'middle_cls' in low:
        return 'vim', f'args.model={name!r} (Vim, middle cls token)'
    if low.startswith(('mambar', 'videomamba', 'shufflemamba', 'shuffle_mamba')):
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
    if hint == 'videomamba':
        hint = 'shufflemamba'
    if 'pos_embed_cls' in sd:
        return 'mmplugin' if hint == 'mmplugin' else 'reg'
    cls = sd.get('cls_token')
    if cls is None:
        return 'mmplugin'
    if cls.dim() == 3 and cls.shape[1] == 1:
        if hint in ('shufflemamba', 'vim'):
            return hint
        raise CheckpointError(
            f'cannot tell where the cls token sits: the checkpoint has one cls token '
            f'{tuple(cls.shape)} and a pos_embed with its position, a layout that '
            'ShuffleMamba / VideoMamba (cls first) and Vim (cls in the middle) share, '
            'and nothing in the file says which it is (official checkpoints name their '
            "model in 'args'; this project's converted files carry "
            "meta['shufflemamba_format']). Pass ckpt_format='shufflemamba' (cls first) "
            "or ckpt_format='vim' (middle), e.g. init_cfg=dict(type='Pretrained', "
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
    if fmt == 'videomamba':
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
    summary = dict(
        format=fmt, **{k: v for k, v in describe_state_dict(sd).items()
                       if k not in ('registers', 'pos_tokens')},
        checkpoint_tokens=ckpt_regs, kept_tokens=num_registers + int(with_cls_token),
        grid=src_grid, target_grid=dst_grid, dropped=dropped)
    return out, summary


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
        model (ShuffleMamba): the backbone (or a subclass such as the adapter).
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


def load_backbone_state(model, sd: Dict[str, torch.Tensor], entry: str, ckpt_format: str,
                        source: str = '<checkpoint>',
                        allow_nonfinite: bool = False) -> Dict[str, object]:
    """Convert a state dict read by :func:`read_backbone_weights` to the backbone's keys
    (:func:`convert_to_backbone`), load it (:func:`load_into_backbone`) and log what was
    used; the second half of :func:`load_pretrained_backbone`."""
    logger = MMLogger.get_current_instance()
    try:
        converted, summary = convert_to_backbone(
            sd, ckpt_format, model.num_registers, model.patch_resolution,
            model.interpolate_mode, with_cls_token=getattr(model, 'with_cls_token', False),
            keep_neck=getattr(model, 'cls_reduce', 1) > 1)
    except CheckpointError as e:
        raise CheckpointError(f'{source}: {e}') from None
    summary = load_into_backbone(model, converted, summary, source, allow_nonfinite)
    own = len(model.state_dict()) - summary['loaded']
    note = _ENTRY_NOTES.get(entry)
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
