"""End to end: a 2-process CPU run (gloo) whose ranks draw with their own seeds
(``randomness.diff_rank_seed``) resumed from its iteration-2 checkpoint ends like the
uninterrupted run, because each rank resumes its own generator (RNGStateHook)."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmplugin_shufflemamba.datasets import generate_synthetic_ade20k

from helpers.dist import free_port, overrides
from helpers.tools import ROOT, tool_path

CONFIG = osp.join(ROOT, 'configs', 'quickstart',
                  'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')


def dist_train(work, data_root, extra=()):
    opts = overrides(data_root, 4) + [
        'default_hooks.checkpoint.interval=2', 'default_hooks.checkpoint.max_keep_ckpts=-1',
        'randomness.diff_rank_seed=True', 'train_dataloader.sampler.seed=0',
        'model.backbone.shuffle_rate=0.9', 'model.backbone.drop_path_rate=0.3']
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1')
    run = subprocess.run(['bash', tool_path('dist_train.sh'), CONFIG, '2', '--work-dir',
                          str(work), *extra, '--cfg-options'] + opts, cwd=str(work.parent),
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    return torch.load(str(work / 'iter_4.pth'), map_location='cpu', weights_only=False)


def resume(tmp_path, name, data_root, ckpt):
    work = tmp_path / name
    work.mkdir()
    torch.save(ckpt, work / 'iter_2.pth')
    return dist_train(work, data_root, ['--resume', str(work / 'iter_2.pth')])


@pytest.mark.slow
def test_two_rank_resume_with_a_seed_per_rank_is_exact(tmp_path):
    data_root = str(tmp_path / 'data')
    generate_synthetic_ade20k(data_root, num_train=8, num_val=4, size=(64, 64))
    full = dist_train(tmp_path / 'full', data_root)
    ckpt = torch.load(str(tmp_path / 'full' / 'iter_2.pth'), map_location='cpu',
                      weights_only=False)
    assert len(ckpt['rng_state']['ranks']) == 2
    resumed = resume(tmp_path, 'resumed', data_root, ckpt)
    for k, v in full['state_dict'].items():
        assert torch.equal(v, resumed['state_dict'][k]), k
    # Control: every rank resumed with rank 0's generator (what a checkpoint of one
    # state gives) ends elsewhere.
    ckpt['rng_state'] = ckpt['rng_state']['ranks'][0]
    control = resume(tmp_path, 'control', data_root, ckpt)
    assert any(not torch.equal(v, control['state_dict'][k])
               for k, v in full['state_dict'].items())
