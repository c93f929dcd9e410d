"""The end-to-end training tests' shared pieces (test_dist_train, test_dist_pretrain,
test_dist_train_detection): a free port, the tiny segmentation quickstart's overrides and
a tools/test.py run."""
import os.path as osp
import socket
import subprocess
import sys

from helpers.tools import ROOT


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def overrides(data_root, iters):
    """--cfg-options shrinking the segmentation quickstart config to a few iterations of a
    4-block, width-32 model on ``data_root``."""
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


def run_test_tool(config, ckpt, tmp_path, env, cfg_options):
    """Run tools/test.py on a checkpoint in ``tmp_path``; return its log (exit 0 checked)."""
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'test.py'), config, ckpt, '--work-dir',
           str(tmp_path / 'test'), '--cfg-options'] + cfg_options
    run = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=600)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-6000:]
    return log
