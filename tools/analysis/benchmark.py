"""Inference throughput and peak memory of a whole segmentor or detector.

    python tools/analysis/benchmark.py CONFIG [CHECKPOINT] [--device cpu|cuda]
        [--num-iters 20] [--warmup 3] [--batch-size 1] [--cfg-options ...] [--json FILE]
        [--allow-partial-load] [--allow-nonfinite-checkpoint]

Runs ``model.test_step`` (data preprocessor, backbone, heads and post-processing: what
``tools/test.py`` runs per batch) on batches of the config's test data loader and reports
images per second (median over the timed iterations; data loading is not timed) and the
peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` (and reserved); on the CPU,
the process's peak resident memory during the timed inference (the kernel's peak mark is
reset first, on Linux) and its growth over the loaded model. Without a checkpoint the
weights are the config's initialisation (same speed); a checkpoint must fit the model as
for ``tools/test.py`` (``--allow-partial-load``, ``--allow-nonfinite-checkpoint``).
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
from mmengine.config import DictAction

from mmplugin_shufflemamba.utils.cli import (device as device_arg, existing_file,
                                             int_at_least, key_value, output_file)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', type=existing_file('config file'), help='config file')
    parser.add_argument('checkpoint', nargs='?',
                        type=existing_file('checkpoint', allow_uri=True),
                        help='checkpoint file or URL (optional)')
    parser.add_argument('--device', type=device_arg, default=None,
                        help="'cuda' or 'cpu' (default: cuda when available)")
    parser.add_argument('--num-iters', type=int_at_least(1, 'timed iterations'), default=20,
                        help='timed iterations, >= 1')
    parser.add_argument('--warmup', type=int_at_least(0), default=3,
                        help='untimed iterations first, >= 0')
    parser.add_argument('--batch-size', type=int_at_least(1), default=1)
    parser.add_argument('--num-workers', type=int_at_least(0), default=2,
                        help='data loader workers, >= 0 (0: load in the main process)')
    parser.add_argument('--cfg-options', nargs='+', type=key_value, action=DictAction,
                        metavar='KEY=VALUE',
                        help='override settings, e.g. test_dataloader.dataset.data_root=..')
    parser.add_argument('--allow-partial-load', action='store_true',
                        help='time a checkpoint that does not fit the model: what fits is '
                        'loaded, the rest keeps its initialisation and is listed (default: '
                        'stop with a report, as tools/test.py)')
    parser.add_argument('--allow-nonfinite-checkpoint', action='store_true',
                        help='load a checkpoint whose weights hold NaN / inf')
    parser.add_argument('--json', type=output_file, help='write the figures to this file')
    return parser.parse_args(argv)


def _rss_bytes() -> int:
    """Current resident memory (Linux /proc; 0 elsewhere)."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError):
        return 0


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak resident memory mark (Linux >= 4.0), so that the peak
    read afterwards is the inference's, not the model building's."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == 'darwin' else peak * 1024


def build(cfg, args, device):
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import Runner

    from mmplugin_shufflemamba.checkpoint import load_checked
    from mmplugin_shufflemamba.utils import prepare_runtime
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    prepare_runtime(cfg, 'none')
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    if args.checkpoint is not None:  # as tools/test.py: it must fit the model
        load_checked(model, args.checkpoint, allow_partial=args.allow_partial_load,
                     allow_nonfinite=args.allow_nonfinite_checkpoint,
                     target=os.path.basename(args.config), model_cfg=cfg.model)
    model.to(device).eval()
    loader = Runner.build_dataloader(cfg.test_dataloader)
    return model, loader


def run(args) -> dict:
    import mmplugin_shufflemamba  # noqa: F401  (registers the backbones)
    from mmplugin_shufflemamba.utils import load_config

    device = args.device if args.device is not None else (
        'cuda' if torch.cuda.is_available() else 'cpu')
    cfg = load_config(args.config, 'none', None, args.cfg_options)
    cfg.test_dataloader.batch_size = args.batch_size
    cfg.test_dataloader.num_workers = args.num_workers
    cfg.test_dataloader.persistent_workers = args.num_workers > 0
    model, loader = build(cfg, args, device)
    if len(loader.dataset) < args.batch_size:  # every batch would be the whole set
        from mmplugin_shufflemamba.utils import ConfigError
        raise ConfigError(f'--batch-size {args.batch_size} is larger than the test set '
                          f'({len(loader.dataset)} images): give --batch-size '
                          f'{len(loader.dataset)} or less, or a larger test set.')
    from mmplugin_shufflemamba.engine.hooks import check_eval_image_sizes
    check_eval_image_sizes(model, loader, 'test', '--batch-size')  # (as the tools)
    cuda = device.startswith('cuda')

    def sync():
        if cuda:
            torch.cuda.synchronize()

    total = args.warmup + args.num_iters
    times, counts = [], []
    rss_model = _rss_bytes()
    peak_reset = _reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    it = iter(loader)
    with torch.no_grad():
        for i in range(total):
            try:
                batch = next(it)
            except StopIteration:  # a small test set: go round again
                it = iter(loader)
                batch = next(it)
            sync()
            t0 = time.perf_counter()
            model.test_step(batch)
            sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
                counts.append(len(batch['inputs']))  # (a short last batch counts less)
    per_batch = statistics.median(times)
    res = dict(config=os.path.basename(args.config), checkpoint=args.checkpoint,
               device=device, batch_size=args.batch_size, iters=len(times),
               images_per_s=statistics.median(n / t for n, t in zip(counts, times)),
               mean_images_per_s=sum(counts) / sum(times),
               median_batch_s=per_batch, threads=torch.get_num_threads())
    if cuda:
        res['peak_allocated_mib'] = torch.cuda.max_memory_allocated() / 2**20
        res['peak_reserved_mib'] = torch.cuda.max_memory_reserved() / 2**20
        res['gpu'] = torch.cuda.get_device_name()
    else:
        peak = _peak_rss_bytes()
        res['peak_rss_mib'] = peak / 2**20
        res['peak_rss_over_model_mib'] = max(0, peak - rss_model) / 2**20
        res['peak_rss_is_inference_only'] = peak_reset
    return res


def main(argv=None):
    args = parse_args(argv)
    from mmplugin_shufflemamba.utils import STOP_ERRORS, stop_message
    try:
        res = run(args)
    except STOP_ERRORS as e:  # a config, data or checkpoint check: no traceback
        sys.exit(stop_message(e, 'tools/analysis/benchmark.py'))
    where = res.get('gpu', f"{res['threads']} threads")
    print(f"{res['config']} on {res['device']} ({where}), batch {res['batch_size']}, "
          f"{res['iters']} timed iterations")
    print('| figure | value |')
    print('|---|---|')
    print(f"| images/s (median batch) | {res['images_per_s']:.3f} |")
    print(f"| images/s (mean) | {res['mean_images_per_s']:.3f} |")
    print(f"| time per batch (median) | {res['median_batch_s'] * 1e3:.1f} ms |")
    if 'peak_allocated_mib' in res:
        print(f"| peak GPU memory allocated | {res['peak_allocated_mib']:.0f} MiB |")
        print(f"| peak GPU memory reserved | {res['peak_reserved_mib']:.0f} MiB |")
    else:
        print(f"| peak resident memory (process) | {res['peak_rss_mib']:.0f} MiB |")
        print(f"| peak over the loaded model | {res['peak_rss_over_model_mib']:.0f} MiB |")
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == '__main__':
    main()
