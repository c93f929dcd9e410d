"""Stop training at the first non-finite loss or gradient norm (a diverged run otherwise
goes on logging ``loss: nan``, saving NaN weights and evaluating them), and refuse to save
non-finite weights. ``tools/train.py`` adds it to every run; see
docs/training_and_testing.md (how the training hooks and data checks work).
"""
import math
from typing import Dict, Optional

import torch
from mmengine.dist import all_reduce, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop, find_latest_checkpoint

GRAD_NORM_KEY = 'train/grad_norm'


class NonFiniteTrainingError(FloatingPointError):
    """A training iteration produced a NaN / inf loss or gradient norm."""


def _value(v) -> Optional[float]:
    if isinstance(v, torch.Tensor):
        if v.numel() == 0:
            return None
        return float(v.detach().float().mean()) if v.numel() > 1 else float(v.detach())
    return float(v) if isinstance(v, (int, float)) else None


def _loss_terms(outputs) -> Dict[str, float]:
    """The loss values of ``train_step``'s log variables (keys containing 'loss', as
    MMEngine's ``parse_losses`` sums them)."""
    if not isinstance(outputs, dict):
        return {}
    return {str(k): value for k, v in outputs.items()
            if 'loss' in str(k) and (value := _value(v)) is not None}


def uses_loss_scaler(optim_wrapper) -> bool:
    """Whether a loss scaler skips steps with inf gradients (MMEngine's
    ``AmpOptimWrapper`` with an enabled ``GradScaler``, ``ApexOptimWrapper``)."""
    inner = getattr(optim_wrapper, 'optim_wrappers', None)  # an OptimWrapperDict's
    wrappers = list(inner.values()) if isinstance(inner, dict) else [optim_wrapper]
    for w in wrappers:
        scaler = getattr(w, 'loss_scaler', None)
        if (scaler is not None and getattr(scaler, 'is_enabled', lambda: True)()
                or type(w).__name__ == 'ApexOptimWrapper'):
            return True
    return False


def _fmt(v: float) -> str:
    return repr(v) if not math.isfinite(v) else f'{v:.4g}'


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Raise :class:`NonFiniteTrainingError` at the first iteration whose loss (or
    gradient norm) is NaN or inf, before that state is saved.

    Args:
        check_grad_norm (bool): also check ``train/grad_norm`` (logged when the
            optimizer wrapper clips gradients), except where a loss scaler skips
            non-finite steps. Defaults to True.
        check_weights (bool): refuse to save a checkpoint whose weights hold NaN / inf
            (checked on the saving rank). Defaults to True.
    """

    # Before EMAHook (NORMAL, or mmpretrain's ABOVE_NORMAL), LoggerHook and CheckpointHook
    # in after_train_iter; after RuntimeInfoHook (VERY_HIGH).
    priority = 'HIGH'

    def __init__(self, check_grad_norm: bool = True, check_weights: bool = True) -> None:
        self.check_grad_norm = check_grad_norm
        self.check_weights = check_weights
        self._grad_seen = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.check_weights or not isinstance(checkpoint.get('state_dict'), dict):
            return
        from ...checkpoint.files import nonfinite_tensors
        bad = nonfinite_tensors(checkpoint['state_dict'])
        if not bad:
            return
        meta = checkpoint.get('meta') or {}
        names = ', '.join(f'{k} ({v})' for k, v in list(bad.items())[:5])
        msg = (f"Training stopped: the weights hold NaN/inf after iteration "
               f"{meta.get('iter', runner.iter)} ({len(bad)} of "
               f"{len(checkpoint['state_dict'])} tensors: {names}"
               f"{' ...' if len(bad) > 5 else ''}), the losses being finite; this "
               'checkpoint is not saved. Lower the learning rate or add gradient clipping '
               '(optim_wrapper.clip_grad).')
        runner.logger.error(msg)
        raise NonFiniteTrainingError(msg)

    def _grad_history(self, runner):
        buf = runner.message_hub.log_scalars.get(GRAD_NORM_KEY)
        return None if buf is None else buf.data[0]

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        # The grad-norm buffer's array is replaced at every update: a new one after the
        # iteration means a value of this iteration (not one loaded on resume).
        if self.check_grad_norm:
            self._grad_seen = self._grad_history(runner)

    def _grad_norm(self, runner) -> Optional[float]:
        if not self.check_grad_norm or uses_loss_scaler(getattr(runner, 'optim_wrapper',
                                                                None)):
            return None
        history = self._grad_history(runner)
        if history is None or history is self._grad_seen or len(history) == 0:
            return None
        return float(history[-1])

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        terms = _loss_terms(outputs)
        grad_norm = self._grad_norm(runner)
        bad_loss = any(not math.isfinite(v) for v in terms.values())
        bad_grad = grad_norm is not None and not math.isfinite(grad_norm)
        world = get_world_size()
        ranks = _ranks_in_trouble(bad_loss or bad_grad, world)
        if not ranks:
            return
        where = f'iteration {runner.iter + 1}'  # as the log counts it: Iter(train) [it/N]
        if isinstance(getattr(runner, '_train_loop', None), EpochBasedTrainLoop):
            where += f' (epoch {runner.epoch + 1}, batch {batch_idx + 1})'
        values = ', '.join(f'{k}={_fmt(v)}' for k, v in terms.items()) or \
            'no loss terms in the outputs'
        if bad_loss or bad_grad:
            what = (['non-finite loss'] if bad_loss else []) + (
                [f'non-finite gradient norm (grad_norm={_fmt(grad_norm)})']
                if bad_grad else [])
            head = f'{" and ".join(what)} at {where}: {values}'
            if world > 1:
                head += f' (on rank(s) {ranks} of {world})'
        else:
            head = (f'non-finite loss or gradient norm on rank(s) {ranks} at {where} '
                    f'(this rank: {values})')
        try:  # MMEngine's last_checkpoint record, best effort for the message only
            last = find_latest_checkpoint(runner.work_dir)
        except Exception:  # pragma: no cover
            last = None
        msg = (f'Training stopped: {head}. The weights of this iteration are not saved'
               + (f'; the last checkpoint is {last}' if last else '') +
               '. Lower the learning rate, add or tighten gradient clipping '
               '(optim_wrapper.clip_grad) or check the data of this iteration, then '
               'restart (a --resume with the same settings repeats the same iterations).')
        runner.logger.error(msg)
        raise NonFiniteTrainingError(msg)


def _ranks_in_trouble(bad: bool, world: int) -> list:
    """The ranks whose iteration went non-finite (all ranks learn every rank's verdict:
    one all-reduce of ``world`` flags; no communication in a single process)."""
    if world == 1:
        return [0] if bad else []
    flags = torch.zeros(world, dtype=torch.float32)
    flags[get_rank()] = float(bad)
    all_reduce(flags, op='sum')
    return [i for i, f in enumerate(flags.tolist()) if f > 0]
