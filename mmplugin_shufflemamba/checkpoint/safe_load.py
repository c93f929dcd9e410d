"""Compatibility of MMEngine 0.10 checkpoints with ``torch.load(weights_only=True)``.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True`` and refuses what
MMEngine writes into every checkpoint's message hub (``HistoryBuffer`` objects, numpy
arrays and scalars, and the buffer's statistic functions, pickled by qualified name
through ``getattr``). That breaks ``tools/test.py CKPT``, ``load_from`` and ``--resume``.

Instead of switching the safe loader off:

- :func:`safe_torch_load` reads with ``weights_only=True`` and, for that read only,
  allow-lists ``HistoryBuffer``, ``ConfigDict``, ``argparse.Namespace`` (official
  ImageNet training checkpoints keep their arguments), numpy's array/scalar
  reconstructors and ``getattr``; this package's own loaders use it. The safe unpickler
  still refuses to call anything that is not allow-listed.
- :func:`enable_mmengine_checkpoints` makes MMEngine's own loading do the same,
  process-wide: it allow-lists those globals and registers :func:`safe_torch_load` as
  the loader of local files with MMEngine's ``CheckpointLoader``. Importing the package
  does not do this; the tools call it (``prepare_runtime``), and a config opts in with
  ``custom_imports = dict(imports=['mmplugin_shufflemamba',
  'mmplugin_shufflemamba.compat'])`` (importing :mod:`mmplugin_shufflemamba.compat`
  calls it).
"""
import argparse
import contextlib
import os.path as osp

import torch


def _numpy_globals():
    import numpy as np
    found = [np.ndarray, np.dtype]
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    found += [_reconstruct, scalar]
    try:
        import numpy.dtypes as npd
        found += [getattr(npd, n) for n in dir(npd) if n.endswith('DType')]
    except ImportError:  # pragma: no cover
        pass
    return found


def _safe_globals():
    from mmengine.config.config import ConfigDict
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, ConfigDict, argparse.Namespace] + _numpy_globals()


@contextlib.contextmanager
def checkpoint_safe_globals():
    """Context in which ``torch.load(weights_only=True)`` reads MMEngine checkpoints."""
    ctx = getattr(torch.serialization, 'safe_globals', None)
    if ctx is None:  # pragma: no cover - torch < 2.5
        yield
        return
    # The whole allow-list again, not only getattr: a context of another library
    # (e.g. timm's checkpoint reader) restores the process-wide list to what it saw on
    # entry, which can remove what install() added.
    with ctx([getattr] + _safe_globals()):
        yield


def safe_torch_load(filename, map_location=None):
    """``torch.load(weights_only=True)`` that accepts MMEngine / official checkpoints."""
    with checkpoint_safe_globals():
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
