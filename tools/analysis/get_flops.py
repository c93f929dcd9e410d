"""Parameters and FLOPs of a config's model, counted with MMEngine's ``FlopAnalyzer``.

    python tools/analysis/get_flops.py CONFIG [--shape H W] [--device cpu|cuda]
        [--cfg-options ...] [--json out.json]

Prints three counts (one fused multiply-add = one flop, as MMEngine counts):

- ``paper``: the paper's convention (Table 3 GFLOPs, at 512 x 2048): MMEngine's count
  of the official code, whose fused mamba kernel hides each mixer's causal conv,
  ``x_proj``, ``dt_proj`` and selective scan from the tracer;
- ``mmengine``: MMEngine's count of this implementation without extra handles (each
  mixer after ``in_proj`` is one opaque autograd function, ``BiMambaInnerFn``);
- ``total``: with this package's handles for the mixer function (convs, projections,
  scans, ``out_proj``), mmcv's deformable attention and RMSNorm (every multiply-add).

The counting lives in :mod:`mmplugin_shufflemamba.utils.flops`.
"""
import argparse
import json
import sys

from mmengine.config import DictAction

import mmplugin_shufflemamba  # noqa: F401  (registers the backbones)
from mmplugin_shufflemamba.utils import STOP_ERRORS, load_config, stop_message
from mmplugin_shufflemamba.utils.flops import HANDLED, model_complexity
from mmplugin_shufflemamba.utils.cli import (device as device_arg, existing_file,
                                             int_at_least, key_value, output_file)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', type=existing_file('config file'), help='config file')
    p.add_argument('--shape', type=int_at_least(1, 'pixels'), nargs='+', default=[512, 2048],
                   help='input H W (or one size for a square); default 512 2048')
    p.add_argument('--device', type=device_arg, default='cpu',
                   help="'cpu' (default) or 'cuda'")
    p.add_argument('--cfg-options', nargs='+', type=key_value, action=DictAction,
                   metavar='KEY=VALUE', help='override settings in the config')
    p.add_argument('--json', type=output_file, help='also write the figures to this file')
    args = p.parse_args(argv)
    if len(args.shape) not in (1, 2):
        p.error('--shape takes H W or one size')
    return args


def gflops(flops: float) -> str:
    """One decimal, as the paper; three significant digits below 1 GFLOP (tiny models)."""
    g = flops / 1e9
    return f'{g:.1f}' if g >= 1 or g == 0 else f'{g:.3g}'


def main(argv=None):
    args = parse_args(argv)
    try:  # a config, checkpoint or argument check (the backbone's): its message
        cfg = load_config(args.config, cfg_options=args.cfg_options)
        res = model_complexity(cfg, args.shape, args.device)
    except STOP_ERRORS as e:
        sys.exit(stop_message(e, 'tools/analysis/get_flops.py'))
    except (MemoryError, RuntimeError) as e:  # torch's allocators say so in RuntimeErrors
        if not isinstance(e, MemoryError) and not any(
                words in str(e) for words in ("can't allocate memory", 'out of memory')):
            raise
        sys.exit(f'tools/analysis/get_flops.py: --shape {" ".join(map(str, args.shape))} '
                 f'does not fit in memory ({str(e).splitlines()[0][:120]}): give a '
                 'smaller shape.')
    H, W = res['shape']
    line = '=' * 60
    print(line)
    print(f'config: {args.config}')
    print(f'input shape: (1, 3, {H}, {W})  [{res["framework"]}]')
    print(f'params: {res["params"] / 1e6:.2f} M (the whole model, every head included)')
    print(f'GFLOPs (paper convention):            {gflops(res["paper"])}')
    print(f'GFLOPs (MMEngine, no extra handles):  {gflops(res["mmengine"])}')
    print(f'GFLOPs (with scan/conv/deform handles): {gflops(res["total"])}')
    ops = res['by_operator']
    print('by operator (GFLOPs): ' + ', '.join(
        f'{k} {gflops(v)}' for k, v in sorted(ops.items(), key=lambda kv: -kv[1])))
    print('handled here: ' + ', '.join(f'{k} {gflops(ops.get(k, 0))}' for k in HANDLED))
    if res['unsupported']:
        print('not counted (elementwise or unknown): ' + ', '.join(
            f'{k} x{n}' for k, n in sorted(res['unsupported'].items())))
    print(line)
    if args.json:
        out = dict(config=args.config, shape=[H, W], params=res['params'],
                   gflops_paper=res['paper'] / 1e9, gflops_mmengine=res['mmengine'] / 1e9,
                   gflops_total=res['total'] / 1e9,
                   by_operator={k: v for k, v in ops.items()})
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=2)
    return res


if __name__ == '__main__':
    main()
