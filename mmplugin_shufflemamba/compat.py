"""Compatibility of MMEngine 0.10 checkpoints with ``torch.load(weights_only=True)``.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True`` and refuses the
``HistoryBuffer`` objects and numpy arrays that MMEngine writes into the message hub of
every checkpoint, which breaks ``tools/test.py CKPT``, ``load_from`` and ``resume``.
Instead of disabling the safe loader, the few classes MMEngine writes are allow-listed.
"""
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


def allow_mmengine_checkpoint_globals() -> None:
    """Allow-list the non-tensor classes MMEngine stores in its checkpoints."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4: weights_only is not the default anyway
        return
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.config.config import ConfigDict
    add([HistoryBuffer, ConfigDict] + _numpy_globals())


allow_mmengine_checkpoint_globals()
