"""Time the compiled CPU kernels (selective scan, causal conv) on every code path.

    python tools/analysis/benchmark_cpu_kernels.py [--dim 1536] [--len 1024]
        [--dstate 16] [--batch 1] [--layout token|channel] [--reps 20]
        [--paths auto generic avx2 avx512] [--json FILE]

The default shape is one direction of one layer of ShuffleMamba-B at 512x512 (d_inner
1536, 1024 tokens, d_state 16), in the mixer's token-major layout. Per code path it
prints the median time of the scan forward, the scan backward, and the conv forward
and backward (float32). Paths the build or the CPU lacks are skipped. On an extension
built before run-time dispatch existed, the single built path is timed as 'build'.
"""
import argparse
import json
import statistics
import time

import torch

from mmplugin_shufflemamba.ops.build_flags import ISA_FLAGS_X86
from mmplugin_shufflemamba.utils.cli import int_at_least


def median_time(fn, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_inputs(batch, dim, length, dstate, layout, seed=0):
    g = torch.Generator().manual_seed(seed)

    def bdl(scale=1.0):
        t = torch.randn(batch, dim, length, generator=g) * scale
        if layout == 'token':
            t = t.transpose(1, 2).contiguous().transpose(1, 2)
        return t

    return dict(u=bdl(), delta=bdl(0.5), A=-torch.rand(dim, dstate, generator=g) * 3,
                B=torch.randn(batch, dstate, length, generator=g),
                C=torch.randn(batch, dstate, length, generator=g),
                D=torch.randn(dim, generator=g), z=bdl(),
                delta_bias=torch.randn(dim, generator=g) * 0.1)


def time_path(ext, inp, conv_w, conv_b, reps):
    """Times of the raw kernels (no autograd bookkeeping) in seconds."""
    u, delta, z = inp['u'], inp['delta'], inp['z']
    Bt = inp['B'].transpose(1, 2).contiguous()
    Ct = inp['C'].transpose(1, 2).contiguous()
    args = (u, delta, inp['A'], Bt, Ct, inp['D'], z, inp['delta_bias'])
    out = ext.selective_scan_fwd(*args, True, False)
    dout = torch.randn_like(out)
    res = {
        'scan_fwd': median_time(lambda: ext.selective_scan_fwd(*args, True, False), reps),
        'scan_bwd': median_time(lambda: ext.selective_scan_bwd(*args, True, False, dout),
                                max(3, reps // 4)),
        'conv_fwd': median_time(lambda: ext.causal_conv1d_fwd(u, conv_w, conv_b, True, False),
                                reps),
    }
    res['conv_bwd'] = median_time(
        lambda: ext.causal_conv1d_bwd(u, conv_w, conv_b, True, False, dout), reps)
    return res


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--dim', type=int_at_least(1), default=1536)
    parser.add_argument('--len', type=int_at_least(1), default=1024)
    parser.add_argument('--dstate', type=int_at_least(1), default=16)
    parser.add_argument('--batch', type=int_at_least(1), default=1)
    parser.add_argument('--layout', choices=['token', 'channel'], default='token')
    parser.add_argument('--reps', type=int_at_least(1, 'timed repetitions'), default=20)
    parser.add_argument('--paths', nargs='+', default=['generic', 'avx2', 'avx512'],
                        choices=['auto'] + list(ISA_FLAGS_X86))
    parser.add_argument('--json', help='write the results to this file')
    args = parser.parse_args(argv)

    from mmplugin_shufflemamba.ops.kernels import cpu_extension
    ext = cpu_extension()
    if ext is None:
        raise SystemExit('the compiled CPU extension is not built')
    inp = make_inputs(args.batch, args.dim, args.len, args.dstate, args.layout)
    g = torch.Generator().manual_seed(1)
    conv_w, conv_b = torch.randn(args.dim, 4, generator=g), torch.randn(args.dim, generator=g)

    results = {}
    if not hasattr(ext, 'cpu_paths'):
        results['build'] = time_path(ext, inp, conv_w, conv_b, args.reps)
    else:
        available = {name: built and ok for name, built, ok in ext.cpu_paths()}
        before = ext.get_cpu_path()
        try:
            for name in args.paths:
                if name != 'auto' and not available.get(name, False):
                    print(f'{name}: skipped (not built or not supported by this CPU)')
                    continue
                used = ext.set_cpu_path(name)
                results[name if name != 'auto' else f'auto={used}'] = time_path(
                    ext, inp, conv_w, conv_b, args.reps)
        finally:
            ext.set_cpu_path(before)
    print(f'shape (B, D, L, N) = ({args.batch}, {args.dim}, {args.len}, {args.dstate}), '
          f'{args.layout}-major, float32, {torch.get_num_threads()} threads; median ms')
    print('| path | scan fwd | scan bwd | conv fwd | conv bwd |')
    print('|---|---|---|---|---|')
    for name, r in results.items():
        print(f"| {name} | {r['scan_fwd'] * 1e3:.2f} | {r['scan_bwd'] * 1e3:.2f} | "
              f"{r['conv_fwd'] * 1e3:.2f} | {r['conv_bwd'] * 1e3:.2f} |")
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(dict(shape=[args.batch, args.dim, args.len, args.dstate],
                           layout=args.layout, threads=torch.get_num_threads(),
                           results=results), f, indent=1)
    return results


if __name__ == '__main__':
    main()
