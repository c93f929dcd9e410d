"""Argument and input checks of the ShuffleMamba models (messages name the argument
and what to change)."""
import inspect
from typing import Dict, Optional, Sequence, Tuple

import torch

from ...ops.kernels import autocast_dtype
from ...errors import ArgumentTypeError, ArgumentValueError
from ..layers.arg_checks import (check_bool, check_int, check_pair, check_rate, check_real,
                                 close_names, is_int)
from ..layers.token_layout import TokenLayout


def token_layout(with_cls_token, num_registers) -> TokenLayout:
    """The :class:`TokenLayout` of ``with_cls_token`` / ``num_registers``."""
    with_cls_token = check_bool('with_cls_token', with_cls_token)
    check_int('num_registers', num_registers, 0,
              hint='register tokens (Mamba-Reg); 0 for none')
    if with_cls_token and num_registers > 0:
        raise ArgumentValueError(
            'with_cls_token=True and num_registers > 0 are two layouts of the '
            'classification tokens: one cls token in front (plain ShuffleMamba '
            'classifiers) or registers (Mamba-Reg); pick one.')
    return TokenLayout.from_args(with_cls_token, num_registers)


def check_out_cls(out_cls, tokens: TokenLayout, final_norm: bool) -> bool:
    """``out_cls`` needs classification tokens and the final norm."""
    out_cls = check_bool('out_cls', out_cls)
    if out_cls and not tokens.num_extra:
        raise ArgumentValueError(
            'out_cls=True returns the classification tokens, and the backbone has '
            'none: set with_cls_token=True (plain models: one cls token in front) '
            'or num_registers=R (Reg models).')
    if out_cls and not final_norm:
        raise ArgumentValueError('out_cls=True reads the classification tokens after norm_f: '
                                 'set final_norm=True.')
    return out_cls


def check_cls_reduce(cls_reduce, tokens: TokenLayout, embed_dims: int) -> int:
    """``cls_reduce`` reduces registers, by a divisor of ``embed_dims``."""
    if not isinstance(cls_reduce, int) or isinstance(cls_reduce, bool) or cls_reduce < 1:
        raise ArgumentValueError(f'cls_reduce must be an int >= 1, got {cls_reduce!r}')
    if cls_reduce > 1:
        if tokens.kind != 'registers':
            raise ArgumentValueError(
                f'cls_reduce={cls_reduce} reduces register tokens (Mamba-Reg) and the '
                'backbone has none: set num_registers, or cls_reduce=1.')
        if embed_dims % cls_reduce:
            raise ArgumentValueError(f'cls_reduce={cls_reduce} must divide embed_dims='
                                     f'{embed_dims}.')
    return cls_reduce


def check_mixer_args(d_state, d_conv, expand, drop_rate, drop_path_rate) -> None:
    """What the blocks get: mixer sizes and the stochastic rates (SLWS's is checked by
    :class:`LayerShuffle`)."""
    check_int('d_state', d_state, 1, hint='the SSM state size, 16 in every model')
    check_int('d_conv', d_conv, 1, hint='the causal conv width, 4 in every model')
    check_real('expand', expand, 1.0,
               hint='the mixer width is expand * embed_dims, 2 in every model')
    check_rate('drop_rate', drop_rate,
               hint='dropout after the position embedding; 0 disables it')
    check_rate('drop_path_rate', drop_path_rate,
               hint='the stochastic depth of the last block, a probability; '
               '0 disables it')


#: What the frameworks pass to a backbone that these models do not take.
FRAMEWORK_ARGS = {
    'pretrained': "weights load through init_cfg=dict(type='Pretrained', checkpoint=...); "
                  "a base config's model.pretrained (mmseg's ResNet configs set "
                  "'open-mmlab://resnet50_v1c') reaches the backbone as this argument: set "
                  'model.pretrained=None in the config'}


def reject_args(owner: type, kwargs: dict, reasons: Dict[str, str]) -> None:
    """Refuse the arguments of other ShuffleMamba models that mean nothing to
    ``owner`` and :data:`FRAMEWORK_ARGS`, saying why, and the names that no
    ``__init__`` of ``owner``'s classes takes, with the nearest ones (a ``TypeError``
    naming the argument)."""
    name = owner.__name__
    for arg, why in {**FRAMEWORK_ARGS, **reasons}.items():
        if arg in kwargs:
            raise ArgumentTypeError(f'{name} does not take {arg!r}: {why}. Remove it.')
    known = set()
    for cls in owner.__mro__:
        if cls.__module__.split('.')[0] == __name__.split('.')[0] and '__init__' in vars(cls):
            known.update(p.name for p in inspect.signature(cls.__init__).parameters.values()
                         if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    known -= {'self', *reasons}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        near = {arg: close_names(arg, known) for arg in unknown}
        hints = '; '.join(f'{arg!r} (did you mean {" or ".join(map(repr, near[arg]))}?)'
                          if near[arg] else repr(arg) for arg in unknown)
        listing = '' if all(near.values()) else f' It takes {", ".join(sorted(known))}.'
        raise ArgumentTypeError(f'{name} got unknown argument{"s" * (len(unknown) > 1)}: '
                                f'{hints}.{listing} See docs/backbone.md.')


def check_frozen_stages(frozen_stages, num_layers: int) -> int:
    """-1 (nothing) up to ``num_layers`` (the embeddings and that many blocks)."""
    frozen_stages = check_int(
        'frozen_stages', frozen_stages, -1,
        hint='-1 freezes nothing, k the embeddings and the first k blocks')
    if frozen_stages > num_layers:
        raise ArgumentValueError(f'frozen_stages={frozen_stages} exceeds num_layers={num_layers}')
    return frozen_stages


def check_patch_grid(patch_size, img_size) -> Tuple[int, Tuple[int, int]]:
    """``patch_size`` and the position embedding's ``img_size``, a multiple of it."""
    patch_size = check_int('patch_size', patch_size, 1)
    img_size = check_pair('img_size', img_size, 1,
                          hint='the resolution of the position embedding')
    if min(img_size) < patch_size:
        raise ArgumentValueError(f'img_size {img_size} must be at least patch_size={patch_size} '
                                 'on each side (the position embedding needs one patch or more).')
    if img_size[0] % patch_size or img_size[1] % patch_size:
        raise ArgumentValueError(f'img_size {img_size} must be a multiple of patch_size '
                                 f'{patch_size}')
    return patch_size, img_size


def resolve_out_indices(out_indices, num_layers: int, allow_empty: bool = False
                        ) -> Tuple[int, ...]:
    """``out_indices`` (negatives count from the end) as a tuple of block indices."""
    if is_int(out_indices):
        out_indices = [out_indices]
    is_seq = isinstance(out_indices, Sequence) and not isinstance(out_indices, str)
    if not is_seq or (len(out_indices) == 0 and not allow_empty):
        raise ArgumentTypeError('out_indices must be an int or a non-empty sequence of '
                                f'ints, got {out_indices!r}' +
                                (' (an empty one only with out_cls=True)' if
                                 is_seq and not allow_empty else ''))
    result = []
    for idx in out_indices:
        if not is_int(idx):
            raise ArgumentTypeError(f'out_indices entries must be ints, got {idx!r}')
        idx = int(idx)
        if not -num_layers <= idx < num_layers:
            raise ArgumentValueError(
                f'out_indices entry {idx} is out of range for {num_layers} '
                f'blocks: use 0..{num_layers - 1} or negative values down '
                f'to -{num_layers}.')
        result.append(idx % num_layers)
    if len(set(result)) != len(result):
        raise ArgumentValueError(f'out_indices has duplicates after resolving negative '
                                 f'values: {list(out_indices)} -> {result}')
    return tuple(result)


def check_image_input(model, x: torch.Tensor, min_size: Optional[int] = None) -> None:
    """Check the image batch ``x`` fed to ``model``: (B, in_channels, H, W), B >= 1, H
    and W >= ``min_size`` (default ``patch_size``: a smaller image would be one patch of
    mostly padding), the weights' dtype (float32 or half under ``torch.autocast``)."""
    name = type(model).__name__
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'{name} expects a (B, C, H, W) tensor, got '
                        f'{type(x).__name__}')
    shape = tuple(x.shape)
    if len(shape) != 4:
        raise ValueError(f'{name} expects (B, C, H, W) input with C = in_channels = '
                         f'{model.in_channels}, got shape {shape}'
                         + (' (add the batch axis: x[None])' if len(shape) == 3 else
                            ''))
    B, C, H, W = shape
    if C != model.in_channels:
        raise ValueError(f'{name} was built with in_channels={model.in_channels} but '
                         f'the input has {C} channels (shape {shape}).')
    if B == 0:
        raise ValueError(f'{name} got an empty batch (B=0, shape {shape}): pass at '
                         'least one image, or skip the call when there is none.')
    min_size = model.patch_size if min_size is None else min_size
    if H < min_size or W < min_size:
        raise ValueError(
            f'{name} got a {H}x{W} image, smaller than its patch_size='
            f'{model.patch_size}: resize or pad the image to at least {min_size}x'
            f'{min_size}, or build the backbone with a smaller patch_size.'
            if min_size == model.patch_size else
            f'{name} got a {H}x{W} image; H and W must be at least {min_size}.')
    weight_dtype = model.patch_embed.proj.weight.dtype
    if x.dtype != weight_dtype:
        dtype_name = str(weight_dtype).replace('torch.', '')
        if not x.is_floating_point():
            raise TypeError(
                f'{name} takes a floating-point image, got {x.dtype}: convert it '
                f'(x.to(torch.{dtype_name})) and normalise it before the backbone '
                '(the data preprocessor does both).')
        if autocast_dtype(x.device) is None:
            half = next((d for d in (x.dtype, weight_dtype)
                         if d in (torch.float16, torch.bfloat16)), None)
            raise TypeError(
                f'{name} weights are {weight_dtype} but the input is {x.dtype}: '
                f'cast the input to {dtype_name} (x.to(torch.{dtype_name}))' + (
                    f" or run under torch.autocast(device_type='{x.device.type}', "
                    f'dtype={half}) (mixed precision).' if half is not None else '.'))
        if x.dtype == torch.float64:  # autocast leaves float64 as it is
            raise TypeError(
                f'{name} got a float64 image under torch.autocast, which casts float32 '
                f'but not float64 inputs: cast the image to float32 (x.float()).')
