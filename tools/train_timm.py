"""Train / evaluate the ShuffleMamba ImageNet classifiers with timm (DeiT-style loop).

For users who train with timm rather than MMEngine. ``import mmplugin_shufflemamba``
registers ``shufflemamba_{m,b,l1,reg_b,reg_l2}_patch16_224`` in timm; this script builds
them with ``timm.create_model`` and trains with timm's pieces as they are: its transforms
(RandAugment, random erasing), ``Mixup`` / CutMix, soft-target or label-smoothing loss,
``create_optimizer_v2`` (AdamW; the model's ``no_weight_decay()`` names and every 1-D
parameter are exempt from weight decay), ``create_scheduler_v2`` (cosine with linear
warmup), ``ModelEmaV3`` and ``accuracy``. Runs on CPU, or on GPU when one is available.

The data is a folder in the ImageNet layout (``train/<class>/*`` and ``val/<class>/*``,
read with torchvision's ``ImageFolder``); the number of classes is that of ``train/``.

Each epoch (and when ``--max-iters`` stops the run) the raw model and, with
``--model-ema``, its EMA are evaluated on ``val/`` (prints ``top-1 XX.XX top-5 XX.XX``)
and ``<output-dir>/checkpoint.pth`` is written in the official ``main_shuffle.py``
format: ``{'model', 'optimizer', 'lr_scheduler', 'epoch', 'model_ema' (EMA state dict or
None), 'scaler' (GradScaler state with --amp, else None), 'args'}`` with ``args`` an
``argparse.Namespace`` whose ``model`` is the timm model name. The package's loader
recognises the file from ``args.model``: load it into the dense configs with
``init_cfg=dict(type='Pretrained', checkpoint='.../checkpoint.pth')`` (``use_ema=True``
for the EMA weights). ``log.txt`` gets one json line per epoch.

Notes:
    * The learning rate is used as given. The official ``run.sh`` scales it linearly by
      ``batch_size * world_size / 512`` (its ``--lr 5e-4`` is 2e-3 at 8 x 256); here that
      happens only with ``--scale-lr``.
    * The scheduler is stepped per epoch by default (as ``main_shuffle.py``, so the saved
      ``lr_scheduler`` state has the official semantics), with timm's ``step(epoch + 1)``
      after each epoch: epoch ``e`` trains at the schedule's value at ``e``.
      ``--sched-on-updates`` steps it after every iteration instead (smooth warmup).
    * ``--max-iters`` only cuts the run short (smoke runs); the schedule is still laid
      out over ``--epochs``.
    * ``--amp`` is bf16 autocast (CUDA or CPU) with a ``GradScaler``, as the official
      script (its ``NativeScaler`` with ``--amp bfloat16``).
    * Distributed: launched with ``torchrun`` (``RANK`` / ``WORLD_SIZE`` set) it uses
      ``torch.distributed`` (nccl on GPU, gloo on CPU), a ``DistributedSampler`` and DDP;
      evaluation is split over the ranks exactly (no padding) and rank 0 saves.
      ``--batch-size`` is per process.
    * With Pillow >= 13, timm's RandAugment (``--aa rand-m9-mstd0.5-inc1``) can ask
      ``ImageOps.posterize`` for 0 bits, which Pillow now refuses; the script restores
      the older result (a black image) for that case (:func:`patch_timm_posterize`).

Examples:
    CPU smoke run on generated data, a tiny model via ``--model-kwargs`` (about 45 s on
    2 CPU cores; it checks the loop, it is far too short to learn the 4 classes)::

        python -c "from mmplugin_shufflemamba.datasets import generate_synthetic_imagenet; \\
            generate_synthetic_imagenet('data/synthetic_imagenet', 240, 48, size=(64, 64))"
        python tools/train_timm.py --data-path data/synthetic_imagenet --input-size 64 \\
            --model-kwargs embed_dims=64 num_layers=4 patch_size=8 \\
            --batch-size 16 --epochs 2 --warmup-epochs 1 --lr 1e-3 --num-workers 1 \\
            --model-ema --model-ema-decay 0.99 --output-dir work_dirs/timm_smoke

    ShuffleMamba-B on ImageNet-1K, paper recipe (batch 8 x 256 = 2048, lr 1e-3, betas
    (0.9, 0.95), wd 0.1, 300 epochs, 20 warmup epochs, drop path 0.5, shuffle rate 0.5,
    EMA 0.9999, bf16)::

        torchrun --nproc_per_node 8 tools/train_timm.py \\
            --model shufflemamba_b_patch16_224 --data-path /data/imagenet \\
            --batch-size 256 --lr 1e-3 --opt-betas 0.9 0.95 --weight-decay 0.1 \\
            --epochs 300 --warmup-epochs 20 --warmup-lr 1e-6 --min-lr 1e-5 \\
            --drop-path 0.5 --ssr 0.5 --smoothing 0.1 --mixup 0.8 --cutmix 1.0 \\
            --model-ema --model-ema-decay 0.9999 --amp --num-workers 10 \\
            --output-dir work_dirs/shufflemamba_b_in1k

    (the official ``run.sh`` instead: ``--lr 5e-4 --scale-lr --warmup-epochs 30
    --warmup-lr 5e-7 --min-lr 5e-6 --clip-grad 3.0``, the rest as above.)

    Evaluate a checkpoint (raw weights, and the EMA ones when the file has them)::

        python tools/train_timm.py --eval-only --resume work_dirs/.../checkpoint.pth \\
            --model shufflemamba_b_patch16_224 --data-path /data/imagenet

The official ``main_shuffle.py`` also runs with these models once its
``import models_shuffle`` is replaced by ``import mmplugin_shufflemamba``; the model
names differ (``--model shufflemamba_b_patch16_224`` instead of
``mambar_base_patch16_224``). It needs CUDA (``torch.cuda.synchronize``, nccl).
"""
import argparse
import ast
import copy
import datetime
import json
import math
import os
import os.path as osp
import random
import sys
import time
from contextlib import nullcontext

import numpy as np
import timm
import torch
import torch.distributed as dist
import torch.nn as nn
from timm.data import Mixup, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, accuracy, get_state_dict
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

import mmplugin_shufflemamba  # noqa: F401  (registers the shufflemamba_* timm models)
from mmplugin_shufflemamba.checkpoint.safe_load import safe_torch_load
from mmplugin_shufflemamba.utils.cli import int_at_least


def parse_model_kwargs(items):
    """``['embed_dims=64', 'kernel=torch']`` -> ``{'embed_dims': 64, 'kernel': 'torch'}``
    (values through ``ast.literal_eval`` when they parse, else kept as strings)."""
    out = {}
    for item in items or []:
        if '=' not in item:
            raise argparse.ArgumentTypeError(f'--model-kwargs expects KEY=VALUE, got {item!r}')
        key, value = item.split('=', 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def get_args_parser():
    p = argparse.ArgumentParser('ShuffleMamba training with timm (DeiT-style)')
    # Model
    p.add_argument('--model', default='shufflemamba_b_patch16_224', type=str,
                   help='timm model name (a shufflemamba_* one, or any timm model)')
    p.add_argument('--model-kwargs', nargs='*', default=[], metavar='KEY=VALUE',
                   help='extra timm.create_model kwargs, e.g. embed_dims=64 num_layers=4 '
                   'patch_size=8 kernel=torch (values via ast.literal_eval when possible)')
    p.add_argument('--input-size', default=224, type=int_at_least(16, 'pixels'), help='image size')
    p.add_argument('--drop', default=0.0, type=float, help='dropout rate (drop_rate)')
    p.add_argument('--drop-path', default=0.1, type=float, help='drop path rate')
    p.add_argument('--ssr', default=0.1, type=float,
                   help='stochastic layer-wise shuffle rate (shuffle_rate)')
    p.add_argument('--model-ema', action='store_true')
    p.add_argument('--no-model-ema', action='store_false', dest='model_ema')
    p.set_defaults(model_ema=False)
    p.add_argument('--model-ema-decay', default=0.99996, type=float)
    # Optimizer
    p.add_argument('--opt', default='adamw', type=str)
    p.add_argument('--opt-eps', default=1e-8, type=float)
    p.add_argument('--opt-betas', default=None, type=float, nargs='+', metavar='BETA',
                   help='optimizer betas (default: the optimizer default, 0.9 0.999)')
    p.add_argument('--momentum', default=0.9, type=float, help='SGD momentum')
    p.add_argument('--weight-decay', default=0.05, type=float)
    p.add_argument('--clip-grad', default=None, type=float, metavar='NORM',
                   help='clip the gradient norm (default: no clipping)')
    p.add_argument('--lr', default=5e-4, type=float, help='learning rate (used as given)')
    p.add_argument('--scale-lr', action='store_true',
                   help='scale --lr by batch_size * world_size / 512 as the official run.sh')
    # Schedule
    p.add_argument('--sched', default='cosine', type=str)
    p.add_argument('--epochs', default=300, type=int_at_least(1))
    p.add_argument('--max-iters', default=None,
                   type=int_at_least(1, 'a smoke run trains at least one iteration'),
                   help='stop after this many iterations in total (smoke runs)')
    p.add_argument('--warmup-lr', default=1e-6, type=float)
    p.add_argument('--min-lr', default=1e-5, type=float)
    p.add_argument('--warmup-epochs', default=5, type=int_at_least(0))
    p.add_argument('--sched-on-updates', action='store_true',
                   help='step the scheduler every iteration (default: every epoch)')
    # Augmentation
    p.add_argument('--color-jitter', default=0.3, type=float)
    p.add_argument('--aa', default='rand-m9-mstd0.5-inc1', type=str,
                   help='AutoAugment policy ("none" for none)')
    p.add_argument('--train-interpolation', default='bicubic', type=str)
    p.add_argument('--reprob', default=0.25, type=float, help='random erase probability')
    p.add_argument('--remode', default='pixel', type=str)
    p.add_argument('--recount', default=1, type=int)
    p.add_argument('--eval-crop-ratio', default=0.875, type=float)
    p.add_argument('--smoothing', default=0.1, type=float, help='label smoothing')
    p.add_argument('--mixup', default=0.8, type=float, help='mixup alpha (on if > 0)')
    p.add_argument('--cutmix', default=1.0, type=float, help='cutmix alpha (on if > 0)')
    p.add_argument('--cutmix-minmax', default=None, type=float, nargs='+')
    p.add_argument('--mixup-prob', default=1.0, type=float)
    p.add_argument('--mixup-switch-prob', default=0.5, type=float)
    p.add_argument('--mixup-mode', default='batch', type=str)
    # Data / run
    p.add_argument('--data-path', default='data/imagenet', type=str,
                   help='ImageNet folder layout: train/<class>/* and val/<class>/*')
    p.add_argument('--batch-size', default=64, type=int_at_least(1), help='per process')
    p.add_argument('--num-workers', '--num_workers', dest='num_workers',
                   default=min(10, os.cpu_count() or 1), type=int)
    p.add_argument('--output-dir', '--output_dir', dest='output_dir', default='',
                   help='where checkpoint.pth and log.txt go (empty: not saved)')
    p.add_argument('--device', default=None,
                   help='cuda / cpu (default: cuda when available)')
    p.add_argument('--seed', default=0, type=int)
    p.add_argument('--amp', action='store_true', help='bf16 autocast (CUDA or CPU)')
    p.add_argument('--resume', default='', help='checkpoint.pth to resume from')
    p.add_argument('--eval-only', '--eval', dest='eval_only', action='store_true',
                   help='evaluate --resume and exit')
    p.add_argument('--dist-eval', action='store_true',
                   help='accepted for run.sh compatibility; evaluation is always split '
                   'over the ranks')
    p.add_argument('--print-freq', default=10, type=int_at_least(1))
    return p


# ---------------------------------------------------------------- distributed helpers
def init_distributed(args):
    args.world_size = int(os.environ.get('WORLD_SIZE', 1))
    args.rank = int(os.environ.get('RANK', 0))
    args.local_rank = int(os.environ.get('LOCAL_RANK', 0))
    args.distributed = args.world_size > 1
    if args.device is None:
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.device.startswith('cuda'):
        if args.distributed:
            torch.cuda.set_device(args.local_rank)
            args.device = f'cuda:{args.local_rank}'
    if args.distributed:
        dist.init_process_group('nccl' if args.device.startswith('cuda') else 'gloo')


def is_main(args):
    return args.rank == 0


def log(args, *msg):
    if is_main(args):
        print(*msg, flush=True)


class ShardSampler(Sampler):
    """Indices ``rank::world_size``: every sample exactly once over the ranks."""

    def __init__(self, n, rank, world_size):
        self.indices = list(range(n))[rank::world_size]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


# ------------------------------------------------------------------------------- data
def patch_timm_posterize():
    """Let timm's RandAugment run with Pillow >= 13.

    ``PosterizeIncreasing`` of the ``*-inc1`` policies keeps ``4 - int(4 * m / 10)`` bits,
    0 at magnitude 10, which ``rand-m9-mstd0.5`` reaches (the noisy magnitude is clipped
    to 10). Pillow < 13 turned 0 bits into a black image; Pillow 13 raises
    ``ValueError: bits must be between or equal to 1 and 8`` and the data loader dies
    (timm <= 1.0.31 passes 0). Restore the old result for 0 bits, only where Pillow
    refuses it.
    """
    from PIL import Image, ImageOps
    try:
        ImageOps.posterize(Image.new('RGB', (1, 1)), 0)
        return False
    except ValueError:
        pass
    from timm.data import auto_augment
    original = auto_augment.posterize
    if getattr(original, '_zero_bits_patched', False):
        return True

    def posterize(img, bits_to_keep, **kwargs):
        if bits_to_keep <= 0:
            return img.point([0] * 256 * len(img.getbands()))
        return original(img, bits_to_keep, **kwargs)

    posterize._zero_bits_patched = True
    auto_augment.posterize = posterize
    for name, fn in list(auto_augment.NAME_TO_OP.items()):
        if fn is original:
            auto_augment.NAME_TO_OP[name] = posterize
    return True


def build_datasets(args):
    from torchvision.datasets import ImageFolder
    aa = None if args.aa in (None, '', 'none') else args.aa
    if aa:
        patch_timm_posterize()
    train_tf = create_transform(
        args.input_size, is_training=True, color_jitter=args.color_jitter,
        auto_augment=aa, interpolation=args.train_interpolation, re_prob=args.reprob,
        re_mode=args.remode, re_count=args.recount)
    val_tf = create_transform(args.input_size, is_training=False, interpolation='bicubic',
                              crop_pct=args.eval_crop_ratio)
    train = ImageFolder(osp.join(args.data_path, 'train'), transform=train_tf)
    val = ImageFolder(osp.join(args.data_path, 'val'), transform=val_tf)
    if val.classes != train.classes:
        raise ValueError(f'{args.data_path}: val/ classes {val.classes} differ from '
                         f'train/ classes {train.classes}')
    return train, val


# ----------------------------------------------------------------------------- steps
@torch.no_grad()
def evaluate(model, loader, device, autocast, args):
    model.eval()
    # correct@1, correct@5, loss sum, count: summed over the ranks
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    for images, target in loader:
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with autocast():
            output = model(images)
        output = output.float()
        loss = nn.functional.cross_entropy(output, target, reduction='sum')
        acc1, acc5 = accuracy(output, target, topk=(1, 5))
        n = images.shape[0]
        totals += torch.tensor([acc1.item() * n / 100., acc5.item() * n / 100.,
                                loss.item(), n], dtype=torch.float64, device=device)
    if args.distributed:
        dist.all_reduce(totals)
    c1, c5, loss_sum, n = totals.tolist()
    n = max(n, 1)
    return dict(acc1=100. * c1 / n, acc5=100. * c5 / n, loss=loss_sum / n, num=int(n))


def save_checkpoint(args, path, model, optimizer, lr_scheduler, epoch, model_ema, scaler):
    if not (args.output_dir and is_main(args)):
        return
    saved_args = copy.deepcopy(args)
    tmp = path + '.tmp'
    torch.save({
        'model': model.state_dict(),
        'optimizer': optimizer.state_dict(),
        'lr_scheduler': lr_scheduler.state_dict(),
        'epoch': epoch,
        'model_ema': get_state_dict(model_ema) if model_ema is not None else None,
        'scaler': scaler.state_dict() if scaler is not None else None,
        'args': saved_args,
    }, tmp)
    os.replace(tmp, path)


def main(args):
    args.model_kwargs = parse_model_kwargs(args.model_kwargs)
    init_distributed(args)
    device = torch.device(args.device)
    seed = args.seed + args.rank
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    log(args, f'timm {timm.__version__}, torch {torch.__version__}, device {device}, '
        f'world size {args.world_size}')
    log(args, args)

    # ---- data
    dataset_train, dataset_val = build_datasets(args)
    args.nb_classes = len(dataset_train.classes)
    if args.distributed:
        sampler_train = DistributedSampler(dataset_train, num_replicas=args.world_size,
                                           rank=args.rank, shuffle=True, seed=args.seed)
    else:
        sampler_train = RandomSampler(dataset_train)
    sampler_val = ShardSampler(len(dataset_val), args.rank, args.world_size)
    pin = device.type == 'cuda'
    loader_train = DataLoader(dataset_train, sampler=sampler_train,
                              batch_size=args.batch_size, num_workers=args.num_workers,
                              pin_memory=pin, drop_last=True,
                              persistent_workers=args.num_workers > 0)
    loader_val = DataLoader(dataset_val, sampler=sampler_val, batch_size=args.batch_size,
                            num_workers=args.num_workers, pin_memory=pin, drop_last=False)
    iters_per_epoch = len(loader_train)
    if iters_per_epoch == 0 and not args.eval_only:
        raise ValueError(f'{len(dataset_train)} training images over {args.world_size} '
                         f'process(es) do not fill one batch of {args.batch_size}')

    mixup_fn = None
    mixup_active = args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None
    if mixup_active:
        if args.batch_size % 2:
            raise ValueError('Mixup / CutMix need an even --batch-size')
        mixup_fn = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix,
                         cutmix_minmax=args.cutmix_minmax, prob=args.mixup_prob,
                         switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                         label_smoothing=args.smoothing, num_classes=args.nb_classes)

    # ---- model
    create_kwargs = dict(num_classes=args.nb_classes, drop_rate=args.drop,
                         drop_path_rate=args.drop_path, img_size=args.input_size)
    if args.model.startswith('shufflemamba'):
        create_kwargs['shuffle_rate'] = args.ssr
    create_kwargs.update(args.model_kwargs)
    log(args, f'Creating model: {args.model} {create_kwargs}')
    model = timm.create_model(args.model, pretrained=False, **create_kwargs)
    model.to(device)
    model_without_ddp = model
    n_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(args, f'number of params: {n_parameters}')

    model_ema = None
    if args.model_ema:
        # After .to(device), before DDP (as timm / DeiT).
        model_ema = ModelEmaV3(model_without_ddp, decay=args.model_ema_decay)
    if args.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == 'cuda' else None)

    if args.scale_lr:
        args.lr = args.lr * args.batch_size * args.world_size / 512.0
        log(args, f'lr scaled to {args.lr:g} (batch {args.batch_size} x {args.world_size})')
    opt_kwargs = dict(eps=args.opt_eps)
    if args.opt_betas:
        opt_kwargs['betas'] = tuple(args.opt_betas)
    optimizer = create_optimizer_v2(model_without_ddp, opt=args.opt, lr=args.lr,
                                    weight_decay=args.weight_decay,
                                    momentum=args.momentum, **opt_kwargs)
    lr_scheduler, _ = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs,
        warmup_epochs=args.warmup_epochs, warmup_lr=args.warmup_lr, min_lr=args.min_lr,
        step_on_epochs=not args.sched_on_updates,
        updates_per_epoch=max(iters_per_epoch, 1))

    scaler = torch.amp.GradScaler(device.type) if args.amp else None

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if args.amp \
            else nullcontext()

    if mixup_active:
        criterion = SoftTargetCrossEntropy()  # smoothing is in the mixup targets
    elif args.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    else:
        criterion = nn.CrossEntropyLoss()

    # ---- resume / evaluate
    start_epoch = 0
    checkpoint = None
    if args.resume:
        checkpoint = safe_torch_load(args.resume, map_location='cpu')
        model_without_ddp.load_state_dict(checkpoint['model'])
        log(args, f'Loaded the model weights of {args.resume}')
        if not args.eval_only and 'optimizer' in checkpoint:
            optimizer.load_state_dict(checkpoint['optimizer'])
            lr_scheduler.load_state_dict(checkpoint['lr_scheduler'])
            start_epoch = checkpoint['epoch'] + 1
            if model_ema is not None and checkpoint.get('model_ema') is not None:
                model_ema.module.load_state_dict(checkpoint['model_ema'])
            if scaler is not None and checkpoint.get('scaler'):
                scaler.load_state_dict(checkpoint['scaler'])
            lr_scheduler.step(start_epoch)
            lr_scheduler.step_update(start_epoch * iters_per_epoch)
            log(args, f'Resuming at epoch {start_epoch}')

    if args.eval_only:
        if checkpoint is None:
            raise ValueError('--eval-only needs --resume CHECKPOINT')
        stats = evaluate(model_without_ddp, loader_val, device, autocast, args)
        log(args, f"model: top-1 {stats['acc1']:.2f} top-5 {stats['acc5']:.2f} "
            f"loss {stats['loss']:.4f} ({stats['num']} images)")
        if checkpoint.get('model_ema') is not None:
            ema = copy.deepcopy(model_without_ddp)
            ema.load_state_dict(checkpoint['model_ema'])
            stats = evaluate(ema, loader_val, device, autocast, args)
            log(args, f"model_ema: top-1 {stats['acc1']:.2f} top-5 {stats['acc5']:.2f} "
                f"loss {stats['loss']:.4f} ({stats['num']} images)")
        if args.distributed:
            dist.destroy_process_group()
        return

    # ---- train
    if args.output_dir and is_main(args):
        os.makedirs(args.output_dir, exist_ok=True)
    ckpt_path = osp.join(args.output_dir, 'checkpoint.pth') if args.output_dir else ''
    num_updates = start_epoch * iters_per_epoch
    max_iters = args.max_iters
    log(args, f'Start training: epochs {start_epoch}..{args.epochs - 1}, {iters_per_epoch} '
        f'iterations per epoch' + (f', at most {max_iters} iterations' if max_iters else ''))
    start_time = time.time()
    for epoch in range(start_epoch, args.epochs):
        if max_iters is not None and num_updates >= max_iters:
            break
        if isinstance(sampler_train, DistributedSampler):
            sampler_train.set_epoch(epoch)
        model.train()
        loss_sum, grad_norm, steps, t0 = 0.0, None, 0, time.time()
        for step, (samples, targets) in enumerate(loader_train):
            if max_iters is not None and num_updates >= max_iters:
                break
            samples = samples.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if mixup_fn is not None:
                samples, targets = mixup_fn(samples, targets)
            with autocast():
                outputs = model(samples)
            loss = criterion(outputs.float(), targets)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                print(f'Loss is {loss_value} (rank {args.rank}), stopping training',
                      flush=True)
                sys.exit(1)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if args.clip_grad is not None:
                    scaler.unscale_(optimizer)
                    grad_norm = nn.utils.clip_grad_norm_(model.parameters(),
                                                         args.clip_grad).item()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if args.clip_grad is not None:
                    grad_norm = nn.utils.clip_grad_norm_(model.parameters(),
                                                         args.clip_grad).item()
                optimizer.step()
            num_updates += 1
            lr_scheduler.step_update(num_updates=num_updates)  # no-op unless per update
            if model_ema is not None:
                model_ema.update(model_without_ddp, step=num_updates)
            loss_sum += loss_value
            steps += 1
            if step % args.print_freq == 0 or step == iters_per_epoch - 1:
                log(args, f'Epoch [{epoch}] [{step + 1}/{iters_per_epoch}] iter '
                    f'{num_updates} loss {loss_value:.4f} '
                    f"lr {optimizer.param_groups[0]['lr']:.3e}" +
                    (f' grad_norm {grad_norm:.3f}' if grad_norm is not None else '') +
                    f' ({time.time() - t0:.1f}s)')
        train_lr = optimizer.param_groups[0]['lr']
        lr_scheduler.step(epoch + 1)  # no-op when stepped per update

        train_loss = torch.tensor([loss_sum, steps], dtype=torch.float64, device=device)
        if args.distributed:
            dist.all_reduce(train_loss)
        stopped = max_iters is not None and num_updates >= max_iters
        test_stats = evaluate(model_without_ddp, loader_val, device, autocast, args)
        log(args, f"[epoch {epoch}] model: top-1 {test_stats['acc1']:.2f} "
            f"top-5 {test_stats['acc5']:.2f} loss {test_stats['loss']:.4f} "
            f"({test_stats['num']} images)")
        log_stats = dict(epoch=epoch, iters=num_updates,
                         train_loss=(train_loss[0] / train_loss[1].clamp(min=1)).item(),
                         lr=train_lr,
                         **{f'test_{k}': v for k, v in test_stats.items()})
        if model_ema is not None:
            ema_stats = evaluate(model_ema.module, loader_val, device, autocast, args)
            log(args, f"[epoch {epoch}] model_ema: top-1 {ema_stats['acc1']:.2f} "
                f"top-5 {ema_stats['acc5']:.2f} loss {ema_stats['loss']:.4f}")
            log_stats.update({f'test_ema_{k}': v for k, v in ema_stats.items()})
        log_stats['n_parameters'] = n_parameters
        if ckpt_path:
            save_checkpoint(args, ckpt_path, model_without_ddp, optimizer, lr_scheduler,
                            epoch, model_ema, scaler)
            if is_main(args):
                with open(osp.join(args.output_dir, 'log.txt'), 'a') as f:
                    f.write(json.dumps(log_stats) + '\n')
        if stopped:
            log(args, f'Stopped after --max-iters {max_iters} iterations')
            break

    total = str(datetime.timedelta(seconds=int(time.time() - start_time)))
    log(args, f'Training time {total}' + (f'; saved {ckpt_path}' if ckpt_path else ''))
    if args.distributed:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == '__main__':
    main(get_args_parser().parse_args())
