"""End to end: tools/dist_train.sh with 2 CPU processes (gloo) trains a tiny UperNet on
the generated ADE20K-layout data, saves a checkpoint; tools/test.py evaluates it."""
import argparse
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image

from mmplugin_shufflemamba.datasets import generate_synthetic_ade20k

from helpers.dist import free_port, overrides, run_test_tool
from helpers.official_reference import make_official_state_dict

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'quickstart',
                  'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')


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


@pytest.mark.slow
def test_dist_train_then_test(tmp_path):
    data_root = str(tmp_path / 'data')
    generate_synthetic_ade20k(data_root, num_train=8, num_val=4, size=(64, 64))
    work = str(tmp_path / 'work')
    # A checkpoint of the wrong depth stops the distributed job (no rank trains from
    # scratch) with the loader's report, printed by the tool (no traceback of it).
    rc, log, _ = dist_train(tmp_path, data_root, str(tmp_path / 'bad'),
                            official_ckpt(tmp_path / 'depth3.pth', depth=3))
    assert rc != 0
    assert 'tools/train.py: ' in log and 'missing in checkpoint' in log, log[-3000:]
    assert 'Fix: build the backbone with' in log and 'raise CheckpointError' not in log
    rc, log, env = dist_train(tmp_path, data_root, work,
                              official_ckpt(tmp_path / 'depth4.pth', depth=4))
    assert rc == 0, log[-6000:]
    assert 'world_size: 2' in log or 'Distributed launcher: pytorch' in log, log[-3000:]
    assert "format 'shufflemamba'" in log and 'all' in log and 'backbone tensors' in log
    assert 'Iter(train) [4/4]' in log, log[-3000:]
    ckpt = osp.join(work, 'iter_4.pth')
    assert osp.isfile(ckpt), os.listdir(work)
    with open(osp.join(work, osp.basename(CONFIG))) as f:  # the config the run dumped
        assert "dist_cfg=dict(backend='gloo')" in f.read()  # what it ran on

    out = tmp_path / 'pred'  # (the training data need not exist for a test)
    log = run_test_tool(CONFIG, ckpt, tmp_path, env, overrides(data_root, 4) +
                        [f'train_dataloader.dataset.data_root={tmp_path / "nowhere"}'],
                        ['--out', str(out), '--show-dir', str(tmp_path / 'vis')])
    m = re.search(r'mIoU: ([0-9.]+)', log)
    assert m, log[-3000:]
    assert 0.0 <= float(m.group(1)) <= 100.0
    # --out: IoUMetric's label PNGs, one per validation image, of the image's size
    pngs = sorted(out.glob('*.png'))
    assert len(pngs) == 4, sorted(out.iterdir())
    assert Image.open(pngs[0]).size == (64, 64)
    painted = list((tmp_path / 'vis').rglob('*.png'))  # --show-dir
    assert len(painted) == 4, painted
    assert 'Load checkpoint from' in log or 'load checkpoint from' in log.lower()
