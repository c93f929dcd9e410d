"""Resume a training run exactly where it stopped: the torch random number generators
(drop path, ShuffleMamba's layer shuffle), which MMEngine's checkpoints do not hold.
``tools/train.py`` adds it to every training run; see docs/training_and_testing.md (how the
training hooks and data checks work).
"""
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

KEY = 'rng_state'


def _get_state() -> dict:
    state = {'torch': torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_state(state: dict) -> None:
    torch.set_rng_state(state['torch'])
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:  # another number of GPUs: the current device's generator only
            torch.cuda.set_rng_state(cuda[min(torch.cuda.current_device(), len(cuda) - 1)])


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save torch's generator states in checkpoints and restore them on resume."""

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._pending: Optional[dict] = None
        self._before_val: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[KEY] = _get_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(KEY)
        # Only a resume continues the generator (load_from starts a new run).
        if state is not None and getattr(runner, '_resume', False):
            self._pending = state

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is not None:
            _set_state(self._pending)
            self._pending = None

    def before_val(self, runner) -> None:
        loop = getattr(runner, '_train_loop', None)
        if loop is not None and not isinstance(loop, dict):  # validation inside train()
            self._before_val = _get_state()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            _set_state(self._before_val)
            self._before_val = None
