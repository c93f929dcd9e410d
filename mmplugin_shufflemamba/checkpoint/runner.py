"""The runner's side of the fit check: which file ``Runner.load_or_resume`` will load
(:func:`checkpoint_to_load`), the check of it on every rank
(:func:`check_runner_checkpoint`) and the hooks that make MMEngine load what was
checked (the backbones' reading of the file, the mis-shaped tensors of an allowed
partial load left out, the EMA swap of a test)."""
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple

from mmengine.hooks import Hook
from mmengine.logging import print_log

from .fit import _strip_module, as_loaded, check_checkpoint_fit, unwrap_model


class BackboneLayoutHook(Hook):
    """Before MMEngine loads a checkpoint (``load_from``, ``tools/test.py``), read its
    backbones' weights as the fit check did (:func:`as_loaded`): MMEngine passes the
    model the state dict alone, so a position grid the file records would be lost."""

    priority = 'VERY_HIGH'  # before EMAHook takes its copy

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        loaded = as_loaded(unwrap_model(runner.model), checkpoint)
        if isinstance(checkpoint.get('state_dict'), dict):
            sd = loaded['state_dict']  # with the modules' state versions, for loading
            sd._metadata = getattr(checkpoint['state_dict'], '_metadata', None)
            checkpoint['state_dict'] = sd
        else:  # a bare state dict: made the 'state_dict' entry, which MMEngine's loader
            # and EMAHook read (EMAHook's after_load_checkpoint needs it)
            sd = OrderedDict(loaded)
            sd._metadata = getattr(checkpoint, '_metadata', None)
            checkpoint.clear()
            checkpoint['state_dict'] = sd


class EvaluateFileWeightsHook(Hook):
    """``tools/test.py``: an EMA hook (mmpretrain's ``evaluate_on_ema``) swaps in the
    file's EMA weights only where the file has them; a file without them (no
    ``ema_state_dict``) is evaluated as it is, and the log says so."""

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if 'ema_state_dict' in checkpoint:
            return
        for hook in runner.hooks:  # mmpretrain's EMAHook would say it tests EMA weights
            if getattr(hook, 'evaluate_on_ema', False):
                hook.evaluate_on_ema = False
                print_log(f"{runner._load_from} has no EMA weights (no 'ema_state_dict'): "
                          f'{type(hook).__name__} does not swap, the test evaluates the '
                          "file's weights.", logger='current')


class SkipMismatchedShapesHook(Hook):
    """After an allowed partial load's report, drop the mis-shaped tensors before
    MMEngine loads the rest (instead of one "size mismatch" line per tensor)."""

    priority = 'LOWEST'  # after EMAHook took its copy

    def __init__(self, keys) -> None:
        self.keys = set(keys)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        sd = checkpoint['state_dict'] if isinstance(checkpoint.get('state_dict'), dict) \
            else checkpoint
        for k in list(sd):
            if _strip_module(k) in self.keys:
                del sd[k]


def checkpoint_to_load(runner) -> Tuple[Optional[str], Optional[str]]:
    """The file ``Runner.load_or_resume`` will load and how: ``(path, 'resume')``,
    ``(path, 'load')`` or ``(None, None)`` (nothing to load)."""
    if getattr(runner, '_has_loaded', False):
        return None, None
    resume, load_from = getattr(runner, '_resume', False), getattr(runner, '_load_from', None)
    if resume and load_from is None:
        from mmengine.runner import find_latest_checkpoint
        path = find_latest_checkpoint(runner.work_dir)
        return (path, 'resume') if path else (None, None)
    if load_from is None:
        return None, None
    return load_from, 'resume' if resume else 'load'


def check_runner_checkpoint(runner, allow_partial: bool = False, allow_nonfinite: bool = False,
                            mode: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """:func:`check_checkpoint_fit` of the checkpoint the runner is about to load
    (:func:`checkpoint_to_load`) against ``runner.model``. Call it on every rank before
    ``train()`` / ``test()``: all reach the same verdict and stop together.

    Args:
        runner (Runner): the runner, before ``train()`` / ``test()``.
        allow_partial (bool): see :func:`check_checkpoint_fit`. Defaults to False.
        allow_nonfinite (bool): see :func:`check_checkpoint_fit`. Defaults to False.
        mode (str, optional): ``'test'``, or None: the runner's ``'load'`` / ``'resume'``.

    Returns:
        dict or None: the details (None when nothing is to be loaded).
    """
    path, how = checkpoint_to_load(runner)
    if path is None:
        return None
    cfg = getattr(runner, 'cfg', None)
    filename = getattr(cfg, 'filename', None)
    target = osp.basename(filename) if filename else 'this config'
    model_cfg = cfg.get('model') if cfg is not None else None
    details = check_checkpoint_fit(runner.model, path, source=str(path), mode=mode or how,
                                   allow_partial=allow_partial,
                                   allow_nonfinite=allow_nonfinite, target=target,
                                   model_cfg=model_cfg)
    if (mode or how) != 'resume':
        runner.register_hook(BackboneLayoutHook())
    if mode == 'test':
        runner.register_hook(EvaluateFileWeightsHook())
    if details['shapes']:  # allowed partial load: MMEngine loads the rest
        runner.register_hook(SkipMismatchedShapesHook(k for k, _, _ in details['shapes']))
    return details
