"""End to end: tools/dist_train.sh with 2 CPU processes (gloo) pretrains the tiny
ShuffleMamba classifier (mmpretrain ImageClassifier, cls token, SLWS, EMA) on the generated
ImageNet-layout set; tools/test.py reports its top-1; the segmentation quickstart config
then fine-tunes from that checkpoint without conversion (raw and EMA weights)."""
import os
import os.path as osp
import re
import subprocess
import sys

import mmengine
import pytest
import torch

from mmplugin_shufflemamba.datasets import generate_synthetic_ade20k, generate_synthetic_imagenet

from helpers.dist import free_port, overrides, run_test_tool
from helpers.tools import ROOT

PRETRAIN = osp.join(ROOT, 'configs', 'quickstart',
                    'shufflemamba-tiny_1xb32-400it_synthetic-in1k-64px.py')
SEGMENT = osp.join(ROOT, 'configs', 'quickstart',
                   'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')


def pretrain_overrides(data_root, iters):
    opts = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'default_hooks.checkpoint.interval={iters}', 'default_hooks.logger.interval=1',
            'model.backbone.num_layers=4', 'model.backbone.embed_dims=32',
            'model.head.in_channels=32', 'param_scheduler.0.end=2',
            'param_scheduler.1.begin=2', f'param_scheduler.1.end={iters}',
            f'param_scheduler.1.T_max={iters - 2}']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={data_root}', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False', f'{loader}.batch_size=4']
    return opts


def run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=900)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
def test_dist_pretrain_then_finetune(tmp_path):
    in1k = str(tmp_path / 'in1k')
    ade = str(tmp_path / 'ade')
    generate_synthetic_imagenet(in1k, num_train=16, num_val=8, size=(64, 64))
    generate_synthetic_ade20k(ade, num_train=8, num_val=4, size=(64, 64))
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1')
    work = str(tmp_path / 'pretrain')
    rc, log = run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), PRETRAIN, '2',
                   '--work-dir', work, '--cfg-options'] + pretrain_overrides(in1k, 4),
                  tmp_path, env)
    assert rc == 0, log[-6000:]
    assert 'Iter(train) [4/4]' in log, log[-3000:]
    assert log.count('process group destroyed') == 2, log[-3000:]
    ckpt = osp.join(work, 'iter_4.pth')
    saved = torch.load(ckpt, map_location='cpu', weights_only=False)
    sd = saved['state_dict']
    # mmpretrain's ImageClassifier layout: the backbone in the official keys, head.fc.
    assert sd['backbone.cls_token'].shape == (1, 1, 32)
    assert sd['backbone.pos_embed'].shape == (1, 8 * 8 + 1, 32)
    assert sd['head.fc.weight'].shape == (4, 32)
    assert 'ema_state_dict' in saved  # EMAHook: state_dict holds the EMA weights

    out = str(tmp_path / 'pred.pkl')
    log = run_test_tool(PRETRAIN, ckpt, tmp_path, env, pretrain_overrides(in1k, 4),
                        ['--out', out, '--show-dir', str(tmp_path / 'vis')])
    m = re.search(r'accuracy/top1: ([0-9.]+)', log)
    assert m, log[-3000:]
    assert 0.0 <= float(m.group(1)) <= 100.0
    preds = mmengine.load(out)  # --out: MMEngine's DumpResults (a pickle)
    assert len(preds) == 8 and preds[0]['pred_score'].shape == (4,), preds[:1]
    painted = list((tmp_path / 'vis').rglob('*.png'))  # --show-dir: mmpretrain's hook
    assert len(painted) == 8, painted

    # Fine-tune the segmentation config from the classifier's checkpoint, as is: the
    # cls token is dropped and the 8x8 position grid resized to 16x16 (128 px, patch 8).
    for use_ema in (False, True):
        env['PORT'] = str(free_port())
        fwork = str(tmp_path / f'finetune_ema{int(use_ema)}')
        rc, log = run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), SEGMENT, '2',
                       '--work-dir', fwork, '--cfg-options'] + overrides(ade, 3) + [
                           'model.backbone.init_cfg.type=Pretrained',
                           f'model.backbone.init_cfg.checkpoint={ckpt}',
                           f'model.backbone.init_cfg.use_ema={use_ema}'],
                      tmp_path, env)
        assert rc == 0, log[-6000:]
        entry = 'state_dict' if use_ema else 'ema_state_dict'
        assert f"entry '{entry}'" in log, log[-3000:]
        assert "format 'shufflemamba'" in log and 'pos_embed (8, 8) -> (16, 16)' in log
        assert 'cls/register tokens 1 -> 0' in log, log[-3000:]
        assert 'Iter(train) [3/3]' in log, log[-3000:]
