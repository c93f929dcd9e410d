"""Train a segmentor or detector with MMEngine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]]
    tools/dist_train.sh CONFIG GPUS [args]       # torchrun, multi-GPU / multi-node
"""
import argparse
import os

from mmengine.config import DictAction
from mmengine.runner import Runner

import mmplugin_shufflemamba  # noqa: F401  (registers the backbones)
from mmplugin_shufflemamba.utils import load_config, prepare_runtime


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest checkpoint in the '
                        'work dir when no path is given')
    parser.add_argument('--amp', action='store_true', help='mixed precision training')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings, e.g. train_cfg.max_iters=10')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main():
    args = parse_args()
    cfg = load_config(args.config, args.launcher, args.work_dir, args.cfg_options)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    prepare_runtime(cfg, args.launcher)
    runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
