"""tools/quickstart.py --task pretrain end to end (shortened): pretrain the tiny
classifier on the generated ImageNet-layout set, report top-1, fine-tune the segmentation
quickstart from its checkpoint and from scratch, report both mIoU; and a run of a config
given with --config."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.mark.slow
def test_quickstart_pretrain_then_finetune(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='2')
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'quickstart.py'), '--task', 'pretrain',
           '--max-iters', '6', '--finetune-iters', '3', '--num-train', '32', '--num-val', '16',
           '--finetune-data-root', 'seg_data',
           '--cfg-options', 'train_dataloader.num_workers=0',
           'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
           'val_dataloader.persistent_workers=False']
    run = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=1200)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    top1 = re.search(r'top-1 \(mmpretrain Accuracy, raw weights\): ([0-9.]+)', out)
    pre = re.search(r'mIoU from the pretrained checkpoint: ([0-9.]+)', out)
    scratch = re.search(r'mIoU from scratch: +([0-9.]+)', out)
    assert top1 and pre and scratch, out[-3000:]
    for m in (top1, pre, scratch):
        assert 0.0 <= float(m.group(1)) <= 100.0
    # The fine-tuning run loaded the classifier's raw weights, cls token dropped and
    # the 8x8 position grid resized to the segmentation config's 16x16.
    assert re.search(r"Loaded \S+quickstart_pretrain/iter_6\.pth \(entry 'ema_state_dict'.*"
                     r"format 'shufflemamba'.*pos_embed \(8, 8\) -> \(16, 16\); "
                     r'cls/register tokens 1 -> 0', out), out[-3000:]
    assert osp.isfile(tmp_path / 'work_dirs' / 'quickstart_pretrain' / 'iter_6.pth')
    assert osp.isdir(tmp_path / 'work_dirs' / 'quickstart_pretrain' / 'finetune_scratch')
    # The fine-tuning data went where --finetune-data-root said.
    assert osp.isdir(tmp_path / 'seg_data' / 'images' / 'training')
    assert not osp.exists(tmp_path / 'data' / 'synthetic_ade20k')


@pytest.mark.slow
def test_quickstart_runs_the_config_it_was_given(tmp_path):
    """--config: the file checked when the arguments are read is the one trained (here
    the segmentation quickstart's own, one iteration, with a changed shuffle rate)."""
    config = tmp_path / 'my_quickstart.py'
    base = osp.join(ROOT, 'configs', 'quickstart',
                    'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')
    config.write_text(f'_base_ = [{base!r}]\nmodel = dict(backbone=dict(shuffle_rate=0.25))\n')
    env = dict(os.environ, OMP_NUM_THREADS='2')
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'quickstart.py'), '--config', str(config),
           '--max-iters', '1', '--num-train', '4', '--num-val', '2', '--num-overlays', '0',
           '--cfg-options', 'train_dataloader.num_workers=0',
           'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
           'val_dataloader.persistent_workers=False', 'train_dataloader.batch_size=2']
    run = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert re.search(r'SLWS shuffle_rate=0\.25\) on synthetic ADE20K, 1 iterations', out), \
        out[-3000:]
    assert re.search(r'mIoU \(mmseg IoUMetric\): [0-9.]+', out), out[-3000:]
