"""Resume a training run exactly where it stopped: the torch random number generators.

MMEngine's checkpoints hold the weights, optimizer, schedulers and iteration, and on
resume the iteration-based loop replays the data loader up to that iteration (so the
sampler order and the data transforms' numpy / python RNG draws repeat). But the
model's own randomness (drop path, ShuffleMamba's layer shuffle) draws from torch's
generator, which a resumed process restarts from the seed: the continuation differed
from an uninterrupted run. This hook

- saves torch's CPU (and CUDA) generator states into every checkpoint
  (``checkpoint['rng_state']``, tensors only, so the safe ``torch.load`` reads them),
- restores them at the first training iteration after a resume, i.e. after the loop
  replayed the data loader (whose iterator creation draws a seed from torch's
  generator, as it did in the uninterrupted run),
- keeps a validation inside training from moving the training generator (a validation
  data loader draws a seed too, and no validation runs at the resume point of the
  resumed run).

``tools/train.py`` adds it to every training run.
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
        if _in_training(runner):
            self._before_val = _get_state()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            _set_state(self._before_val)
            self._before_val = None


def _in_training(runner) -> bool:
    """Whether the validation runs inside ``runner.train()``."""
    loop = getattr(runner, '_train_loop', None)
    return loop is not None and not isinstance(loop, dict)
