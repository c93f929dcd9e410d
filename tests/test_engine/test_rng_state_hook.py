"""RNGStateHook with two ranks (gloo, two processes): each rank resumes its own
generator, although only rank 0 writes the checkpoint."""
import random

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from mmengine.hooks import CheckpointHook
from mmengine.model import BaseModel
from mmengine.runner import Runner

from mmplugin_shufflemamba.checkpoint.safe_load import enable_mmengine_checkpoints
from mmplugin_shufflemamba.engine.hooks.rng_state_hook import KEY, RNGStateHook

from helpers.dist import free_port
from helpers.logs import captured_log


class _Runner:
    """What the hooks read of MMEngine's Runner in an iteration-based run."""

    def __init__(self, hooks, it, max_iters=8):
        self.hooks, self.iter, self.max_iters, self.epoch = hooks, it, max_iters, 0
        self._resume, self._train_loop = True, None


def _draws():
    return torch.rand(4)


def _two_ranks(rank, port, out):
    torch_dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                                  rank=rank, world_size=2)
    try:
        torch.manual_seed(100 + rank)  # randomness.diff_rank_seed: a seed per rank
        hook, ckpt_hook = RNGStateHook(), CheckpointHook(interval=2, by_epoch=False)
        runner = _Runner([hook, ckpt_hook], it=0)
        hook.after_train_iter(runner, 0)  # iteration 1: no checkpoint, no collective
        assert hook._gathered is None
        runner.iter = 1
        hook.after_train_iter(runner, 1)  # iteration 2: the CheckpointHook saves
        checkpoint = {}
        if rank == 0:  # Runner.save_checkpoint runs on rank 0 only
            hook.before_save_checkpoint(runner, checkpoint)
        expected = _draws()  # what each rank draws after the checkpoint
        saved = [checkpoint]
        torch_dist.broadcast_object_list(saved, src=0)  # every rank reads the file
        torch.manual_seed(7)  # a fresh process: another state
        resumed = RNGStateHook()
        resumed.after_load_checkpoint(runner, saved[0])
        resumed.before_train_iter(runner, 2)
        got = _draws()
        torch.save(dict(expected=expected, got=got, saved=saved[0]), f'{out}.{rank}')
    finally:
        torch_dist.destroy_process_group()


def test_every_rank_resumes_its_own_generator(tmp_path):
    out = str(tmp_path / 'draws')
    mp.start_processes(_two_ranks, args=(free_port(), out), nprocs=2, start_method='fork')
    r0, r1 = (torch.load(f'{out}.{r}', weights_only=False) for r in (0, 1))
    assert torch.equal(r0['expected'], r0['got']) and torch.equal(r1['expected'], r1['got'])
    assert not torch.equal(r0['got'], r1['got'])  # the ranks draw differently
    assert len(r0['saved'][KEY]['ranks']) == 2


def test_one_process_resumes_and_warns_for_another_world_size():
    torch.manual_seed(3)
    hook = RNGStateHook()
    runner = _Runner([hook, CheckpointHook(interval=1, by_epoch=False)], it=0)
    checkpoint = {}
    hook.after_train_iter(runner, 0)
    hook.before_save_checkpoint(runner, checkpoint)
    expected = _draws()
    assert len(checkpoint[KEY]['ranks']) == 1
    for saved, warned in ((checkpoint[KEY], False),
                          (dict(ranks=checkpoint[KEY]['ranks'] * 2), True),
                          (checkpoint[KEY]['ranks'][0], False)):  # one state, as before
        torch.manual_seed(9)
        resumed = RNGStateHook()
        with captured_log() as lines:
            resumed.after_load_checkpoint(runner, {KEY: saved})
        resumed.before_train_iter(runner, 1)
        assert torch.equal(_draws(), expected)
        assert any('holds the generator states of 2 ranks, this run has 1' in line
                   for line in lines) == warned, lines


def test_load_from_does_not_continue_the_generator():
    torch.manual_seed(3)
    checkpoint = {}
    RNGStateHook().before_save_checkpoint(_Runner([], it=0), checkpoint)
    expected = _draws()
    runner = _Runner([], it=0)
    runner._resume = False
    hook = RNGStateHook()
    hook.after_load_checkpoint(runner, checkpoint)
    hook.before_train_iter(runner, 0)
    assert not torch.equal(_draws(), expected)


class _Noisy(BaseModel):
    """A model that draws from torch's generator in training, as drop path and the
    layer shuffle do, and from numpy's and Python's, as mmpretrain's Mixup / CutMix."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4))

    def forward(self, x, mode='loss'):
        if mode == 'loss':
            noise = torch.rand(4) + np.random.rand() + random.random()
            return dict(loss=((self.w - noise) ** 2).sum())
        return [x]


class _Data(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return dict(x=torch.tensor(float(i)))


def _train(work, by_epoch, hook=True, resume=None):
    enable_mmengine_checkpoints()  # (as the tools do: MMEngine's loader reads its files)
    train_cfg = dict(by_epoch=True, max_epochs=3) if by_epoch else dict(
        by_epoch=False, max_iters=6)
    runner = Runner(
        model=_Noisy(), work_dir=str(work), experiment_name=f'{work.name}_{by_epoch}',
        train_dataloader=dict(dataset=_Data(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True, seed=0)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), train_cfg=train_cfg,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2,
                                           by_epoch=by_epoch)),
        custom_hooks=[dict(type='RNGStateHook')] if hook else [],
        randomness=dict(seed=0), resume=resume is not None, load_from=resume,
        log_level='ERROR')
    runner.train()
    return runner.model.w.detach().clone()


@pytest.mark.parametrize('by_epoch', [True, False])
def test_resume_continues_the_generator_in_both_loops(tmp_path, by_epoch):
    """Epoch-based (the pretraining configs: resumed at an epoch start, where the
    epoch's data loader iterator draws a seed) and iteration-based runs resumed from
    their checkpoint end as the uninterrupted run; without the hook they do not."""
    full = _train(tmp_path / 'full', by_epoch)
    ckpt = str(tmp_path / 'full' / ('epoch_2.pth' if by_epoch else 'iter_2.pth'))
    assert torch.equal(_train(tmp_path / 'resumed', by_epoch, resume=ckpt), full)
    assert not torch.equal(_train(tmp_path / 'control', by_epoch, hook=False, resume=ckpt),
                           full)
