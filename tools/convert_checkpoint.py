"""Convert an ImageNet checkpoint (ShuffleMamba, ShuffleMamba-Reg, Vim, VideoMamba)
to this project's ShuffleMamba layout and print what was found.

    python tools/convert_checkpoint.py SRC DST [--format auto|shufflemamba|vim|reg|...]
        [--use-ema] [--num-registers R] [--img-size 224] [--prefix student.backbone.]
    python tools/convert_checkpoint.py SRC DST --to official
    python tools/convert_checkpoint.py SRC DST --to mmpretrain [--use-ema]

``--to official`` / ``--to mmpretrain`` convert a whole classifier (backbone with its
cls token or registers, Reg neck, ``head``) between the official / timm layout
(``{'model': ..., 'args': Namespace(model=...)}``, what ``main_shuffle.py`` writes and
``timm.create_model(..., checkpoint_path=...)`` reads)
and mmpretrain's ``ImageClassifier`` layout (``backbone.*``, ``head.fc.*``; what
``tools/test.py configs/pretrain/<row>.py DST`` evaluates): e.g. the top-1 of an official
or timm checkpoint with mmpretrain's ``Accuracy``.

The raw weights are converted by default (``model`` of an official checkpoint, as the
official downstream code loads them); ``--use-ema`` converts the EMA weights.
``--to official`` keeps both, as the official layout does: the raw weights in ``model``,
the source's EMA weights (if it has any) in ``model_ema``. A
checkpoint that does not say where its cls token sits (a bare state dict with a
(1, 1, D) cls token) needs ``--format shufflemamba`` (cls first) or ``--format vim``.

DST is ``dict(state_dict=..., meta=dict(shufflemamba_format='mmplugin', weights=...,
...))``: the marker tells the loader its layout and which weights it holds. Loading DST
with ``init_cfg=dict(type='Pretrained', checkpoint=DST)`` gives exactly the features
that loading SRC gives.
"""
import argparse
import json
import os.path as osp
import re
import sys
from collections import Counter

import torch

from mmplugin_shufflemamba.models.archs import ARCHS
from mmplugin_shufflemamba.models.classifiers import TIMM_ARCHS
from mmplugin_shufflemamba.checkpoint import (CHECKPOINT_FORMATS, CheckpointError,
                                              NoEMAWeightsError, convert_to_backbone,
                                              describe_state_dict, official_to_mmpretrain,
                                              read_backbone_weights, read_weights)
from mmplugin_shufflemamba.utils.cli import int_at_least, output_file


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src', help='source checkpoint')
    p.add_argument('dst', type=output_file,
                   help='output file (a dict with a "state_dict" entry)')
    p.add_argument('--format', default='auto', choices=CHECKPOINT_FORMATS)
    ema = p.add_mutually_exclusive_group()
    ema.add_argument('--use-ema', dest='use_ema', action='store_true', default=False,
                     help='convert the EMA weights (default: the raw weights)')
    ema.add_argument('--no-ema', dest='use_ema', action='store_false',
                     help='convert the raw weights (the default)')
    p.add_argument('--num-registers', type=int_at_least(0), default=0,
                   help='registers to keep (0 drops cls/register tokens)')
    p.add_argument('--keep-neck', action='store_true',
                   help="with --num-registers R > 0: keep Mamba-Reg's classification "
                   'neck / norm_neck, for a backbone built with cls_reduce > 1')
    p.add_argument('--img-size', type=int_at_least(1, 'an image size in pixels'),
                   default=None,
                   help='resize pos_embed to this resolution (default: keep the grid)')
    p.add_argument('--patch-size', type=int_at_least(1, 'a patch size in pixels'),
                   default=None,
                   help="with --img-size: the patch size that divides it into the new grid "
                   "(default: the checkpoint's)")
    p.add_argument('--prefix', default=None,
                   help="the key prefix of the backbone to convert in a file that holds "
                   "more than one (e.g. 'student.backbone.')")
    p.add_argument('--allow-nonfinite', action='store_true',
                   help='convert weights holding NaN / inf (default: refuse them)')
    p.add_argument('--to', choices=['backbone', 'official', 'mmpretrain'], default='backbone',
                   help="backbone: this project's backbone layout (default); official / "
                   'mmpretrain: the whole classifier in that layout')
    args = p.parse_args(argv)
    if osp.realpath(args.dst) == osp.realpath(args.src) or (
            osp.exists(args.dst) and osp.exists(args.src) and osp.samefile(args.dst, args.src)):
        p.error(f'DST {args.dst} is the source checkpoint: the conversion keeps only the '
                'weights (no optimizer, EMA or args) and would overwrite it; give another '
                'output file')
    if args.to != 'backbone' and (args.num_registers != 0 or args.img_size is not None
                                  or args.patch_size is not None or args.keep_neck):
        p.error('--num-registers, --keep-neck, --img-size and --patch-size apply to --to '
                'backbone only '
                '(a classifier keeps its tokens; the loader resizes the position embedding)')
    if args.to == 'official' and args.use_ema:
        p.error("--to official keeps both weights, as the official layout does: the raw "
                "ones in 'model' and the EMA ones in 'model_ema' (read them with "
                'use_ema=True); drop --use-ema')
    if args.keep_neck and not args.num_registers:
        p.error('--keep-neck keeps the neck that reduces the register tokens: give '
                "--num-registers R (the backbone's) too")
    if args.patch_size is not None and args.img_size is None:
        p.error('--patch-size is used with --img-size only (the patch size that divides '
                'the new resolution into the position grid); give --img-size too')
    if args.img_size is not None and args.patch_size is not None \
            and args.img_size < args.patch_size:
        p.error(f'--img-size {args.img_size} is smaller than --patch-size '
                f'{args.patch_size}: the position grid would be empty')
    if args.img_size is not None and args.patch_size is not None \
            and args.img_size % args.patch_size:
        p.error(f'--img-size {args.img_size} is not a multiple of --patch-size '
                f'{args.patch_size} (the backbone refuses such an img_size)')
    return args


def timm_name(sd, fmt) -> str:
    """The timm factory of a classifier state dict's architecture (``args.model`` of
    the official layout, which also tells the loader where the cls token sits)."""
    info = describe_state_dict(sd)
    for name, arch in TIMM_ARCHS.items():
        size = ARCHS[arch['arch']]
        if (info['depth'], info['embed_dims']) == (size['num_layers'], size['embed_dims']) \
                and (arch.get('num_registers', 0) > 0) == (fmt == 'reg'):
            return name
    return f"shufflemamba_custom_d{info['depth']}_w{info['embed_dims']}"


def ema_pair(args, w):
    """The source's EMA weights beside the raw ones of ``w`` (:func:`read_weights`):
    ``(state dict, entry)``, or ``(None, None)`` where it has none."""
    try:
        ema, ema_entry, _ = read_backbone_weights(
            w.checkpoint, use_ema=True, ckpt_format=w.format,
            allow_nonfinite=args.allow_nonfinite, opt_out='--allow-nonfinite',
            source=args.src)
    except NoEMAWeightsError:
        return None, None
    return (None, None) if ema_entry == w.entry else (ema, ema_entry)


def convert_classifier(args, w):
    sd, entry, fmt = w.state_dict, w.entry, w.format
    if fmt not in ('shufflemamba', 'reg'):
        raise CheckpointError(
            f"{args.src}: a '{fmt}' checkpoint is not a ShuffleMamba classifier layout "
            "(cls token first, or Mamba-Reg registers); only those convert with --to. "
            "A classifier in the official / timm layout (what this project's timm models "
            "save) reads as such with --format shufflemamba or --format reg.")
    if not any(k.startswith('head.') for k in sd):
        raise CheckpointError(f'{args.src} has no classifier head (head.*): it is a '
                              'backbone checkpoint; use --to backbone.')
    meta = dict(shufflemamba_format=fmt, weights=w.weights, source=args.src, entry=entry)
    if args.to == 'official':
        name = timm_name(sd, fmt)
        if w.weights == 'ema':  # in both entries (timm's loader prefers 'model_ema')
            ema, ema_entry = sd, entry
        else:
            ema, ema_entry = ema_pair(args, w)
        meta.update(weights='raw and ema' if ema is not None and w.weights == 'raw' else
                    w.weights, ema_entry=ema_entry)
        torch.save(dict(model=sd, model_ema=ema, args=argparse.Namespace(model=name),
                        meta=meta), args.dst)
        print(f'converted {args.src} -> {args.dst} (official / timm layout, '
              f'args.model={name!r}, {len(sd)} tensors; model_ema: '
              f"{'the EMA weights of ' + repr(ema_entry) if ema is not None else 'none'})")
    else:
        torch.save(dict(state_dict=official_to_mmpretrain(sd), meta=meta), args.dst)
        print(f'converted {args.src} -> {args.dst} (mmpretrain ImageClassifier layout, '
              f'{len(sd)} tensors)')
    print(f"  weights entry: {entry} ({meta['weights']} weights), format {fmt}")
    return meta


def main(argv=None):
    args = parse_args(argv)
    w = read_weights(args.src, prefix=args.prefix, use_ema=args.use_ema,
                     ckpt_format=args.format, allow_nonfinite=args.allow_nonfinite,
                     opt_out='--allow-nonfinite')
    sd, entry, fmt = w.state_dict, w.entry, w.format
    if args.to != 'backbone':
        return convert_classifier(args, w)
    grid = None
    if args.img_size is not None:
        patch = args.patch_size if args.patch_size is not None else int(
            sd.get('patch_embed.proj.weight', torch.empty(0, 0, 16, 16)).shape[-1])
        if args.img_size % patch:
            raise SystemExit(f'--img-size {args.img_size} is not a multiple of the patch '
                             f'size {patch} (the backbone refuses such an img_size): give '
                             f'e.g. --img-size {max(patch, args.img_size // patch * patch)}')
        grid = (args.img_size // patch, args.img_size // patch)
    converted, summary = convert_to_backbone(sd, fmt, args.num_registers, grid,
                                             keep_neck=args.keep_neck,
                                             source_grid=w.grid)
    outside = dict(Counter(k.split('.')[0] for k in summary['outside_backbone']))
    meta = dict(shufflemamba_format='mmplugin', weights=w.weights,
                source=args.src, entry=entry, source_format=summary['format'],
                **{k: v for k, v in summary.items()
                   if k not in ('dropped', 'format', 'outside_backbone')},
                dropped=summary['dropped'], outside_backbone=outside)
    torch.save(dict(state_dict=converted, meta=meta), args.dst)
    print(f'converted {args.src} -> {args.dst}')
    print(f"  weights entry: {entry} ({meta['weights']} weights)")
    print(f"  format detected: {summary['format']}")
    print(f"  arch: depth {summary['depth']}, width {summary['embed_dims']}, patch "
          f"{summary['patch_size']}, norm {summary['norm']}")
    print(f"  cls/register tokens: {summary['checkpoint_tokens']} in checkpoint, "
          f"{summary['kept_tokens']} kept")
    print(f"  pos_embed grid: {summary['grid']} -> {summary['target_grid']}")
    print(f"  dropped: {summary['dropped']}")
    if outside:  # a whole model's file: its backbone is converted, the rest left out
        print(f"  left out (not the backbone): {len(summary['outside_backbone'])} keys, in "
              + ', '.join(f'{k} ({n})' for k, n in outside.items()))
    print('  summary: ' + json.dumps({k: (list(v) if isinstance(v, tuple) else v)
                                      for k, v in meta.items()}))
    return summary


#: the loader's words for its arguments, as this tool's options (the ways to pass a
#: format elsewhere, init_cfg and timm, are left out)
_OPTION_WORDS = ((re.compile(r"prefix= \(init_cfg\) to choose, e\.g\. prefix='([^']*)'"),
                  r'--prefix to choose, e.g. --prefix \1'),
                 (re.compile(r'prefix= \(init_cfg\)'), '--prefix'),
                 (re.compile(r'use_ema=True but'), '--use-ema but'),
                 (re.compile(r'use_ema=False, the default'), '--no-ema, the default'),
                 (re.compile(r'Pass ckpt_format= one of'), 'Pass --format, one of'),
                 (re.compile(r', e\.g\. init_cfg=dict\(.*?--format shufflemamba\.', re.S),
                  '.'),
                 (re.compile(r"ckpt_format='(\w+)'"), r'--format \1'),
                 (re.compile(r'num_registers=(\d+)'), r'--num-registers \1'))


def cli_message(error: BaseException) -> str:
    """The loader's message with its argument names as this tool's options."""
    text = str(error)
    for pattern, words in _OPTION_WORDS:
        text = pattern.sub(words, text)
    return f'tools/convert_checkpoint.py: {text}'


if __name__ == '__main__':
    try:
        main()
    except (CheckpointError, FileNotFoundError) as e:  # the message says why: no traceback
        sys.exit(cli_message(e))
