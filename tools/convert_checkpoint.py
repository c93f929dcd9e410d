"""Convert an ImageNet checkpoint (ShuffleMamba, ShuffleMamba-Reg, Vim, VideoMamba)
to this project's ShuffleMamba layout and print what was found.

    python tools/convert_checkpoint.py SRC DST [--format auto|shufflemamba|vim|reg|...]
        [--use-ema] [--num-registers R] [--img-size 224]

The raw weights are converted by default (``model`` of an official checkpoint, as the
official downstream code loads them); ``--use-ema`` converts the EMA weights. A
checkpoint that does not say where its cls token sits (a bare state dict with a
(1, 1, D) cls token) needs ``--format shufflemamba`` (cls first) or ``--format vim``.

DST is ``dict(state_dict=..., meta=dict(shufflemamba_format='mmplugin', weights=...,
...))``: the marker tells the loader its layout and which weights it holds. Loading DST
with ``init_cfg=dict(type='Pretrained', checkpoint=DST)`` gives exactly the features
that loading SRC gives.
"""
import argparse
import json

import torch

from mmplugin_shufflemamba.models.utils import (CHECKPOINT_FORMATS, convert_to_backbone,
                                                read_backbone_weights)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src', help='source checkpoint')
    p.add_argument('dst', help='output file (a dict with a "state_dict" entry)')
    p.add_argument('--format', default='auto', choices=CHECKPOINT_FORMATS)
    ema = p.add_mutually_exclusive_group()
    ema.add_argument('--use-ema', dest='use_ema', action='store_true', default=False,
                     help='convert the EMA weights (default: the raw weights)')
    ema.add_argument('--no-ema', dest='use_ema', action='store_false',
                     help='convert the raw weights (the default)')
    p.add_argument('--num-registers', type=int, default=0,
                   help='registers to keep (0 drops cls/register tokens)')
    p.add_argument('--img-size', type=int, default=None,
                   help='resize pos_embed to this resolution (default: keep the grid)')
    p.add_argument('--patch-size', type=int, default=None)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    sd, entry, fmt = read_backbone_weights(args.src, use_ema=args.use_ema,
                                           ckpt_format=args.format)
    grid = None
    if args.img_size is not None:
        patch = args.patch_size or int(sd.get('patch_embed.proj.weight',
                                              torch.empty(0, 0, 16, 16)).shape[-1])
        grid = (args.img_size // patch, args.img_size // patch)
    converted, summary = convert_to_backbone(sd, fmt, args.num_registers, grid)
    meta = dict(shufflemamba_format='mmplugin', weights='ema' if args.use_ema else 'raw',
                source=args.src, entry=entry, source_format=summary['format'],
                **{k: v for k, v in summary.items() if k not in ('dropped', 'format')},
                dropped=summary['dropped'])
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
    print('  summary: ' + json.dumps({k: (list(v) if isinstance(v, tuple) else v)
                                      for k, v in meta.items()}))
    return summary


if __name__ == '__main__':
    main()
