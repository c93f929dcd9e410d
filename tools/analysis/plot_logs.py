"""Curves of loss, learning rate, mIoU, AP... from MMEngine's json logs, as PNG files.

    python tools/analysis/plot_logs.py RUN [RUN ...] [--keys loss lr mIoU ...]
        [--out-dir DIR] [--legend NAME ...] [--title TEXT]

RUN is a work dir (its ``<timestamp>/vis_data/scalars.json`` runs joined: a resumed run
continues the curve from its first iteration; see :func:`join_runs`), a
``<timestamp>`` run dir, or a json scalars file itself (``vis_data/scalars.json`` or
``vis_data/<timestamp>.json``: one json object per line, training lines with ``iter``
/ ``step``, validation lines with the metrics and ``step``). Several runs are drawn in
the same figures, for comparison.

Without ``--keys``, every key that is present among: loss, lr, the segmentation metrics
(mIoU, mAcc, aAcc) and the detection metrics (``coco/bbox_mAP``, ``coco/segm_mAP`` and
their 50 / 75 variants). One PNG per key, ``<out-dir>/<key>.png`` (``/`` in a key
becomes ``_``), x axis: the training iteration (``step``; for the validation of an
epoch-based run, the last logged iteration of its epoch).
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Tuple

DEFAULT_KEYS = ('loss', 'lr', 'mIoU', 'mAcc', 'aAcc', 'coco/bbox_mAP', 'coco/bbox_mAP_50',
                'coco/bbox_mAP_75', 'coco/segm_mAP', 'coco/segm_mAP_50', 'coco/segm_mAP_75')


def find_scalars(path: str) -> List[str]:
    """The scalars json files of a work dir (its runs, oldest first), a run dir or a
    file."""
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise FileNotFoundError(f'no such log file or directory: {path!r} (give a work dir, '
                                'a <timestamp> run dir or a vis_data/*.json file)')
    for pattern in ('vis_data/scalars.json', 'scalars.json', '*/vis_data/scalars.json'):
        found = sorted(glob.glob(osp.join(path, pattern)))  # timestamped dirs sort by time
        if found:
            return found
    found = sorted(glob.glob(osp.join(path, '*', 'vis_data', '*.json')))
    if found:
        return found[-1:]
    raise FileNotFoundError(f'{path}: no vis_data/scalars.json below it')


def join_runs(runs: List[Dict[str, List[Tuple[float, float]]]]
              ) -> Dict[str, List[Tuple[float, float]]]:
    """One curve per key from a work dir's runs, oldest first: a later run that trained
    (a resume, or a restart) replaces the points from its first training iteration on;
    runs that did not train (tools/test.py writing into the work dir) are left out
    unless nothing trained."""
    trained = [r for r in runs if 'lr' in r] or runs[-1:]  # MMEngine logs lr when training
    joined: Dict[str, List[Tuple[float, float]]] = {}
    for run in trained:
        start = min((x for points in run.values() for x, _ in points), default=None)
        if start is None:  # an empty log
            continue
        joined = {k: [p for p in v if p[0] < start] for k, v in joined.items()}
        for key, points in run.items():
            joined[key] = joined.get(key, []) + points
    return {k: v for k, v in joined.items() if v}


def load_scalars(path: str) -> Dict[str, List[Tuple[float, float]]]:
    """``{key: [(iteration, value), ...]}`` from one json-lines log (repeated steps, e.g.
    a resumed run that logged an iteration twice, keep the last value). An epoch-based
    run (training lines with ``epoch``) logs its validation ``step`` as the epoch: those
    points go to the last logged iteration of that epoch."""
    series: Dict[str, Dict[float, float]] = {}
    epoch_ends: Dict[int, float] = {}  # epoch -> its last logged training iteration
    with open(path, encoding='utf-8', errors='replace') as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f'{path}:{n}: not a json line ({e}); give a work dir or '
                                 "MMEngine's vis_data/scalars.json") from None
            if not isinstance(rec, dict):
                raise ValueError(f'{path}:{n}: a json {type(rec).__name__}, not an object '
                                 f"of MMEngine's scalars log ({line[:60]})")
            step = rec.get('step', rec.get('iter'))
            if step is None:
                continue
            if 'iter' in rec and 'epoch' in rec:
                epoch_ends[int(rec['epoch'])] = float(rec['iter'])
            elif 'iter' not in rec and epoch_ends:  # validation of an epoch-based run
                step = epoch_ends.get(int(step), max(epoch_ends.values()))
            for key, value in rec.items():
                if key in ('step', 'iter', 'epoch') or not isinstance(value, (int, float)):
                    continue
                series.setdefault(key, {})[float(step)] = float(value)
    return {k: sorted(v.items()) for k, v in series.items()}


def _file_name(key: str) -> str:
    return re.sub(r'[^A-Za-z0-9._-]+', '_', key) + '.png'


def plot(runs: List[Dict[str, List[Tuple[float, float]]]], names: List[str],
         keys: List[str], out_dir: str, title: str = '') -> List[str]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for key in keys:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        drawn = 0
        for series, name in zip(runs, names):
            points = series.get(key)
            if not points:
                continue
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker='o' if len(xs) < 30 else None, markersize=3,
                    label=name)
            drawn += 1
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel('iteration')
        ax.set_ylabel(key)
        if key == 'lr':
            ax.ticklabel_format(axis='y', style='sci', scilimits=(-2, 2))
        ax.grid(True, alpha=0.3)
        ax.set_title(f'{title} {key}'.strip())
        if len(runs) > 1:
            ax.legend()
        fig.tight_layout()
        path = osp.join(out_dir, _file_name(key))
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None) -> List[str]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('runs', nargs='+', help='work dirs, run dirs or scalars json files')
    parser.add_argument('--keys', nargs='+', help='keys to plot (default: the usual ones '
                        'that are present)')
    parser.add_argument('--out-dir', default='plots', help='where the PNG files go')
    parser.add_argument('--legend', nargs='+', help='a name per run (default: the runs as '
                        'given, e.g. the work dirs)')
    parser.add_argument('--title', default='', help='prefix of the figure titles')
    args = parser.parse_args(argv)
    if not args.out_dir.strip():
        parser.error('argument --out-dir: must not be empty')
    existing = osp.abspath(args.out_dir)
    while not osp.exists(existing):
        existing = osp.dirname(existing)
    if not osp.isdir(existing):
        parser.error(f'argument --out-dir: {existing} is a file, not a directory')

    try:  # a missing run or a file that is not a json log: one line, no traceback
        files = [find_scalars(r) for r in args.runs]
        runs = [join_runs([load_scalars(f) for f in fs]) for fs in files]
    except (FileNotFoundError, ValueError) as e:
        parser.error(f'argument runs: {e}')
    names = args.legend or [osp.normpath(r) for r in args.runs]  # (as given: work dirs)
    if len(names) != len(runs):
        parser.error(f'--legend needs {len(runs)} names')
    present = set().union(*[set(r) for r in runs])
    if args.keys:
        missing = [k for k in args.keys if k not in present]
        if missing:
            parser.error(f'keys not in the logs: {missing}; present: {sorted(present)}')
        keys = args.keys
    else:
        keys = [k for k in DEFAULT_KEYS if k in present]
        if not keys:
            parser.error(f'none of the usual keys in the logs; present: {sorted(present)}')
    written = plot(runs, names, keys, args.out_dir, args.title)
    for path in written:
        print(path)
    return written


if __name__ == '__main__':
    main(sys.argv[1:])
