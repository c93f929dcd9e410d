"""Argument validators shared by the backbones, their layers and the optimizer
constructors: messages name the argument, the value and what it accepts. What they
refuse is an :class:`ArgumentError`: an :class:`ArgumentTypeError` (also a ``TypeError``)
for a value of the wrong kind, an :class:`ArgumentValueError` (also a ``ValueError``)
for one out of range; the tools stop with its message, without a traceback."""
import difflib
import math
import numbers
from typing import Any, List, Optional, Sequence, Tuple

import mmcv.cnn  # noqa: F401 (registers mmcv's norm layers)
import torch.nn as nn
from mmengine.registry import MODELS

from ...errors import ArgumentTypeError, ArgumentValueError

__all__ = [
    'close_names', 'is_int', 'is_number', 'check_int', 'check_real', 'check_rate',
    'check_width_ratio',
    'check_bool', 'check_choice', 'check_pair', 'check_norm_cfg', 'check_map_norm_cfg'
]


def _hint(hint: str) -> str:
    return f' ({hint})' if hint else ''


def close_names(name: str, names, one_edit: bool = False) -> List[str]:
    """The string names of ``names`` near ``name``: with ``one_edit``, those one letter
    added, left out, replaced or two neighbours swapped away (sorted), as a check that
    refuses on a near name needs; else the two closest by difflib's ratio, for a
    suggestion ('drop_path' -> 'drop_path_rate')."""
    names = sorted(n for n in names if isinstance(n, str))
    if not one_edit:
        return difflib.get_close_matches(name, names, n=2)
    return [n for n in names if _one_edit_apart(name, n)]


def _one_edit_apart(a: str, b: str) -> bool:
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and
                                  a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def is_int(value: Any) -> bool:
    """An integer (numpy integers too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number (numpy ones too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(name: str, value: Any, min_value: Optional[int] = None,
              max_value: Optional[int] = None, hint: str = '') -> int:
    """``value`` as an int, which must lie in ``[min_value, max_value]``."""
    if not is_int(value):
        raise ArgumentTypeError(f'{name} must be an int, got {value!r} '
                                f'({type(value).__name__}){_hint(hint)}')
    value = int(value)
    low_ok = min_value is None or value >= min_value
    if not low_ok or (max_value is not None and value > max_value):
        rng = (f'in [{min_value}, {max_value}]' if None not in (min_value, max_value) else
               f'>= {min_value}' if not low_ok else f'<= {max_value}')
        raise ArgumentValueError(f'{name} must be {rng}, got {value}{_hint(hint)}')
    return value


def check_real(name: str, value: Any, low: Optional[float] = None,
               high: Optional[float] = None, low_open: bool = False,
               high_open: bool = False, hint: str = '') -> float:
    """``value`` as a finite float in the interval given by ``low`` / ``high``
    (closed ends unless ``low_open`` / ``high_open``; None: unbounded)."""
    if not is_number(value):
        raise ArgumentTypeError(f'{name} must be a number, got {value!r} '
                                f'({type(value).__name__}){_hint(hint)}')
    value = float(value)
    ok = math.isfinite(value)
    if low is not None:
        ok = ok and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        if low is not None and high is not None:
            rng = (f'in {"(" if low_open else "["}{low:g}, {high:g}'
                   f'{")" if high_open else "]"}')
        elif low is not None:
            rng = f'{">" if low_open else ">="} {low:g}'
        elif high is not None:
            rng = f'{"<" if high_open else "<="} {high:g}'
        else:
            rng = 'finite'
        raise ArgumentValueError(f'{name} must be {rng}, got {value!r}{_hint(hint)}')
    return value


def check_rate(name: str, value: Any, hint: str = '') -> float:
    """A drop / drop-path probability: a float in ``[0, 1)``."""
    return check_real(name, value, 0.0, 1.0, high_open=True,
                      hint=hint or 'a probability; 0 disables it')


def check_width_ratio(name: str, ratio: Any, embed_dims: int, width: str, empty: str,
                      fix: str = '', need_width: bool = True) -> int:
    """``ratio`` > 0 of ``embed_dims`` sizing ``width``; with ``need_width``,
    ``int(embed_dims * ratio)`` (returned) must be >= 1 (else it gives ``empty``)."""
    check_real(name, ratio, 0.0, low_open=True, hint=f'the {width} / embed_dims')
    if need_width and int(embed_dims * ratio) < 1:
        raise ArgumentValueError(f'{name}={ratio} gives {empty}: int(embed_dims * {name}) = '
                                 f'int({embed_dims} * {ratio}) = 0; use a larger {name}{fix}.')
    return int(embed_dims * ratio)


def check_bool(name: str, value: Any) -> bool:
    """True / False (or 0 / 1); anything else (a string 'False', None) is an error."""
    if isinstance(value, bool):
        return value
    if is_int(value) and value in (0, 1):
        return bool(value)
    raise ArgumentTypeError(f'{name} must be True or False, got {value!r} '
                            f'({type(value).__name__})')


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value``, which must be one of ``choices``."""
    if value not in tuple(choices):
        raise ArgumentValueError(f'{name} must be one of {tuple(choices)}, got {value!r}')
    return value


def check_pair(name: str, value: Any, min_value: int = 1, hint: str = '') -> Tuple[int, int]:
    """An int or a pair of ints (each ``>= min_value``) as a pair."""
    if is_int(value):
        value = (value, value)
    elif isinstance(value, (str, bytes)) or not isinstance(value, Sequence) \
            or len(value) != 2:
        raise ArgumentTypeError(f'{name} must be an int or a pair of ints (h, w), got '
                                f'{value!r}{_hint(hint)}')
    return (check_int(f'{name}[0]', value[0], min_value, hint=hint),
            check_int(f'{name}[1]', value[1], min_value, hint=hint))


def check_norm_cfg(name: str, cfg: Any, types: str) -> None:
    """A norm config: a dict with a 'type'."""
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ArgumentTypeError(f"{name} must be a dict with a 'type' ({types}), got {cfg!r}")


def check_map_norm_cfg(name: str, cfg: Any) -> None:
    """A norm config for (B, C, H, W) feature maps, built by mmcv's ``build_norm_layer``
    (types looked up as it does, in the default scope): a norm over channels, e.g. BN,
    SyncBN, GN with ``num_groups``, IN; not one of 1-d or 3-d inputs or LayerNorm over
    the last axis."""
    fix = "e.g. dict(type='SyncBN', requires_grad=True), BN, GN (num_groups=) or IN"
    check_norm_cfg(name, cfg, fix)
    kind = layer = cfg['type']
    if isinstance(kind, str):
        with MODELS.switch_scope_and_registry(None) as registry:
            layer = registry.get(kind)
        if layer is None:
            raise ArgumentValueError(f'{name} type {kind!r} is not a registered norm layer; use '
                                     f'{fix}')
    if layer in (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm3d, nn.InstanceNorm1d,
                 nn.InstanceNorm3d):
        raise ArgumentValueError(f'{name} type {kind!r} ({layer.__name__}) does not normalise the '
                                 f'channels of a (B, C, H, W) feature map; use {fix}')
    if isinstance(layer, type) and issubclass(layer, nn.GroupNorm) and \
            'num_groups' not in cfg:
        raise ArgumentValueError(f"{name}: {kind!r} needs num_groups, e.g. dict(type='GN', "
                                 'num_groups=32)')
