"""Train a segmentor or detector with MMEngine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--amp [--amp-dtype float16|bfloat16]]
        [--resume [CKPT]] [--auto-scale-lr] [--allow-partial-load] [--allow-nonfinite-checkpoint]
        [--no-finite-check] [--cfg-options KEY=VALUE ...]
    tools/dist_train.sh CONFIG GPUS [args]       # torchrun, multi-GPU / multi-node

--amp: on GPUs MMEngine's AmpOptimWrapper (float16 with dynamic loss scaling by default,
or bfloat16); without CUDA bfloat16 CPU autocast (CPUAmpOptimWrapper; float16 is refused
with an explanation). --resume continues a run: weights, optimizer, schedulers,
iteration, the seed it was trained with (where the config fixes none) and
(RNGStateHook) every rank's torch, numpy and Python generators, so that a resumed run
ends where an uninterrupted one does; docs/training_and_testing.md says where it cannot
(data workers kept across epochs).

Loading is strict: before training, every rank compares the checkpoint of --resume or of
the config's ``load_from`` with the model (keys and shapes) and refuses NaN / inf
weights; a checkpoint that does not fit stops the run (exit status 1) with a short report
(missing / unexpected keys and mismatched shapes by module, and the experiment the file
came from). --allow-partial-load loads what fits and says what was not loaded;
--allow-nonfinite-checkpoint loads NaN / inf weights.

Training stops at the first non-finite loss or gradient norm (FiniteLossHook, added to
every run; exit status 1, the iteration and the loss values in the message, nothing saved
for that iteration): --no-finite-check, or ``finite_check = False`` in the config, turns
it off.
"""
import argparse
import os
import sys

from mmengine.config import DictAction

import torch

import mmplugin_shufflemamba  # noqa: F401  (registers the backbones)
from mmplugin_shufflemamba.engine.optimizers.amp_optim_wrapper import amp_optim_wrapper_cfg
from mmplugin_shufflemamba.checkpoint import check_runner_checkpoint
from mmplugin_shufflemamba.utils import (STOP_ERRORS, add_training_hooks, apply_resume,
                                         build_runner, check_run_values,
                                         enable_auto_scale_lr, load_config,
                                         log_kernels, prepare_runtime, resume_seed,
                                         shutdown_distributed, stop_message,
                                         warn_random_backbone)
from mmplugin_shufflemamba.utils.cli import existing_file, key_value


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', type=existing_file('config file'),
                        help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', nargs='?', const='auto',
                        type=existing_file('checkpoint', allow_uri=True, keep=('auto', )),
                        help='resume from CKPT, or from the latest checkpoint in the '
                        'work dir when no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision training (GPU: AmpOptimWrapper; CPU: '
                        'bfloat16 autocast)')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'], default=None,
                        help='autocast dtype with --amp (default: float16 with dynamic '
                        'loss scaling on GPUs, bfloat16 on the CPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help="scale the learning rates by the run's total batch (GPUs x "
                        'batch_size) over auto_scale_lr.base_batch_size, the batch the '
                        "config's rates are for (MMEngine's linear scaling rule)")
    parser.add_argument('--allow-partial-load', action='store_true',
                        help='load a checkpoint (--resume, load_from) that does not fit '
                        'the model: what fits is loaded, the rest keeps its '
                        'initialisation and is listed (default: stop with a report)')
    parser.add_argument('--allow-nonfinite-checkpoint', action='store_true',
                        help='load a checkpoint whose weights hold NaN / inf (default: '
                        'stop with a report)')
    parser.add_argument('--no-finite-check', action='store_true',
                        help='do not stop at the first NaN / inf loss or gradient norm '
                        '(FiniteLossHook; also: finite_check = False in the config)')
    parser.add_argument('--cfg-options', nargs='+', type=key_value, action=DictAction,
                        metavar='KEY=VALUE',
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
        cfg.optim_wrapper = amp_optim_wrapper_cfg(cfg.optim_wrapper, dtype, cuda,
                                                  cfg.get('default_scope'))
    if args.auto_scale_lr:
        enable_auto_scale_lr(cfg)
    check_run_values(cfg)
    add_training_hooks(cfg, finite_check=not args.no_finite_check)
    apply_resume(cfg, args.resume)
    resume_seed(cfg)
    warn_random_backbone(cfg)
    prepare_runtime(cfg, args.launcher)
    runner = build_runner(cfg)
    log_kernels()
    # On every rank, before anything trains: the checkpoint must fit the model.
    check_runner_checkpoint(runner, allow_partial=args.allow_partial_load,
                            allow_nonfinite=args.allow_nonfinite_checkpoint)
    runner.train()


def main():
    args = parse_args()
    try:
        train(args)
    except STOP_ERRORS as e:  # a check stopped the run: its report, no traceback
        sys.exit(stop_message(e, 'tools/train.py'))
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
