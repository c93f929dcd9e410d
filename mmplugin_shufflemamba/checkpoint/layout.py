"""Pure ``state_dict -> state_dict`` conversions from the family's published layouts
(ShuffleMamba / VideoMamba cls first, Vim cls in the middle, Mamba-Reg registers,
mmpretrain's classifier) to this backbone's keys, resizing the position embedding and
keeping or dropping the tokens (docs/loading.md, "Checkpoint formats")."""
import math
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch

from ..errors import ArgumentValueError
from ..models.layers import resize_pos_embed
from .files import CheckpointError

CHECKPOINT_FORMATS = ('auto', 'shufflemamba', 'videomamba', 'vim', 'reg', 'mmplugin')
#: Classification-only modules of the published checkpoints, dropped for the backbone
#: (``distill_head``: VideoMamba's self-distilled students, M and B).
CLASSIFIER_PREFIXES = ('head.', 'neck.', 'norm_neck.', 'head_dist.', 'fc_norm.',
                       'distill_head.')
_WRAPPER_PREFIXES = ('module.', 'backbone.', 'model.', '_orig_mod.')


def backbone_prefixes(sd: Dict[str, torch.Tensor]) -> List[str]:
    """The key prefixes under which ``sd`` holds a backbone of this family (a patch
    embedding and Mamba mixers: not a ViT's), e.g. ``['student.backbone.',
    'teacher.backbone.']``; '' for the top."""
    key = 'patch_embed.proj.weight'
    found = [k[:-len(key)] for k in sd if k == key or k.endswith('.' + key)]
    return sorted(p for p in found if any(
        k.startswith(p + 'layers.') and '.mixer.' in k for k in sd))


def strip_wrappers(sd: Dict[str, torch.Tensor],
                   left_out: Optional[List[str]] = None) -> Dict[str, torch.Tensor]:
    """Remove DDP/EMA/compile prefixes and keep only ``backbone.*`` of a whole model,
    in any nesting (e.g. ``module.backbone.*`` beside ``module.decode_head.*``); the
    keys of the rest of the model are appended to ``left_out`` (wrappers removed)."""
    while True:
        before = sd
        if any(k.startswith('backbone.') for k in sd) and \
                any(not k.startswith('backbone.') for k in sd):
            # another copy of this family's backbone (not e.g. a ResNet teacher's)
            copies = [p or '(the top level)' for p in backbone_prefixes(sd)
                      if not p.startswith('backbone.')]
            if copies:
                raise CheckpointError(
                    f"the state dict holds the backbone more than once: under 'backbone.' "
                    f'and under {copies}; give prefix= (init_cfg) to choose one')
            if left_out is not None:
                left_out += [k for k in sd if not k.startswith('backbone.')]
            sd = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
        for p in _WRAPPER_PREFIXES:
            if sd and all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
        if sd is before:
            return sd


#: mmpretrain's ImageClassifier stores the backbone under 'backbone.' and LinearClsHead
#: under 'head.fc.'; the official (and timm's) layout: backbone keys at the top, 'head.'.
MMPRETRAIN_HEAD = 'head.fc.'


def is_mmpretrain_classifier(sd: Dict[str, torch.Tensor]) -> bool:
    """Whether a state dict is an mmpretrain ``ImageClassifier``'s."""
    return any(k.startswith(MMPRETRAIN_HEAD) for k in sd) and \
        any(k.startswith('backbone.') for k in sd)


def mmpretrain_to_official(sd: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """mmpretrain ``ImageClassifier`` layout -> the official (and timm) layout:
    ``backbone.<k>`` -> ``<k>``, ``head.fc.<k>`` -> ``head.<k>``. Anything else (the
    classifier's own ``neck``, other heads) is a :class:`CheckpointError` naming the keys.
    """
    out, unknown = OrderedDict(), []
    for k, v in sd.items():
        if k.startswith('backbone.'):
            out[k[len('backbone.'):]] = v
        elif k.startswith(MMPRETRAIN_HEAD):
            out['head.' + k[len(MMPRETRAIN_HEAD):]] = v
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(
            f'keys with no official counterpart in an mmpretrain classifier: {unknown[:8]}: '
            "the official layout has the backbone and a linear head ('head.fc' of "
            "LinearClsHead) only; the classifier's own neck must hold no parameters (the "
            "Reg models' neck lives in the backbone).")
    return out


def official_to_mmpretrain(sd: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """The inverse of :func:`mmpretrain_to_official`: an official / timm state dict
    as an mmpretrain ``ImageClassifier`` with a ``LinearClsHead`` loads it."""
    return OrderedDict((MMPRETRAIN_HEAD + k[len('head.'):] if k.startswith('head.')
                        else 'backbone.' + k, v) for k, v in sd.items())


def norm_type(sd: Dict[str, torch.Tensor]) -> Optional[str]:
    """'RMSNorm' (block norm weights, no biases) or 'LN' for a (stripped) state dict with
    blocks, from any of its blocks; None for one without block norms (e.g. embeddings
    alone)."""
    norms = [k for k in sd if k.startswith('layers.') and k.endswith('.norm.weight')
             and k.count('.') == 3]
    if not norms:
        return None
    return 'LN' if any(k[:-len('weight')] + 'bias' in sd for k in norms) else 'RMSNorm'


def describe_state_dict(sd: Dict[str, torch.Tensor]) -> Dict[str, object]:
    """Depth, width, registers, grid and norm type of a (stripped) state dict."""
    layer_ids = {int(k.split('.')[1]) for k in sd if k.startswith('layers.')
                 and k.split('.')[1].isdigit()}
    pe, cls = sd.get('patch_embed.proj.weight'), sd.get('cls_token')
    return dict(
        depth=(max(layer_ids) + 1) if layer_ids else 0,
        embed_dims=int(pe.shape[0]) if pe is not None else None,
        patch_size=int(pe.shape[-1]) if pe is not None else None,
        in_channels=int(pe.shape[1]) if pe is not None else None,
        norm=norm_type(sd),
        registers=int(cls.shape[1]) if cls is not None else 0,
        pos_tokens=int(sd['pos_embed'].shape[1]) if 'pos_embed' in sd else None)


def detect_format(sd: Dict[str, torch.Tensor], hint: Optional[str] = None) -> str:
    """The checkpoint format from keys and shapes, with ``hint`` (:func:`format_hint`)
    deciding what shapes cannot: a (1, 1, D) ``cls_token`` without ``pos_embed_cls``
    (cls first or in the middle) is a :class:`CheckpointError` without one."""
    sd = strip_wrappers(dict(sd))
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
            f'{tuple(cls.shape)} with its position in pos_embed, as ShuffleMamba / VideoMamba (cls '
            'first) and Vim (cls in the middle) have, and nothing in the file says which '
            "(official checkpoints name their model in 'args', converted ones carry "
            "meta['shufflemamba_format']). Pass ckpt_format='shufflemamba' (cls first), "
            "ckpt_format='videomamba' (VideoMamba's image models: cls first, the two "
            "directions summed) or ckpt_format='vim' (middle), e.g. init_cfg=dict("
            "type='Pretrained', checkpoint=..., ckpt_format='shufflemamba') or, in timm, "
            "create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=...), "
            "ckpt_format='shufflemamba'), or convert the file once with "
            'tools/convert_checkpoint.py --format shufflemamba.')
    raise CheckpointError(
        f'cannot tell the checkpoint format: cls_token has shape {tuple(cls.shape)} but '
        "there is no 'pos_embed_cls'. Pass ckpt_format= one of "
        f'{CHECKPOINT_FORMATS[1:]}.')


def _source_grid(num: int, fmt: str, patch_resolution: Optional[Tuple[int, int]],
                 has_cls_token: bool = False,
                 recorded: Optional[Tuple[int, int]] = None) -> Tuple[int, int]:
    """The (H, W) patch grid of a checkpoint's ``num`` patch positions: the grid the file
    records (:func:`recorded_grid`) when the count matches, else the model's own grid for
    this project's layout (what its state_dict holds) when the count matches, else a
    square grid (the published ImageNet layouts)."""
    if recorded is not None and recorded[0] * recorded[1] == num:
        return tuple(recorded)
    if (fmt == 'mmplugin' and patch_resolution is not None
            and patch_resolution[0] * patch_resolution[1] == num):
        return tuple(patch_resolution)
    side = math.isqrt(num)
    if side * side != num:
        own = ('' if patch_resolution is None else
               f" nor the model's {patch_resolution[0]}x{patch_resolution[1]} grid")
        fix = 'Build the backbone with the img_size the checkpoint was saved with.'
        if fmt in ('shufflemamba', 'vim') and _is_square(num + 1):
            fix = (f'All {num + 1} positions of pos_embed make a square grid: it has no '
                   'position for the cls token the checkpoint holds, so cls_token and '
                   'pos_embed disagree (do they come from different files?).')
        elif fmt == 'mmplugin' and not has_cls_token and _is_square(num - 1):
            fix = (f'{num - 1} of them make a square grid and the extra one is where a cls '
                   "token sits in the published layouts, but the checkpoint has no "
                   "'cls_token': cls_token and pos_embed disagree (was it left out?).")
        raise CheckpointError(
            f'pos_embed has {num} patch positions: not a square grid{own}, so its grid '
            f'size cannot be inferred. {fix}')
    return side, side


def _is_square(num: int) -> bool:
    return num > 0 and math.isqrt(num) ** 2 == num


def convert_to_backbone(sd: Dict[str, torch.Tensor], ckpt_format: str = 'auto',
                        num_registers: int = 0,
                        patch_resolution: Optional[Tuple[int, int]] = None,
                        interpolate_mode: str = 'bicubic', logger=None,
                        with_cls_token: bool = False, keep_neck: bool = False,
                        source_grid: Optional[Tuple[int, int]] = None
                        ) -> Tuple[Dict[str, torch.Tensor], Dict[str, object]]:
    """Map a checkpoint state dict to :class:`ShuffleMamba`'s key layout.

    Args:
        sd (dict): state dict (wrapper prefixes are removed here).
        ckpt_format (str): one of :data:`CHECKPOINT_FORMATS`; 'auto': keys and shapes
            only (a one-token cls without ``pos_embed_cls`` is an error here;
            :func:`read_backbone_weights` settles it from the whole file).
        num_registers (int): 0 drops the checkpoint's tokens, R > 0 keeps its R registers.
        patch_resolution (tuple, optional): target (H, W) grid; None keeps the file's.
        interpolate_mode (str): how ``pos_embed`` is resized. Defaults to 'bicubic'.
        logger: unused (kept for callers that pass the arguments by position).
        with_cls_token (bool): keep a cls-first checkpoint's cls token, in front.
        keep_neck (bool): keep Mamba-Reg's ``neck`` / ``norm_neck`` (``cls_reduce > 1``).
        source_grid (tuple, optional): the (H, W) grid of the file's ``pos_embed`` where
            the file records it (:func:`recorded_grid`); None infers it from the count.

    Returns:
        tuple: (converted state dict, summary dict: ``dropped`` the classification
        modules left out, ``outside_backbone`` the keys of a whole model's other modules).
    """
    if ckpt_format not in CHECKPOINT_FORMATS:
        raise ArgumentValueError(f'ckpt_format must be one of {CHECKPOINT_FORMATS}, got '
                                 f'{ckpt_format!r}')
    outside: List[str] = []
    sd = strip_wrappers(dict(sd), outside)
    if not any(k.startswith('layers.') for k in sd) and 'patch_embed.proj.weight' not in sd:
        nested = backbone_prefixes(sd)
        if nested:  # e.g. a distillation or semi-supervised model's teacher and student
            raise CheckpointError(
                f'the state dict holds the backbone under {nested}, not at the top: give '
                f"prefix= (init_cfg) to choose, e.g. prefix='{nested[0]}'")
        raise CheckpointError(
            'the state dict has none of the expected ShuffleMamba / Vim keys '
            "('patch_embed.proj.weight', 'layers.N.mixer.*'); first keys: "
            f'{sorted(sd)[:8]}. It is not a checkpoint of this model family (another '
            'backbone, e.g. a ResNet detector): use a ShuffleMamba / Mamba-Reg / Vim / '
            'VideoMamba ImageNet checkpoint (docs/model_zoo.md#weights) or one that this '
            'backbone saved.')
    fmt = detect_format(sd) if ckpt_format == 'auto' else ckpt_format
    # VideoMamba's mixer sums its two directions (out_proj(y_f + y_b)); this one, like
    # ShuffleMamba's, Vim's and Mamba-Reg's, averages them: out_proj's weight doubles.
    summed = fmt == 'videomamba'
    if summed or (fmt == 'mmplugin' and 'pos_embed_cls' not in sd and
                  getattr(sd.get('cls_token'), 'shape', (0, 0))[1:2] == (1,)):
        fmt = 'shufflemamba'  # (this project's one-token layout: with_cls_token, first)
    kept = ('neck.', 'norm_neck.') if keep_neck else ()
    dropped = [k for k in sd if k.startswith(CLASSIFIER_PREFIXES) and not k.startswith(kept)]
    skip = set(dropped) | {'cls_token', 'pos_embed', 'pos_embed_cls'}
    out = OrderedDict((k, v) for k, v in sd.items() if k not in skip)
    pos = sd.get('pos_embed')
    if pos is None:
        raise CheckpointError("the checkpoint has no 'pos_embed'.")
    ckpt_regs, reg_tokens, reg_pos, patch_pos = 0, None, None, pos
    if fmt in ('shufflemamba', 'vim'):
        if 'cls_token' not in sd:
            raise CheckpointError(f"format '{fmt}' needs a cls_token, the checkpoint has "
                                  'none (is it in this project\'s layout? use '
                                  "ckpt_format='mmplugin').")
        cls_at = 0 if fmt == 'shufflemamba' else (pos.shape[1] - 1) // 2
        patch_pos = torch.cat([pos[:, :cls_at], pos[:, cls_at + 1:]], dim=1)
        reg_tokens, reg_pos, ckpt_regs = sd['cls_token'], pos[:, cls_at:cls_at + 1], 1
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
    else:  # 'reg' or 'mmplugin': registers (if any) with their own positions
        if fmt == 'reg' and ('cls_token' not in sd or 'pos_embed_cls' not in sd):
            raise CheckpointError("format 'reg' needs 'cls_token' and 'pos_embed_cls'.")
        if 'cls_token' in sd:
            reg_tokens, reg_pos = sd['cls_token'], sd.get('pos_embed_cls')
            ckpt_regs = int(reg_tokens.shape[1])
        if num_registers not in (0, ckpt_regs):
            raise CheckpointError(
                f'the checkpoint has {ckpt_regs} register tokens but the backbone has '
                f'num_registers={num_registers}' + (
                    f': use num_registers={ckpt_regs} to keep them or 0 to drop them.'
                    if fmt == 'reg' else '.'))
    if with_cls_token and fmt != 'shufflemamba':
        raise CheckpointError(
            'the backbone has with_cls_token=True (one cls token in front) but the '
            + (f'checkpoint has {ckpt_regs} register tokens (Mamba-Reg): build the '
               f'backbone with num_registers={ckpt_regs} instead' if ckpt_regs else
               'checkpoint has no cls token: build the backbone with '
               'with_cls_token=False') + '.')
    src_grid = _source_grid(patch_pos.shape[1], fmt, patch_resolution, 'cls_token' in sd,
                            source_grid)
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
            doubled = out[k] * 2
            if not bool(torch.isfinite(doubled).all()) and bool(torch.isfinite(out[k]).all()):
                doubled = out[k].float() * 2  # past the fp16 maximum: exact in float32
            out[k] = doubled
    summary = dict(
        format='videomamba' if summed else fmt,
        **{k: v for k, v in describe_state_dict(sd).items()
           if k not in ('registers', 'pos_tokens')},
        checkpoint_tokens=ckpt_regs, kept_tokens=num_registers + int(with_cls_token),
        grid=src_grid, target_grid=dst_grid, dropped=dropped, outside_backbone=outside)
    return out, summary
