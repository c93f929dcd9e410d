"""Train a segmentor or detector with MMEngine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--amp [--amp-dtype float16|bfloat16]]
        [--resume [CKPT]] [--cfg-options KEY=VALUE ...]
    tools/dist_train.sh CONFIG GPUS [args]       # torchrun, multi-GPU / multi-node

--amp: on GPUs MMEngine's AmpOptimWrapper (float16 with dynamic loss scaling by default,
or bfloat16); without CUDA bfloat16 CPU autocast (CPUAmpOptimWrapper; float16 is refused
with an explanation). --resume continues a run exactly: weights, optimizer, schedulers,
iteration, and (RNGStateHook) torch's generator, so that a resumed run ends where an
uninterrupted one does.
"""
import argparse
import os

from mmengine.config import DictAction
from mmengine.runner import Runner

import torch

import mmplugin_shufflemamba  # noqa: F401  (registers the backbones)
from mmplugin_shufflemamba.engine.hooks.rng_state_hook import RNGStateHook  # noqa: F401
from mmplugin_shufflemamba.engine.optimizers.amp_optim_wrapper import amp_optim_wrapper_cfg
from mmplugin_shufflemamba.utils import load_config, prepare_runtime
from mmplugin_shufflemamba.utils.runtime import shutdown_distributed


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest checkpoint in the '
                        'work dir when no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision training (GPU: AmpOptimWrapper; CPU: '
                        'bfloat16 autocast)')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'], default=None,
                        help='autocast dtype with --amp (default: float16 with dynamic '
                        'loss scaling on GPUs, bfloat16 on the CPU)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings, e.g. train_cfg.max_iters=10')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if args.amp_dtype is not None and not args.amp:
        parser.error('--amp-dtype needs --amp')
    if args.amp and args.amp_dtype == 'float16' and not torch.cuda.is_available():
        parser.error('--amp --amp-dtype float16 needs a GPU (float16 training needs CUDA\'s '
                     'loss scaler); without CUDA, --amp trains with bfloat16 autocast '
                     '(--amp-dtype bfloat16, the default there)')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def train(args) -> None:
    """Build the Runner and train. The Runner (and the DDP wrapper, which holds the
    process group) is released when this returns."""
    cfg = load_config(args.config, args.launcher, args.work_dir, args.cfg_options)
    if args.amp:
        cuda = torch.cuda.is_available()
        dtype = args.amp_dtype or ('float16' if cuda else 'bfloat16')
        cfg.optim_wrapper = amp_optim_wrapper_cfg(cfg.optim_wrapper, dtype, cuda)
    hooks = list(cfg.get('custom_hooks', None) or [])
    if not any(h.get('type') in ('RNGStateHook', RNGStateHook) for h in hooks):
        cfg.custom_hooks = hooks + [dict(type='RNGStateHook')]
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    prepare_runtime(cfg, args.launcher)
    runner = Runner.from_cfg(cfg)
    runner.train()


def main():
    args = parse_args()
    train(args)
    # A finished distributed job ends its process group while Python is fully alive:
    # otherwise a communication thread can abort the process at exit (SIGABRT; see
    # shutdown_distributed).
    if args.launcher != 'none':
        clean = shutdown_distributed()
        rank = os.environ.get('RANK', '0')
        print(f'[rank {rank}] process group destroyed, '
              f'{"no communication thread left" if clean else "threads still running"}',
              flush=True)


if __name__ == '__main__':
    main()
