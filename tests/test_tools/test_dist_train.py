"""End to end: tools/dist_train.sh with 2 CPU processes (gloo) trains a tiny UperNet on
the generated ADE20K-layout data, saves a checkpoint; tools/test.py evaluates it."""
import argparse
import os
import os.path as osp
import re
import socket
import subprocess
import sys

import pytest
import torch

from mmplugin_shufflemamba.datasets import generate_synthetic_ade20k

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'test_models',
                            'test_utils'))
from official_reference import make_official_state_dict  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'quickstart',
                  'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def overrides(data_root, iters):
    opts = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'default_hooks.checkpoint.interval={iters}',
            'default_hooks.logger.interval=1',
            'model.backbone.num_layers=4', 'model.backbone.embed_dims=32',
            'model.backbone.out_indices=[0,1,2,3]',
            'model.decode_head.in_channels=[32,32,32,32]',
            'model.auxiliary_head.in_channels=32', 'param_scheduler.0.end=2',
            'param_scheduler.1.begin=2', f'param_scheduler.1.end={iters}']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={data_root}', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False', f'{loader}.batch_size=2']
    return opts


def official_ckpt(path, depth):
    """An official-layout ImageNet checkpoint for the tiny backbone (patch 8, 128 px)."""
    sd = make_official_state_dict(depth=depth, dim=32, grid=16, patch=8)
    args = argparse.Namespace(model='mambar_base_patch16_224')  # official: cls in front
    torch.save(dict(model=sd, model_ema=None, epoch=1, args=args), path)
    return str(path)


def dist_train(tmp_path, data_root, work, ckpt):
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
               OMP_NUM_THREADS='1')
    cmd = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), CONFIG, '2',
           '--work-dir', work, '--cfg-options'] + overrides(data_root, 4) + [
               'model.backbone.init_cfg.type=Pretrained',
               f'model.backbone.init_cfg.checkpoint={ckpt}']
    run = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=900)
    return run.returncode, run.stdout + run.stderr, env


def run_test_tool(config, ckpt, tmp_path, env, cfg_options):
    """Run tools/test.py on a checkpoint in ``tmp_path``; return its log (exit 0 checked)."""
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'test.py'), config, ckpt, '--work-dir',
           str(tmp_path / 'test'), '--cfg-options'] + cfg_options
    run = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=600)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-6000:]
    return log


@pytest.mark.slow
def test_dist_train_then_test(tmp_path):
    data_root = str(tmp_path / 'data')
    generate_synthetic_ade20k(data_root, num_train=8, num_val=4, size=(64, 64))
    work = str(tmp_path / 'work')
    # A checkpoint of the wrong depth stops the distributed job (no rank trains from
    # scratch) with the loader's report.
    rc, log, _ = dist_train(tmp_path, data_root, str(tmp_path / 'bad'),
                            official_ckpt(tmp_path / 'depth3.pth', depth=3))
    assert rc != 0
    assert 'CheckpointError' in log and 'missing in checkpoint' in log, log[-3000:]
    rc, log, env = dist_train(tmp_path, data_root, work,
                              official_ckpt(tmp_path / 'depth4.pth', depth=4))
    assert rc == 0, log[-6000:]
    assert 'world_size: 2' in log or 'Distributed launcher: pytorch' in log, log[-3000:]
    assert "format 'shufflemamba'" in log and 'all' in log and 'backbone tensors' in log
    assert 'Iter(train) [4/4]' in log, log[-3000:]
    ckpt = osp.join(work, 'iter_4.pth')
    assert osp.isfile(ckpt), os.listdir(work)

    log = run_test_tool(CONFIG, ckpt, tmp_path, env, overrides(data_root, 4))
    m = re.search(r'mIoU: ([0-9.]+)', log)
    assert m, log[-3000:]
    assert 0.0 <= float(m.group(1)) <= 100.0
    assert 'Load checkpoint from' in log or 'load checkpoint from' in log.lower()
