"""MMEngine 0.10 checkpoints with ``torch.load(weights_only=True)``: the allow-list of
what MMEngine and the official training script pickle (see docs/loading.md, "The safe
checkpoint reader"). :func:`safe_torch_load` applies it for one read;
:func:`enable_mmengine_checkpoints` lets MMEngine's own loaders use it, process-wide."""
import argparse
import contextlib
import os.path as osp

import torch


def _safe_globals():
    import numpy as np
    from mmengine.config.config import ConfigDict
    from mmengine.logging.history_buffer import HistoryBuffer
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    found = [HistoryBuffer, ConfigDict, argparse.Namespace, np.ndarray, np.dtype, _reconstruct,
             scalar]
    try:
        import numpy.dtypes as npd
        found += [getattr(npd, n) for n in dir(npd) if n.endswith('DType')]
    except ImportError:  # pragma: no cover
        pass
    return found


@contextlib.contextmanager
def checkpoint_safe_globals():
    """Context in which ``torch.load(weights_only=True)`` reads MMEngine checkpoints.

    On exit the process-wide allow-list holds what it held on entry plus what others
    added meanwhile, and none of the entries this context added: unlike torch's
    ``safe_globals`` context, whose exit removes its globals even where they were
    allowed before (e.g. by :func:`enable_mmengine_checkpoints`)."""
    ser = torch.serialization
    if not hasattr(ser, 'get_safe_globals'):  # pragma: no cover - torch < 2.4
        yield
        return
    before = list(ser.get_safe_globals())
    # The whole allow-list again, not only getattr: another library's context (e.g.
    # timm's checkpoint reader) may have removed it from the process-wide list.
    added = [g for g in [getattr] + _safe_globals() if g not in before]
    ser.add_safe_globals(added)
    try:
        yield
    finally:
        now = list(ser.get_safe_globals())
        ser.clear_safe_globals()
        ser.add_safe_globals(before + [g for g in now if g not in added and g not in before])


def safe_torch_load(filename, map_location=None, mmap: bool = False):
    """``torch.load(weights_only=True)`` that accepts MMEngine / official checkpoints;
    ``mmap`` maps a file's tensors instead of reading them (a file of torch's zip
    format; others are read)."""
    with checkpoint_safe_globals():
        if mmap:
            try:
                return torch.load(filename, map_location=map_location, weights_only=True,
                                  mmap=True)
            except RuntimeError as e:
                if 'mmap' not in str(e):
                    raise
        return torch.load(filename, map_location=map_location, weights_only=True)


def _load_from_local(filename, map_location):
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_torch_load(filename, map_location)


_enabled = False


def enable_mmengine_checkpoints() -> None:
    """Let MMEngine's loaders (``load_checkpoint``, ``load_from``, resume,
    ``PretrainedInit``) read MMEngine and official checkpoints with the safe
    ``torch.load``: the allow-list process-wide and :func:`safe_torch_load` for local
    files. Idempotent."""
    global _enabled
    if _enabled:
        return
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:
        add(_safe_globals())
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=_load_from_local, force=True)
    _enabled = True
