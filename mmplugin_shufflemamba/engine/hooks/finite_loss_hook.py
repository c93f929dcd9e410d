"""Stop training at the first non-finite loss or gradient norm.

A diverged run otherwise goes on: MMEngine logs ``loss: nan`` every ``interval``
iterations, saves NaN weights at the next checkpoint and evaluates them (mmdet's
``CheckInvalidLossHook`` looks every 50 iterations and only asserts). This hook checks
after EVERY training iteration:

- every loss term in the model's outputs (the log variables of ``train_step``: the
  total ``loss`` and each ``*loss*`` term),
- the gradient norm MMEngine logs as ``train/grad_norm`` when the optimizer wrapper
  clips gradients (this iteration's value only), unless a loss scaler is in use
  (``AmpOptimWrapper`` with float16: the scaler makes inf gradients on purpose and
  skips those steps),

and raises :class:`NonFiniteTrainingError` naming the iteration, the loss terms and
their values. Before a checkpoint is written it also checks the weights being saved
(a step can make them non-finite while the loss that led to it was finite): such a
checkpoint is not written. Its priority (``'ABOVE_NORMAL'``) puts it before ``EMAHook`` (NORMAL),
``LoggerHook`` (BELOW_NORMAL) and ``CheckpointHook`` (VERY_LOW) in ``after_train_iter``:
the run stops before the NaN state is averaged or saved. In a distributed run the
ranks agree on the verdict (one small all-reduce per iteration), so that all stop at
the same iteration, not only the rank whose batch diverged.

``tools/train.py`` adds it to every run (``--no-finite-check`` or ``finite_check = False``
in the config turn it off); other tools use ``custom_hooks = [dict(type='FiniteLossHook')]``.
"""
import math
from typing import Dict, Optional

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

GRAD_NORM_KEY = 'train/grad_norm'


class NonFiniteTrainingError(FloatingPointError):
    """A training iteration produced a NaN / inf loss or gradient norm."""


def _value(v) -> Optional[float]:
    if isinstance(v, torch.Tensor):
        if v.numel() == 0:
            return None
        return float(v.detach().float().mean()) if v.numel() > 1 else float(v.detach())
    if isinstance(v, (int, float)):
        return float(v)
    return None


def _loss_terms(outputs) -> Dict[str, float]:
    """The loss values of ``train_step``'s log variables (keys containing 'loss', as
    MMEngine's ``parse_losses`` sums them)."""
    terms = {}
    if isinstance(outputs, dict):
        for k, v in outputs.items():
            if 'loss' in str(k):
                value = _value(v)
                if value is not None:
                    terms[str(k)] = value
    return terms


def _wrappers(optim_wrapper):
    """The optimizer wrappers inside ``optim_wrapper`` (one, or an OptimWrapperDict's)."""
    inner = getattr(optim_wrapper, 'optim_wrappers', None)
    if isinstance(inner, dict):
        return list(inner.values())
    return [optim_wrapper] if optim_wrapper is not None else []


def uses_loss_scaler(optim_wrapper) -> bool:
    """Whether a loss scaler skips steps with inf gradients (MMEngine's
    ``AmpOptimWrapper`` with an enabled ``GradScaler``, ``ApexOptimWrapper``)."""
    for w in _wrappers(optim_wrapper):
        scaler = getattr(w, 'loss_scaler', None)
        if scaler is not None:
            enabled = getattr(scaler, 'is_enabled', None)
            if enabled is None or enabled():
                return True
        if type(w).__name__ == 'ApexOptimWrapper':
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
            (checked on the saving rank when a checkpoint is written). Defaults to True.
    """

    priority = 'ABOVE_NORMAL'

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
        ranks = _ranks_in_trouble(bad_loss or bad_grad)
        if not ranks:
            return
        it = runner.iter + 1  # the iteration as the log counts it ("Iter(train) [it/N]")
        where = f'iteration {it}'
        from mmengine.runner import EpochBasedTrainLoop
        if isinstance(getattr(runner, '_train_loop', None), EpochBasedTrainLoop):
            where += f' (epoch {runner.epoch + 1}, batch {batch_idx + 1})'
        values = ', '.join(f'{k}={_fmt(v)}' for k, v in terms.items()) or \
            'no loss terms in the outputs'
        if bad_loss or bad_grad:
            what = (['non-finite loss'] if bad_loss else []) + (
                [f'non-finite gradient norm (grad_norm={_fmt(grad_norm)})']
                if bad_grad else [])
            head = f'{" and ".join(what)} at {where}: {values}'
            if _world_size() > 1:
                head += f' (on rank(s) {ranks} of {_world_size()})'
        else:
            head = (f'non-finite loss or gradient norm on rank(s) {ranks} at {where} '
                    f'(this rank: {values})')
        last = _last_checkpoint(runner)
        msg = (f'Training stopped: {head}. The weights of this iteration are not saved'
               + (f'; the last checkpoint is {last}' if last else '') +
               '. Lower the learning rate, add or tighten gradient clipping '
               '(optim_wrapper.clip_grad) or check the data of this iteration, then '
               'restart (a --resume with the same settings repeats the same iterations).')
        runner.logger.error(msg)
        raise NonFiniteTrainingError(msg)


def _world_size() -> int:
    from mmengine.dist import get_world_size
    return get_world_size()


def _ranks_in_trouble(bad: bool) -> list:
    """The ranks whose iteration went non-finite (all ranks learn every rank's verdict:
    one all-reduce of ``world_size`` flags; no communication in a single process)."""
    from mmengine.dist import all_reduce, get_rank
    world = _world_size()
    if world == 1:
        return [0] if bad else []
    flags = torch.zeros(world, dtype=torch.float32)
    flags[get_rank()] = float(bad)
    all_reduce(flags, op='sum')
    return [i for i, f in enumerate(flags.tolist()) if f > 0]


def _last_checkpoint(runner) -> Optional[str]:
    """The latest checkpoint in the work dir (MMEngine's ``last_checkpoint`` file)."""
    try:
        from mmengine.runner import find_latest_checkpoint
        return find_latest_checkpoint(runner.work_dir)
    except Exception:  # pragma: no cover - best effort for the message only
        return None
