"""End to end: tools/dist_train.sh with 2 CPU processes (gloo) trains a tiny Mask R-CNN
+ ShuffleMambaAdapter on the generated COCO-format data for a few iterations, saves a
checkpoint; tools/test.py evaluates it with mmdet's CocoMetric (bbox and segm AP)."""
import os
import os.path as osp
import re
import subprocess
import sys

import mmengine
import pytest

from mmplugin_shufflemamba.datasets import generate_synthetic_coco

from helpers.dist import free_port, run_test_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'quickstart',
                  'mask-rcnn_shufflemamba-adapter-tiny_1xb8-400it_synthetic-coco-128x128.py')


def overrides(data_root, iters):
    ann_val = osp.join(data_root, 'annotations', 'instances_val2017.json')
    opts = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'default_hooks.checkpoint.interval={iters}', 'default_hooks.logger.interval=1',
            'model.backbone.num_layers=4', 'model.backbone.embed_dims=32',
            'model.backbone.deform_num_heads=4', 'model.backbone.conv_inplane=8',
            'model.backbone.interaction_indexes=[[0,0],[1,1],[2,2],[3,3]]',
            'model.neck.in_channels=[32,32,32,32]', 'model.test_cfg.rcnn.score_thr=0.0',
            'param_scheduler.0.end=2', 'param_scheduler.1.begin=2',
            f'param_scheduler.1.end={iters}', f'param_scheduler.1.T_max={iters - 2}',
            f'val_evaluator.ann_file={ann_val}', f'test_evaluator.ann_file={ann_val}']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={data_root}', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False', f'{loader}.batch_size=2']
    return opts


@pytest.mark.slow
def test_dist_train_mask_rcnn_then_test(tmp_path):
    data_root = str(tmp_path / 'coco')
    generate_synthetic_coco(data_root, num_train=8, num_val=4, size=(64, 96))
    work = str(tmp_path / 'work')
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
               OMP_NUM_THREADS='1')
    cmd = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), CONFIG, '2', '--work-dir', work,
           '--cfg-options'] + overrides(data_root, 4)
    run = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=900)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-6000:]
    assert 'Iter(train) [4/4]' in log, log[-3000:]
    assert 'ShuffleMambaAdapter' in log
    ckpt = osp.join(work, 'iter_4.pth')
    assert osp.isfile(ckpt), os.listdir(work)

    out = tmp_path / 'pred.pkl'
    log = run_test_tool(CONFIG, ckpt, tmp_path, env, overrides(data_root, 4),
                        ['--out', str(out), '--show-dir', 'vis'])
    for task in ('bbox', 'segm'):
        for key in ('mAP', 'mAP_50', 'mAP_75'):
            m = re.search(rf'coco/{task}_{key}: (-?[0-9.]+)', log)
            assert m, (task, key, log[-3000:])
            assert 0.0 <= float(m.group(1)) <= 1.0, (task, key, m.group(1))
    # --out: mmdet's DumpDetResults pickle, one prediction per validation image;
    # --show-dir: mmdet's hook paints each image under the work dir, by image name
    preds = mmengine.load(str(out))
    assert len(preds) == 4 and all('pred_instances' in p for p in preds), preds[:1]
    painted = sorted(p.name for p in (tmp_path / 'test').rglob('vis/*'))
    assert painted == sorted(osp.basename(p['img_path']) for p in preds), painted
