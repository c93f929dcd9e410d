"""Resume a training run exactly where it stopped: the random number generators of
every rank (torch's: drop path, ShuffleMamba's layer shuffle; numpy's and Python's:
mmpretrain's Mixup / CutMix, transforms run in the main process), which MMEngine's
checkpoints do not hold. ``tools/train.py`` adds it to every training run; see
docs/training_and_testing.md (how the training hooks and data checks work).
"""
import logging
import random
from typing import Optional

import numpy as np
import torch
from mmengine import dist
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

KEY = 'rng_state'


def _get_state() -> dict:
    """torch's CPU generator state, the current CUDA device's (the one this rank draws
    on), numpy's and Python's, as tensors and numbers (the safe ``torch.load`` reads
    them)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {'torch': torch.get_rng_state(),
             'numpy': dict(keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                           has_gauss=int(has_gauss), cached=float(cached)),
             'python': dict(version=version, internal=torch.tensor(internal), gauss=gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def _set_state(state: dict) -> None:
    torch.set_rng_state(state['torch'])
    if 'numpy' in state:  # (older checkpoints hold torch's only)
        s = state['numpy']
        np.random.set_state(('MT19937', s['keys'].numpy().astype(np.uint32), s['pos'],
                             s['has_gauss'], s['cached']))
    if 'python' in state:
        s = state['python']
        random.setstate((s['version'], tuple(s['internal'].tolist()), s['gauss']))
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # an older checkpoint: every device's state
            cuda = cuda[min(torch.cuda.current_device(), len(cuda) - 1)]
        torch.cuda.set_rng_state(cuda)


def _own_state(saved: dict) -> dict:
    """This rank's state from a checkpoint's: each rank's own (``'ranks'``, one per
    rank of the run that saved it); with another number of ranks, rank r takes saved
    rank r mod n, said once (the runs' draws then differ from the uninterrupted one's).
    A checkpoint of one state (older ones) gives it to every rank."""
    states = saved.get('ranks')
    rank, world = dist.get_rank(), dist.get_world_size()
    if states is None:  # an older checkpoint: one state
        if world > 1:
            print_log('RNGStateHook: the checkpoint holds one generator state (an older '
                      'version saved rank 0\'s only): every rank continues it, so ranks '
                      'that drew differently (randomness.diff_rank_seed) now draw alike.',
                      logger='current', level=logging.WARNING)
        return saved
    if len(states) != world:
        print_log(f'RNGStateHook: the checkpoint holds the generator states of '
                  f'{len(states)} ranks, this run has {world}: rank r continues saved '
                  f'rank r mod {len(states)}, so the resume is not exact.',
                  logger='current', level=logging.WARNING)
    return states[rank % len(states)]


class _RestoreBeforeFetch:
    """Stands in for an iteration-based loop's data iterator until the fetch of batch
    ``loop.iter`` (the first one after those it replays): calls ``restore`` just
    before it and gives the loop its iterator back."""

    def __init__(self, loop, restore) -> None:
        self._loop, self._iterator = loop, loop.dataloader_iterator
        self._skip, self._restore = loop.iter, restore

    def __iter__(self):
        return self

    def __next__(self):
        if self._skip == 0:
            self._restore()
            self._loop.dataloader_iterator = self._iterator
        self._skip -= 1
        return next(self._iterator)


def _checkpoint_due(runner, by_epoch: bool) -> bool:
    """Whether the runner's CheckpointHook saves at the end of this iteration (or epoch,
    ``by_epoch``): its own rule (interval from ``save_begin``, or the last one)."""
    def due(hook) -> bool:
        if by_epoch:
            return bool(hook.every_n_epochs(runner, hook.interval, hook.save_begin) or
                        (hook.save_last and hook.is_last_train_epoch(runner)))
        return bool(hook.every_n_train_iters(runner, hook.interval, hook.save_begin) or
                    (hook.save_last and hook.is_last_train_iter(runner)))

    return any(due(hook) for hook in runner.hooks
               if isinstance(hook, CheckpointHook) and hook.by_epoch == by_epoch)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save every rank's torch generator states in checkpoints and restore each rank's
    own on resume (ranks draw differently with ``randomness.diff_rank_seed``, and a
    detector's sampling consumes draws by the data). Only rank 0 writes a checkpoint:
    the ranks' states are gathered, on every rank, just before the CheckpointHook saves
    (and before a best checkpoint of a validation)."""

    priority = 'VERY_HIGH'  # before the CheckpointHook (VERY_LOW) at the same point

    def __init__(self) -> None:
        self._pending: Optional[dict] = None
        self._before_val: Optional[dict] = None
        self._gathered: Optional[tuple] = None  # (runner.iter, a state per rank)

    def _gather(self, runner, state: Optional[dict] = None) -> None:
        # a collective where there are ranks: every rank calls it, at the same point
        self._gathered = (runner.iter, dist.all_gather_object(state or _get_state()))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if _checkpoint_due(runner, by_epoch=False):
            self._gather(runner)

    def after_train_epoch(self, runner) -> None:
        if _checkpoint_due(runner, by_epoch=True):
            self._gather(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self._before_val is not None:  # a best checkpoint may follow
            self._gather(runner, self._before_val)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # rank 0 only (Runner.save_checkpoint is master_only)
        if self._gathered is not None and self._gathered[0] == runner.iter:
            states = self._gathered[1]
        else:  # a checkpoint nothing announced: this rank's state (as it was before a
            # validation, which the training continues from)
            states = [self._before_val or _get_state()]
        checkpoint[KEY] = dict(ranks=states)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(KEY)
        # Only a resume continues the generator (load_from starts a new run).
        if state is not None and getattr(runner, '_resume', False):
            self._pending = _own_state(state)

    def before_train_epoch(self, runner) -> None:
        # The saved state was taken before the next batch was fetched; fetching may
        # make a data loader iterator, which draws a seed. An epoch-based loop makes
        # the epoch's after this hook: restore now. An iteration-based loop replays the
        # batches it trained on first (making iterators as it crosses epochs of the
        # data): restore just before it fetches the first new one.
        if self._pending is None:
            return
        loop = runner.train_loop
        if isinstance(loop, EpochBasedTrainLoop):
            self._restore()
        elif isinstance(loop, IterBasedTrainLoop):
            loop.dataloader_iterator = _RestoreBeforeFetch(loop, self._restore)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is not None:  # another kind of loop
            self._restore()

    def _restore(self) -> None:
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
