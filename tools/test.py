"""Evaluate a checkpoint with the framework's own metrics (mIoU, box/mask AP).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out-dir DIR]
    tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]
"""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction
from mmengine.runner import Runner

import mmplugin_shufflemamba  # noqa: F401  (registers the backbones)
from mmplugin_shufflemamba.utils import load_config, prepare_runtime


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--show-dir', help='directory where painted predictions '
                        'are saved (mmseg/mmdet visualization hook)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main():
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint file not found: {args.checkpoint}')
    cfg = load_config(args.config, args.launcher, args.work_dir, args.cfg_options)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        hooks = cfg.default_hooks
        if 'visualization' in hooks:
            hooks.visualization.draw = True
            hooks.visualization.interval = 1
            hooks.visualization['show'] = False
            cfg.visualizer.setdefault('vis_backends', [dict(type='LocalVisBackend')])
            cfg.visualizer['save_dir'] = args.show_dir
    prepare_runtime(cfg, args.launcher)
    runner = Runner.from_cfg(cfg)
    runner.test()


if __name__ == '__main__':
    main()
