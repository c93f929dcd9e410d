"""Reading checkpoint files (any MMEngine URI, through the safe ``torch.load``) and
choosing their raw or EMA weights; refusals of placeholder paths and non-finite weights.
Nothing here knows the model's layout (see :mod:`.layout`)."""
import io
import logging
import os.path as osp
import re
import urllib.parse
import zipfile
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from mmengine import fileio
from mmengine.logging import print_log

from ..errors import ArgumentTypeError, ArgumentValueError, relative_path_note
from .safe_load import safe_torch_load


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded as asked (the message says why and how)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint path that names no file (a ``FileNotFoundError`` too)."""


class NoEMAWeightsError(CheckpointError):
    """``use_ema=True`` for a checkpoint without EMA weights."""


def nonfinite_tensors(sd: Dict[str, object]) -> Dict[str, str]:
    """``{name: 'NaN' | 'inf' | 'NaN and inf'}`` of the floating-point tensors of ``sd``
    that are not finite, in the order of ``sd``."""
    bad = {}
    for k, v in sd.items():
        if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex()) \
                and not bool(torch.isfinite(v).all()):
            nan, inf = bool(torch.isnan(v).any()), bool(torch.isinf(v).any())
            bad[k] = 'NaN and inf' if nan and inf else ('NaN' if nan else 'inf')
    return bad


DIVERGED = ('The run that wrote this checkpoint diverged; loading it would train or '
            'evaluate garbage. Use a checkpoint saved before the divergence (or retrain '
            'with a lower learning rate / gradient clipping)')


def check_finite(sd: Dict[str, object], source: str = '<checkpoint>',
                 allow_nonfinite: bool = False, opt_out: str = 'allow_nonfinite=True',
                 cause: str = DIVERGED) -> Dict[str, str]:
    """Refuse a state dict with NaN / inf values (:func:`refuse_nonfinite`); return its
    :func:`nonfinite_tensors`."""
    bad = nonfinite_tensors(sd)
    refuse_nonfinite(bad, sum(isinstance(v, torch.Tensor) for v in sd.values()), source,
                     allow_nonfinite, opt_out, cause=cause)
    return bad


def refuse_nonfinite(bad: Dict[str, str], total: int, source: str, allow_nonfinite: bool,
                     opt_out: str, error: type = CheckpointError, origin: str = '',
                     logger='current', cause: str = DIVERGED) -> None:
    """Raise ``error`` when ``bad`` names tensors (how many of ``total``, a few names,
    ``cause``: why and the fix, ``opt_out`` to load them anyway, where the file comes
    from); with ``allow_nonfinite`` log a warning instead."""
    if bad and not allow_nonfinite:
        names = ', '.join(f'{k} ({what})' for k, what in list(bad.items())[:5])
        more = f' and {len(bad) - 5} more' if len(bad) > 5 else ''
        raise error(
            f'{source}: {len(bad)} of {total} tensors hold NaN/inf values: {names}{more}. '
            f'{cause}; {opt_out} loads it anyway.'
            + (f' (the file comes from {origin})' if origin else ''))
    if bad:
        print_log(f'{source}: loading {len(bad)} tensors with NaN/inf values as asked '
                  f'({opt_out}): {list(bad)[:5]}', logger=logger, level=logging.WARNING)


# Paths that are documentation, not files: the configs' documented placeholder
# ('path/to/...'), angle-bracket templates and the official configs' 'your_model_path'.
_PLACEHOLDER = re.compile(
    r'(^|[/\\])path[/\\]to[/\\]|<[^<>]*>|your[_-]?(model|checkpoint|ckpt)[_-]?(path|file)?'
    r'|^(none|null|todo|xxx|placeholder|changeme)$', re.IGNORECASE)


def check_checkpoint_path(checkpoint, what: str = 'init_cfg.checkpoint') -> str:
    """Refuse an empty or placeholder ``init_cfg.checkpoint`` (or the setting ``what``
    names, e.g. 'load_from') with a message saying what to set (before anything is
    read); return the path as a string."""
    other = what != 'init_cfg.checkpoint'
    empty = checkpoint is None or not str(checkpoint).strip()
    if empty and other:
        raise CheckpointError(f'{what} is empty: give the checkpoint file to load.')
    if empty:
        raise CheckpointError(
            "init_cfg=dict(type='Pretrained') has no 'checkpoint': set "
            'model.backbone.init_cfg.checkpoint to an ImageNet ShuffleMamba checkpoint, '
            'or drop init_cfg to train from scratch.')
    checkpoint = str(checkpoint)
    url = urllib.parse.urlparse(checkpoint)
    if url.scheme == 'file' and url.netloc in ('', 'localhost'):  # a local file URI
        checkpoint = urllib.parse.unquote(url.path)
    if '://' not in checkpoint:
        checkpoint = osp.expanduser(checkpoint)
    if _PLACEHOLDER.search(checkpoint) and not osp.exists(checkpoint) and other:
        raise CheckpointError(f'{what}={checkpoint!r} is the documented placeholder, not a '
                              'file: set it to your checkpoint.')
    if _PLACEHOLDER.search(checkpoint) and not osp.exists(checkpoint):
        raise CheckpointError(
            f'init_cfg.checkpoint={checkpoint!r} is the documented placeholder, not a '
            'file. Set it to your ImageNet-pretrained checkpoint (no ShuffleMamba weights '
            'were released upstream: train one with the official code, whose training '
            'checkpoints load as they are), e.g. --cfg-options '
            'model.backbone.init_cfg.checkpoint=/data/shufflemamba_b_in1k.pth')
    return checkpoint


#: how torch.save's legacy (non-zip) format begins its pickle: its magic number
_TORCH_LEGACY_MAGIC = (0x1950a86a20f9469cfc6c).to_bytes(10, 'little')


def _saved_by_torch(src) -> bool:
    """Whether ``src`` (a path or a binary buffer) is in one of ``torch.save``'s formats
    (a zip archive, or the legacy pickle with torch's magic number), whatever it holds:
    a file the safe loader refused rather than no checkpoint at all."""
    if hasattr(src, 'seek'):
        src.seek(0)
        head = src.read(64)
        src.seek(0)
    else:
        with open(src, 'rb') as f:
            head = f.read(64)
    return zipfile.is_zipfile(src) or _TORCH_LEGACY_MAGIC in head


def _torch_file_kind(src) -> Tuple[bool, Optional[int]]:
    """``(TorchScript archive?, pickle protocol of the object pickle or None)`` of a
    ``torch.save`` / ``torch.jit.save`` file (a path or a binary buffer)."""
    head, script = b'', False
    try:
        if zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as archive:
                names = archive.namelist()
                script = any(n.endswith('/constants.pkl') for n in names) and any(
                    '/code/' in n for n in names)
                pickled = next((n for n in names if n.endswith('/data.pkl')), None)
                if pickled is not None:
                    with archive.open(pickled) as f:
                        head = f.read(2)
        elif hasattr(src, 'read'):
            src.seek(0)
            head = src.read(2)
        else:
            with open(src, 'rb') as f:
                head = f.read(2)
    except Exception:  # only a hint for the message: a file it cannot read gets none
        pass
    finally:
        if hasattr(src, 'seek'):
            src.seek(0)
    return script, head[1] if len(head) == 2 and head[0] == 0x80 else None


def read_checkpoint(filename: str, map_location: str = 'cpu',
                    what: str = 'init_cfg.checkpoint') -> object:
    """Read a checkpoint file (local path or any MMEngine-supported URI) with
    ``torch.load(weights_only=True)`` and the allow-list of :mod:`.safe_load`; ``what``
    names the setting that gave it, for :func:`check_checkpoint_path`."""
    filename = check_checkpoint_path(filename, what)
    if isinstance(map_location, str):
        try:
            torch.device(map_location)
        except RuntimeError:
            raise ArgumentValueError(f"map_location={map_location!r} is not a device (e.g. "
                                     "'cpu', 'cuda', 'cuda:0')") from None
    is_local = '://' not in filename
    if is_local and osp.isdir(filename):
        raise CheckpointError(f'{filename} is a directory, not a checkpoint file: give the '
                              'file in it (e.g. a work dir\'s iter_*.pth or epoch_*.pth)')
    if is_local and not osp.isfile(filename):
        raise CheckpointNotFoundError(f'checkpoint file not found: {filename}'
                                      + relative_path_note(filename))
    if not is_local:
        try:
            data = io.BytesIO(fileio.get(filename))
        except Exception as e:
            why = (f"MMEngine's fileio has no backend for {filename.split('://')[0]}://"
                   if isinstance(e, KeyError) else f'{type(e).__name__}: {e}')
            raise CheckpointError(f'could not fetch {filename}: {why} '
                                  '(download it and give the local path, or set up '
                                  "access to that storage for MMEngine's fileio)") from e
    try:
        return safe_torch_load(filename if is_local else data, map_location)
    except FileNotFoundError:
        raise
    except Exception as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        msg = lines[0] if lines else type(e).__name__
        # torch's first line is generic: the one naming what the unpickler met is not
        said = [line.split('WeightsUnpickler error:')[-1].strip() for line in lines]
        msg = next((line for line in said if line.startswith(
            ('Unsupported', 'Trying to', 'Can only'))), msg)
        msg = msg.split(' Please use `torch.serialization')[0].rstrip('.')
        src = filename if is_local else data
        script, protocol = _torch_file_kind(src)
        if script:
            raise CheckpointError(
                f'{filename} is a TorchScript archive (torch.jit.save), a compiled program '
                "rather than a checkpoint: save the model's weights with "
                'torch.save(model.state_dict(), path) and give that file.') from e
        if 'Weights only load failed' in str(e) and _saved_by_torch(src) and not (
                msg.startswith('Unsupported operand') and (protocol or 0) < 4):
            if msg.startswith('Unsupported operand'):
                msg += (f' (pickle protocol {protocol}, which the safe loader does not '
                        'read: torch.save(..., pickle_protocol=4) or higher)')
            raise CheckpointError(
                f'{filename}: refused by the safe loader (torch.load weights_only=True): '
                f'{msg}. If you trust this file, load it with torch.load(..., '
                "weights_only=False), keep only the 'model' / 'model_ema' state dicts "
                'and save those.') from e
        raise CheckpointError(
            f'{filename} is not a readable PyTorch checkpoint (truncated, corrupted or '
            f'not a checkpoint at all): {type(e).__name__}: {msg}') from e


def check_flag(name: str, value) -> bool:
    """A loader switch: True / False (also 0 / 1, numpy bools and None for False, as
    configs and --cfg-options give them); a string such as 'no' is refused."""
    if value is None or isinstance(value, (bool, np.bool_)) or (
            isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise ArgumentTypeError(f'{name} must be True or False, got {value!r}')


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(v, torch.Tensor) for v in obj.values())


def is_mmengine_checkpoint(ckpt: object) -> bool:
    """Whether ``ckpt`` was written by MMEngine's runner or this project's tools
    (``meta`` / ``message_hub`` beside ``state_dict``)."""
    return isinstance(ckpt, dict) and not _is_state_dict(ckpt) and (
        isinstance(ckpt.get('meta'), dict) or 'message_hub' in ckpt)


def own_meta(ckpt: object) -> dict:
    """``meta`` of a file written by this project's tools (empty for any other)."""
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    return meta if isinstance(meta, dict) and 'shufflemamba_format' in meta else {}


def select_state_dict(ckpt: object, use_ema: bool = False,
                      filename: str = '<checkpoint>') -> Tuple[Dict[str, torch.Tensor], str]:
    """Pick the raw or EMA weights of a checkpoint object, per writer (the table is in
    docs/loading.md, "Raw and EMA weights").

    Args:
        ckpt: what :func:`read_checkpoint` returned.
        use_ema (bool): the EMA weights (an error where there are none); None is False.
        filename (str): how to name the file in messages.

    Returns:
        tuple: (state dict, name of the entry used).
    """
    use_ema = check_flag('use_ema', use_ema)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{filename} holds a {type(ckpt).__name__}, not a '
                              'checkpoint dict or state dict.')

    def no_ema(why):
        return NoEMAWeightsError(f'use_ema=True but {filename} has no EMA weights ({why}); '
                                 'load the raw weights (use_ema=False, the default).')

    if _is_state_dict(ckpt):
        if use_ema:
            raise no_ema('it is a bare state dict')
        return dict(ckpt), '<state dict>'
    own = own_meta(ckpt)
    if own and _is_state_dict(ckpt.get('state_dict')):
        if use_ema and own.get('weights') != 'ema':
            raise no_ema(f"converted from the raw weights, entry {own.get('entry')!r}")
        return dict(ckpt['state_dict']), 'state_dict'
    if not (use_ema and any(_is_state_dict(ckpt.get(k)) for k in ('model_ema', 'state_dict_ema'))):
        _refuse_two_readings(ckpt, filename)
    if 'model' in ckpt or 'model_ema' in ckpt:  # official (DeiT-style) training script
        key = 'model_ema' if use_ema else 'model'
        if _is_state_dict(ckpt.get(key)):
            return dict(ckpt[key]), key
        if use_ema:
            raise no_ema("'model_ema' is None: trained without --model-ema")
    if is_mmengine_checkpoint(ckpt) and _is_state_dict(ckpt.get('state_dict')):
        # EMAHook swaps the weights before saving: 'state_dict' holds the EMA ones, its
        # averaged model's 'module.<key>' entries in 'ema_state_dict' the raw ones.
        raw = ema_hook_raw_weights(ckpt) or {}
        if raw and not use_ema:
            return raw, 'ema_state_dict'
        if use_ema and not raw:
            raise no_ema('an MMEngine checkpoint saved without EMAHook')
        return dict(ckpt['state_dict']), 'state_dict'
    for key in ('state_dict_ema', 'model_ema') if use_ema else ('model', 'state_dict', 'module'):
        if _is_state_dict(ckpt.get(key)):
            return dict(ckpt[key]), key
    _refuse_non_tensor_values(ckpt, filename)
    if use_ema:
        raise no_ema(f'entries: {sorted(ckpt)[:20]}')
    raise CheckpointError(
        f'{filename} has no model weights: expected a state dict or one of the entries '
        f"'model', 'model_ema', 'state_dict'; found {sorted(ckpt)[:20]}.")


#: the entries of a checkpoint file that hold weights, and with them those a training
#: checkpoint has (what tells a whole checkpoint from a state dict)
WEIGHT_ENTRIES = ('model', 'model_ema', 'state_dict', 'state_dict_ema', 'module')
CHECKPOINT_ENTRIES = WEIGHT_ENTRIES + ('meta', 'args')


def non_tensor_values(sd: dict) -> List[str]:
    """``'key (type)'`` of each value of ``sd`` that is not a tensor."""
    return [f'{k} ({type(v).__name__})' for k, v in sd.items()
            if not isinstance(v, torch.Tensor)]


def _refuse_non_tensor_values(ckpt: dict, filename: str) -> None:
    """A state dict (the file, or its weight entry) with values that are not tensors
    is named as such, not as a file without weights."""
    entries = [('the file', ckpt)] + [(f'entry {k!r}', ckpt.get(k)) for k in WEIGHT_ENTRIES]
    for where, obj in entries:
        if not isinstance(obj, dict) or not any(
                isinstance(v, torch.Tensor) for v in obj.values()):
            continue
        bad = non_tensor_values(obj)
        if bad:  # (a clean state dict here is one that was not asked for)
            raise CheckpointError(
                f'{filename}: {where} holds weights but also values that are not tensors '
                f'({", ".join(bad[:5])}{", ..." if len(bad) > 5 else ""}): a state dict '
                'maps parameter names to tensors; save the weights without those entries.')


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a is b:
        return True
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point() or a.is_complex():
        return bool(torch.isclose(a, b, rtol=0, atol=0, equal_nan=True).all())
    return torch.equal(a, b)


def _refuse_two_readings(ckpt: dict, filename: str) -> None:
    """A file whose 'model', 'state_dict' and 'module' entries hold different weights
    could be read two ways: an error asking which (identical copies are one reading)."""
    found = [k for k in ('model', 'state_dict', 'module') if _is_state_dict(ckpt.get(k))]
    first = ckpt[found[0]] if found else None
    other = [k for k in found[1:] if ckpt[k].keys() != first.keys() or not all(
        _same_tensor(ckpt[k][n], first[n]) for n in first)]
    if other:
        raise CheckpointError(
            f'{filename} holds two different sets of weights, {found[0]!r} and '
            f'{other[0]!r}, and could be read either way: save the one you mean on its '
            'own and load that file (for a file you trust: ckpt = torch.load(f, '
            f"weights_only=False); torch.save(ckpt[{found[0]!r}], 'weights.pth')).")


def ema_hook_raw_weights(ckpt: dict) -> Optional[Dict[str, torch.Tensor]]:
    """The ``module.<key>`` tensors of MMEngine's ``EMAHook`` entry ``ema_state_dict``
    (its averaged model; the raw weights once the hook has swapped them) without the
    prefix; None when there is no such entry."""
    ema = ckpt.get('ema_state_dict')
    if not isinstance(ema, dict):
        return None
    return {k[len('module.'):]: v for k, v in ema.items()
            if k.startswith('module.') and isinstance(v, torch.Tensor)}
