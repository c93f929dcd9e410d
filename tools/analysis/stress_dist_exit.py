"""Run the 2-process CPU (gloo) ``tools/dist_train.sh`` job many times in a row and count
how many did not exit cleanly.

    python tools/analysis/stress_dist_exit.py [-n 20] [--nproc 2] [--iters 2]
        [--num-workers 0] [--persistent-workers] [--work-dir DIR] [--json FILE]

Each run trains the tiny UperNet of ``configs/quickstart`` (4 layers, 32 channels) on a
small generated ADE20K-layout dataset for ``--iters`` iterations, validates and saves a
checkpoint: the set-up of ``tests/test_tools/test_dist_train.py``. A run counts as a
failure when torchrun's exit status is not 0, when a rank printed "terminate called"
(``std::terminate`` at interpreter exit: SIGABRT) or when the checkpoint is missing.
The summary line is ``k failures of N runs`` (also in ``--json``); the first failing
run's log tail is printed.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from mmplugin_shufflemamba.utils.cli import int_at_least

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'quickstart',
                  'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tiny_overrides(data_root: str, iters: int, num_workers: int = 0,
                   persistent_workers: bool = False, batch_size: int = 2,
                   warmup: int = 1) -> list:
    """``--cfg-options`` for the tiny model, ``iters`` iterations (the first ``warmup``
    of them warming up), one validation and one checkpoint at the end."""
    opts = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'default_hooks.checkpoint.interval={iters}',
            'default_hooks.logger.interval=1',
            'model.backbone.num_layers=4', 'model.backbone.embed_dims=32',
            'model.backbone.out_indices=[0,1,2,3]',
            'model.decode_head.in_channels=[32,32,32,32]',
            'model.auxiliary_head.in_channels=32', f'param_scheduler.0.end={warmup}',
            f'param_scheduler.1.begin={warmup}', f'param_scheduler.1.end={iters}']
    persistent = persistent_workers and num_workers > 0
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={data_root}',
                 f'{loader}.num_workers={num_workers}',
                 f'{loader}.persistent_workers={persistent}',
                 f'{loader}.batch_size={batch_size}']
    return opts


def run_once(work: str, data_root: str, args, timeout: int = 900):
    """One ``tools/dist_train.sh`` job; returns (ok, reason, seconds, log)."""
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
               OMP_NUM_THREADS=str(args.omp_threads))
    cmd = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), CONFIG, str(args.nproc),
           '--work-dir', work, '--cfg-options'] + tiny_overrides(
               data_root, args.iters, args.num_workers, args.persistent_workers)
    if args.core_dumps:  # a crashing rank leaves a core file in the run's directory
        cmd = ['bash', '-c', 'ulimit -c unlimited && exec "$@"', 'bash'] + cmd
    t0 = time.perf_counter()
    try:
        run = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                             timeout=timeout)
        rc, log = run.returncode, run.stdout + run.stderr
    except subprocess.TimeoutExpired as e:
        rc, log = 'timeout', f'{e.stdout or ""}{e.stderr or ""}'
    seconds = time.perf_counter() - t0
    if isinstance(log, bytes):  # pragma: no cover - TimeoutExpired may carry bytes
        log = log.decode(errors='replace')
    with open(osp.join(work, 'torchrun.log'), 'w', encoding='utf-8') as f:
        f.write(log)
    ckpt = osp.join(work, f'iter_{args.iters}.pth')
    if rc != 0:
        reason = f'exit status {rc}'
    elif 'terminate called' in log:
        reason = "exit status 0 but a rank printed 'terminate called'"
    elif not osp.isfile(ckpt):
        reason = f'no checkpoint {osp.basename(ckpt)}'
    else:
        reason = ''
    if 'terminate called' in log and rc != 0:
        reason += " ('terminate called' in the log)"
    return not reason, reason, seconds, log


def clean_shutdowns(log: str) -> int:
    """Ranks that reported a destroyed process group with no thread left
    (tools/train.py prints it at the end of a distributed run)."""
    return log.count('process group destroyed, no communication thread left')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-n', '--runs', type=int_at_least(1), default=20,
                        help='runs in a row, >= 1')
    parser.add_argument('--nproc', type=int_at_least(1), default=2,
                        help='CPU processes per run, >= 1')
    parser.add_argument('--iters', type=int_at_least(2, '1 warmup iteration, then the decay'),
                        default=2, help='training iterations per run, >= 2')
    parser.add_argument('--num-workers', type=int_at_least(0), default=0,
                        help='dataloader workers, >= 0')
    parser.add_argument('--persistent-workers', action='store_true')
    parser.add_argument('--omp-threads', type=int_at_least(1), default=1,
                        help='OMP_NUM_THREADS, >= 1')
    parser.add_argument('--work-dir', help='keep the runs here (default: a temp dir, '
                        'removed at the end)')
    parser.add_argument('--core-dumps', action='store_true',
                        help='allow core files (ulimit -c unlimited) for post-mortems')
    parser.add_argument('--json', help='write the counts and reasons to this file')
    args = parser.parse_args(argv)
    if args.work_dir is not None and not args.work_dir.strip():
        parser.error('argument --work-dir: must not be empty (leave it out for a temp dir)')

    from mmplugin_shufflemamba.datasets import generate_synthetic_ade20k

    keep = args.work_dir is not None
    base = args.work_dir if keep else tempfile.mkdtemp(prefix='stress_dist_exit_')
    os.makedirs(base, exist_ok=True)
    data_root = osp.join(base, 'data')
    if not osp.isdir(data_root):
        generate_synthetic_ade20k(data_root, num_train=8, num_val=4, size=(64, 64))
    failures, records, first_log = 0, [], None
    try:
        for i in range(args.runs):
            work = osp.join(base, f'run{i:03d}')
            os.makedirs(work, exist_ok=True)
            ok, reason, seconds, log = run_once(work, data_root, args)
            records.append(dict(run=i, ok=ok, reason=reason, seconds=round(seconds, 1),
                                clean_shutdowns=clean_shutdowns(log)))
            if not ok:
                failures += 1
                if first_log is None:
                    first_log = log
            print(f'run {i + 1}/{args.runs}: {"ok" if ok else "FAILED: " + reason} '
                  f'({seconds:.1f} s, {clean_shutdowns(log)}/{args.nproc} ranks ended '
                  'their process group cleanly)', flush=True)
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    summary = f'{failures} failures of {len(records)} runs'
    if first_log is not None:
        print('--- log tail of the first failing run ---')
        print(first_log[-4000:])
    print(summary, flush=True)
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(dict(failures=failures, runs=len(records), summary=summary,
                           nproc=args.nproc, iters=args.iters,
                           num_workers=args.num_workers, records=records), f, indent=1)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
