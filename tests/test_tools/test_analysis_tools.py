"""tools/analysis/benchmark.py (inference images/s and peak memory of the whole model)
and tools/analysis/plot_logs.py (curves from MMEngine's json logs), on the tiny model."""
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest

from mmplugin_shufflemamba.datasets import generate_synthetic_ade20k

from helpers.dist import tiny_overrides
from helpers.tools import load_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'quickstart',
                  'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')
plot_logs = load_tool('analysis', 'plot_logs.py')

PNG = b'\x89PNG\r\n\x1a\n'


def test_plot_logs_from_a_json_log(tmp_path):
    """Training lines (loss, lr) and validation lines (segmentation and detection
    metrics) of an MMEngine scalars file; a work dir is searched for its runs."""
    run = tmp_path / 'work' / '20260101_000000' / 'vis_data'
    run.mkdir(parents=True)
    lines = [dict(lr=1e-3 * (1 - i / 10), loss=2.0 / (i + 1), iter=i + 1, step=i + 1)
             for i in range(10)]
    lines.insert(5, {'mIoU': 10.0, 'aAcc': 50.0, 'coco/bbox_mAP': 0.1, 'step': 5})
    lines.append({'mIoU': 20.0, 'aAcc': 60.0, 'coco/bbox_mAP': 0.2, 'step': 10})
    (run / 'scalars.json').write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    series = plot_logs.load_scalars(str(run / 'scalars.json'))
    assert series['mIoU'] == [(5.0, 10.0), (10.0, 20.0)] and len(series['loss']) == 10
    out = tmp_path / 'plots'
    written = plot_logs.main([str(tmp_path / 'work'), str(run / 'scalars.json'),
                              '--out-dir', str(out), '--legend', 'a', 'b'])
    names = sorted(osp.basename(p) for p in written)
    assert names == ['aAcc.png', 'coco_bbox_mAP.png', 'loss.png', 'lr.png', 'mIoU.png']
    for p in written:
        with open(p, 'rb') as f:
            assert f.read(8) == PNG
    with pytest.raises(SystemExit):
        plot_logs.main([str(run / 'scalars.json'), '--keys', 'no_such_key', '--out-dir',
                        str(out)])


def test_plot_logs_joins_a_resumed_work_dirs_runs(tmp_path, monkeypatch):
    """A run stopped after iteration 6 (validated at 5) and resumed from iteration 4's
    checkpoint: the work dir's curve is the first run up to 4 and the resumed run from
    5 on; a test run written into the same work dir adds nothing."""
    def write(stamp, lines):
        run = tmp_path / 'work' / stamp / 'vis_data'
        run.mkdir(parents=True)
        (run / 'scalars.json').write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    first = [dict(lr=0.1, loss=10.0 + i, iter=i, step=i) for i in range(1, 7)]
    write('20260101_000000', first + [{'mIoU': 1.0, 'step': 5}])
    write('20260101_010000', [dict(lr=0.1, loss=20.0 + i, iter=i, step=i)
                              for i in range(5, 11)] + [{'mIoU': 2.0, 'step': 10}])
    write('20260101_020000', [{'mIoU': 2.0, 'step': 10}])
    files = plot_logs.find_scalars(str(tmp_path / 'work'))
    assert len(files) == 3
    series = plot_logs.join_runs([plot_logs.load_scalars(f) for f in files])
    assert series['loss'] == [(float(i), 10.0 + i) for i in range(1, 5)] + [
        (float(i), 20.0 + i) for i in range(5, 11)]
    assert series['mIoU'] == [(10.0, 2.0)]
    labels = []
    with monkeypatch.context() as m:  # without --legend, the runs as given (not the
        # timestamp dir of a run)
        m.setattr(plot_logs, 'plot', lambda runs, names, *a, **k: labels.append(names) or [1])
        assert plot_logs.main([str(tmp_path / 'work') + '/', '--out-dir', str(tmp_path / 'p')])
    assert labels == [[str(tmp_path / 'work')]]
    assert plot_logs.main([str(tmp_path / 'work'), '--out-dir', str(tmp_path / 'p')])
    empty = tmp_path / 'empty' / '20260101_000000' / 'vis_data'
    empty.mkdir(parents=True)
    (empty / 'scalars.json').write_text('')
    assert plot_logs.join_runs([plot_logs.load_scalars(str(empty / 'scalars.json'))]) == {}
    with pytest.raises(SystemExit):  # "none of the usual keys", no traceback
        plot_logs.main([str(tmp_path / 'empty'), '--out-dir', str(tmp_path / 'p')])


def test_plot_logs_epoch_based_validation_at_the_epochs_last_iteration(tmp_path):
    """An epoch-based run (mmdet's 1x schedule) logs its validation step as the epoch:
    the point goes to the epoch's last logged iteration, beside the loss."""
    lines = []
    for epoch in (1, 2):
        lines += [dict(loss=1.0, epoch=epoch, iter=i, step=i)
                  for i in range(4 * epoch - 3, 4 * epoch + 1)]
        lines.append({'coco/bbox_mAP': 0.1 * epoch, 'step': epoch})
    path = tmp_path / 'scalars.json'
    path.write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    series = plot_logs.load_scalars(str(path))
    assert series['coco/bbox_mAP'] == [(4.0, 0.1), (8.0, 0.2)]
    assert [x for x, _ in series['loss']] == [float(i) for i in range(1, 9)]


def test_benchmark_refuses_a_checkpoint_that_does_not_fit(tmp_path):
    """As tools/test.py: a checkpoint of another model stops the benchmark with the fit
    report (it would time a model with its initial weights otherwise)."""
    import torch
    bench = load_tool('analysis', 'benchmark.py')
    ckpt = tmp_path / 'other.pth'
    torch.save(dict(state_dict={'head.fc.weight': torch.zeros(2, 4)}), ckpt)
    with pytest.raises(SystemExit) as e:
        bench.main([CONFIG, str(ckpt), '--device', 'cpu', '--num-workers', '0'])
    msg = str(e.value.code)
    assert msg.startswith('tools/analysis/benchmark.py: ') and \
        'does not fit the model of upernet_shufflemamba-tiny' in msg, msg
    assert 'unexpected (not in the model): 1 tensors' in msg and '--allow-partial-load' in msg


def test_benchmark_refuses_a_batch_larger_than_the_test_set(tmp_path):
    """Every batch would hold the whole set, and images/s would be computed for images
    that were not there."""
    bench = load_tool('analysis', 'benchmark.py')
    data_root = str(tmp_path / 'data')
    generate_synthetic_ade20k(data_root, num_train=2, num_val=2, size=(32, 32))
    opts = [o for o in tiny_overrides(data_root, 2) if o.startswith('model.')]
    with pytest.raises(SystemExit) as e:
        bench.main([CONFIG, '--device', 'cpu', '--num-workers', '0', '--batch-size', '4',
                    '--cfg-options', f'test_dataloader.dataset.data_root={data_root}'] + opts)
    assert str(e.value.code) == (
        'tools/analysis/benchmark.py: --batch-size 4 is larger than the test set (2 '
        'images): give --batch-size 2 or less, or a larger test set.')


def test_benchmark_refuses_segmentation_batches_of_several_sizes(tmp_path):
    """As the tools (EvalImageSizeHook): mmseg stacks a test batch's images."""
    import numpy as np
    from PIL import Image
    bench = load_tool('analysis', 'benchmark.py')
    data_root = tmp_path / 'data'
    generate_synthetic_ade20k(str(data_root), num_train=2, num_val=2, size=(32, 32))
    image = sorted((data_root / 'images' / 'validation').glob('*.jpg'))[0]
    Image.fromarray(np.zeros((48, 32, 3), np.uint8)).save(image)
    Image.fromarray(np.ones((48, 32), np.uint8)).save(
        data_root / 'annotations' / 'validation' / image.name.replace('.jpg', '.png'))
    opts = [o for o in tiny_overrides(str(data_root), 2) if o.startswith('model.')]
    with pytest.raises(SystemExit) as e:
        bench.main([CONFIG, '--device', 'cpu', '--num-workers', '0', '--batch-size', '2',
                    '--cfg-options', f'test_dataloader.dataset.data_root={data_root}'] + opts)
    assert str(e.value.code).startswith(
        'tools/analysis/benchmark.py: --batch-size 2, and mmseg tests a batch of images of '
        'one size'), e.value.code
    assert 'Set --batch-size 1' in str(e.value.code)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """The tiny UperNet trained for 2 iterations by tools/train.py."""
    tmp = tmp_path_factory.mktemp('analysis')
    data_root = str(tmp / 'data')
    generate_synthetic_ade20k(data_root, num_train=8, num_val=4, size=(64, 64))
    work = tmp / 'work'
    run = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), CONFIG,
                          '--work-dir', str(work), '--cfg-options'] +
                         tiny_overrides(data_root, 2), capture_output=True, text=True,
                         timeout=900, cwd=str(tmp),
                         env=dict(os.environ, OMP_NUM_THREADS='2'))
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    return tmp, data_root, work


@pytest.mark.slow
def test_benchmark_whole_model(trained, tmp_path):
    tmp, data_root, work = trained
    out = tmp_path / 'bench.json'
    opts = [o for o in tiny_overrides(data_root, 2) if o.startswith('model.')]
    run = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'analysis', 'benchmark.py'), CONFIG,
         str(work / 'iter_2.pth'), '--num-iters', '3', '--warmup', '1', '--num-workers',
         '0', '--json', str(out), '--cfg-options',
         f'test_dataloader.dataset.data_root={data_root}'] + opts,
        capture_output=True, text=True, timeout=900, cwd=str(tmp))
    assert run.returncode == 0, run.stderr[-3000:]
    assert '| images/s (median batch) |' in run.stdout
    res = json.loads(out.read_text())
    assert res['device'] in ('cpu', 'cuda') and res['iters'] == 3
    assert math.isfinite(res['images_per_s']) and res['images_per_s'] > 0
    peak = res.get('peak_rss_mib', res.get('peak_allocated_mib'))
    assert peak is not None and peak > 0


@pytest.mark.slow
def test_plot_logs_of_a_training_run(trained, tmp_path):
    _, _, work = trained
    written = plot_logs.main([str(work), '--out-dir', str(tmp_path / 'plots')])
    names = {osp.basename(p) for p in written}
    assert {'loss.png', 'lr.png', 'mIoU.png'} <= names, names
    for p in written:
        assert osp.getsize(p) > 1000
        with open(p, 'rb') as f:
            assert f.read(8) == PNG
