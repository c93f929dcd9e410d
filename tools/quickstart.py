"""Quickstart on CPU, from scratch, on generated data.

``--task segmentation`` (default): a tiny ShuffleMamba + UperNet on an ADE20K-layout
dataset, evaluated with mmseg's IoUMetric, with prediction overlays.
``--task detection``: a tiny ShuffleMambaAdapter + Mask R-CNN on a COCO-format instance
dataset, evaluated with mmdet's CocoMetric (bbox and segm AP), with predictions drawn by
mmdet's visualizer.
``--task pretrain``: pretrain a tiny ShuffleMamba classifier (cls token, SLWS) with
mmpretrain on an ImageNet-layout set drawn by the same renderer, report top-1 (mmpretrain's
Accuracy), then fine-tune the segmentation quickstart from that checkpoint and from
scratch for the same number of iterations (``--finetune-iters``) and report both mIoU.

    python tools/quickstart.py [--task segmentation|detection|pretrain] [--work-dir DIR]
        [--max-iters N] [--finetune-iters N]
"""
import argparse
import os
import os.path as osp
import sys
import time

import numpy as np
from mmengine.config import DictAction

from mmplugin_shufflemamba.utils.cli import (existing_file, int_at_least, key_value,
                                             output_dir)

CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs',
                      'quickstart')
TASKS = {
    'segmentation': dict(
        config=osp.join(CONFIG_DIR,
                        'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py'),
        data_root='data/synthetic_ade20k', work_dir='work_dirs/quickstart',
        num_train=240, num_val=48, scope='mmseg'),
    'detection': dict(
        config=osp.join(
            CONFIG_DIR, 'mask-rcnn_shufflemamba-adapter-tiny_1xb8-400it_synthetic-coco-128x128.py'),
        data_root='data/synthetic_coco', work_dir='work_dirs/quickstart_detection',
        num_train=400, num_val=50, scope='mmdet'),
    'pretrain': dict(
        config=osp.join(CONFIG_DIR, 'shufflemamba-tiny_1xb32-400it_synthetic-in1k-64px.py'),
        data_root='data/synthetic_imagenet', work_dir='work_dirs/quickstart_pretrain',
        num_train=800, num_val=200, scope='mmpretrain'),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    iters = int_at_least(1, 'a training run needs at least one iteration')
    p.add_argument('--task', choices=sorted(TASKS), default='segmentation')
    p.add_argument('--config', type=existing_file('config file'), default=None,
                   help='default: the task\'s quickstart config')
    p.add_argument('--data-root', type=output_dir, default=None,
                   help="where the task's data is generated (default: "
                   + ', '.join(f"{t}: {c['data_root']}" for t, c in TASKS.items()) + ')')
    p.add_argument('--work-dir', type=output_dir, default=None,
                   help='default: ' + ', '.join(f"{t}: {c['work_dir']}"
                                                for t, c in TASKS.items()))
    p.add_argument('--max-iters', type=iters, default=None,
                   help="training iterations, >= 1 (default: the config's)")
    p.add_argument('--num-train', type=int_at_least(1, 'images of the training split'),
                   default=None, help="images of the task's generated training split "
                   '(default: ' + ', '.join(f"{t}: {c['num_train']}" for t, c in TASKS.items())
                   + "; --task pretrain: the ImageNet-layout set, the fine-tuning runs keep "
                   "the segmentation quickstart's)")
    p.add_argument('--num-val', type=int_at_least(1, 'images of the validation split'),
                   default=None, help='images of the validation split (default: '
                   + ', '.join(f"{t}: {c['num_val']}" for t, c in TASKS.items()) + ')')
    p.add_argument('--num-overlays', type=int_at_least(0), default=4,
                   help='prediction pictures to draw, >= 0 (0: none)')
    p.add_argument('--finetune-iters', type=iters, default=150,
                   help='--task pretrain: segmentation iterations of each fine-tuning run '
                   '(from the pretrained checkpoint and from scratch), >= 1')
    p.add_argument('--finetune-data-root', type=output_dir, default=None,
                   help='--task pretrain: the segmentation data of the fine-tuning runs '
                   "(default: the segmentation quickstart's, "
                   f"{TASKS['segmentation']['data_root']})")
    p.add_argument('--cfg-options', nargs='+', type=key_value, action=DictAction,
                   default=None, metavar='KEY=VALUE',
                   help='override config settings, e.g. optim_wrapper.optimizer.lr=1e-4')
    args = p.parse_args(argv)
    task = TASKS[args.task]
    args.cfg = None  # --config as read here, for train_and_test
    if args.config is not None:  # the task's data, metric and loop: check they fit
        from mmengine.config import Config
        cfg = Config.fromfile(args.config)
        scope = cfg.get('default_scope')
        if scope != task['scope']:
            p.error(f'argument --config: {args.config} is ' + (
                f'a {scope} config' if scope else 'a config without default_scope') +
                f"; --task {args.task} runs {task['scope']} ones (give the matching "
                '--task)')
        if cfg.get('train_cfg', {}).get('type') != 'IterBasedTrainLoop':
            p.error(f'argument --config: {args.config} does not train by iteration; the '
                    'quickstart runs iteration-based configs (IterBasedTrainLoop)')
        args.cfg = cfg
    for key, value in task.items():
        if key != 'scope' and getattr(args, key) is None:
            setattr(args, key, value)
    return args


def majority_baseline(ann_dir: str, num_classes: int = 150):
    """mIoU (over classes present in the ground truth) of predicting the most
    frequent training class everywhere, computed as IoUMetric does."""
    import cv2
    counts = np.zeros(num_classes, np.int64)
    anns = []
    for name in sorted(os.listdir(ann_dir)):
        a = cv2.imread(osp.join(ann_dir, name), cv2.IMREAD_UNCHANGED).astype(np.int64)
        a = a - 1  # reduce_zero_label: 0 -> ignored (-1), k -> k - 1
        anns.append(a)
        valid = a[a >= 0]
        counts += np.bincount(valid, minlength=num_classes)
    majority = int(counts.argmax())
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for a in anns:
        valid = a >= 0
        pred = np.full_like(a, majority)
        for c in np.unique(np.concatenate([a[valid], [majority]])):
            inter[c] += np.sum((pred == c) & (a == c) & valid)
            union[c] += np.sum(((pred == c) | (a == c)) & valid)
    present = union > 0
    return majority, float(np.mean(inter[present] / union[present]) * 100)


def write_overlays(cfg, checkpoint, img_dir, ann_dir, out_dir, num):
    import cv2
    from mmseg.apis import inference_model, init_model
    model = init_model(cfg, checkpoint, device='cpu')
    palette = np.array(model.dataset_meta['palette'], np.uint8)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name in sorted(os.listdir(img_dir))[:num]:
        img = cv2.imread(osp.join(img_dir, name))
        result = inference_model(model, img)
        pred = result.pred_sem_seg.data[0].cpu().numpy()
        gt = cv2.imread(osp.join(ann_dir, name.replace('.jpg', '.png')),
                        cv2.IMREAD_UNCHANGED).astype(np.int64) - 1

        def paint(label):
            color = palette[np.clip(label, 0, len(palette) - 1)][..., ::-1]
            color[label < 0] = 0
            return (0.45 * img + 0.55 * color).astype(np.uint8)

        panel = np.concatenate([img, paint(gt), paint(pred)], axis=1)
        path = osp.join(out_dir, name.replace('.jpg', '_image-gt-pred.png'))
        cv2.imwrite(path, panel)
        paths.append(path)
    return paths


def draw_detections(cfg, checkpoint, img_dir, out_dir, num):
    """Predictions on the first validation images, drawn by mmdet's visualizer."""
    import cv2
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS
    model = init_detector(cfg, checkpoint, device='cpu')
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name in sorted(os.listdir(img_dir))[:num]:
        img = cv2.imread(osp.join(img_dir, name))
        result = inference_detector(model, img)
        path = osp.join(out_dir, name.replace('.jpg', '_pred.png'))
        visualizer.add_datasample(name, img[..., ::-1], data_sample=result, draw_gt=False,
                                  show=False, pred_score_thr=0.5, out_file=path)
        paths.append(path)
    return paths


def shorten_schedule(cfg, max_iters):
    """Run ``max_iters`` (>= 1) iterations with the config's schedule shape: a warmup of
    a tenth of the run (at least 1 iteration, none for a 1-iteration run), then the
    config's decay to the end."""
    if max_iters < 1:
        raise ValueError(f'max_iters must be >= 1, got {max_iters}')
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max_iters
    cfg.default_hooks.checkpoint.interval = max_iters
    warmup = min(cfg.param_scheduler[0].end, max(1, max_iters // 10)) if max_iters > 1 else 0
    if warmup:
        cfg.param_scheduler[0].end = warmup
    else:
        cfg.param_scheduler = cfg.param_scheduler[1:]
    last = cfg.param_scheduler[-1]
    last.begin = warmup
    last.end = max_iters
    if 'T_max' in last:
        last.T_max = max_iters - warmup


def train_and_test(args, generate):
    from mmengine.config import Config

    from mmplugin_shufflemamba.utils import (build_runner, check_config, check_run_values,
                                             merge_cfg_options, prepare_runtime)
    cfg = getattr(args, 'cfg', None) or Config.fromfile(args.config)
    cfg.work_dir = args.work_dir
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = args.data_root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        if 'ann_file' in cfg[evaluator]:
            cfg[evaluator].ann_file = osp.join(
                args.data_root, cfg.val_dataloader.dataset.ann_file)
    if args.max_iters is not None:
        shorten_schedule(cfg, args.max_iters)
    merge_cfg_options(cfg, args.cfg_options, osp.basename(args.config))
    check_config(cfg)
    check_run_values(cfg)
    try:  # (the data once the settings are checked)
        generate(args.data_root, args.num_train, args.num_val)
    except FileExistsError as e:  # a --data-root with files the writer did not write
        raise SystemExit(f'quickstart --data-root: {e}') from None
    prepare_runtime(cfg, 'none')
    runner = build_runner(cfg)
    runner.train()
    metrics = runner.test()
    ckpt = osp.join(args.work_dir, f'iter_{cfg.train_cfg.max_iters}.pth')
    return cfg, metrics, ckpt


def main_segmentation(args, t0):
    from mmplugin_shufflemamba.datasets import generate_synthetic_ade20k
    cfg, metrics, ckpt = train_and_test(args, generate_synthetic_ade20k)
    majority, base_miou = majority_baseline(
        osp.join(args.data_root, 'annotations', 'validation'))
    overlays = write_overlays(cfg, ckpt, osp.join(args.data_root, 'images', 'validation'),
                              osp.join(args.data_root, 'annotations', 'validation'),
                              osp.join(args.work_dir, 'overlays'), args.num_overlays)
    print('\n' + '=' * 72)
    print(f"ShuffleMamba-tiny + UperNet (SLWS shuffle_rate="
          f"{cfg.model.backbone.shuffle_rate}) on synthetic ADE20K, "
          f"{cfg.train_cfg.max_iters} iterations on CPU")
    print(f"  mIoU (mmseg IoUMetric): {metrics['mIoU']:.2f}   aAcc: {metrics['aAcc']:.2f}")
    from mmseg.datasets import ADE20KDataset
    name = ADE20KDataset.METAINFO['classes'][majority]
    print(f"  majority-class baseline mIoU (always '{name}'): {base_miou:.2f}")
    print(f'  checkpoint: {ckpt}')
    print('  overlays (image | ground truth | prediction):')
    for p in overlays:
        print(f'    {p}')
    print(f'  total time: {time.time() - t0:.0f} s')
    print('=' * 72)


def main_detection(args, t0):
    from mmplugin_shufflemamba.datasets import generate_synthetic_coco
    cfg, metrics, ckpt = train_and_test(args, generate_synthetic_coco)
    pictures = draw_detections(cfg, ckpt, osp.join(args.data_root, 'val2017'),
                               osp.join(args.work_dir, 'predictions'), args.num_overlays)
    print('\n' + '=' * 72)
    print(f"ShuffleMambaAdapter-tiny + Mask R-CNN (SLWS shuffle_rate="
          f"{cfg.model.backbone.shuffle_rate}) on synthetic COCO, "
          f"{cfg.train_cfg.max_iters} iterations on CPU")
    for task in ('bbox', 'segm'):
        print(f'  {task} AP (mmdet CocoMetric): ' + '  '.join(
            f"{k}: {metrics[f'coco/{task}_{k}']:.3f}" for k in ('mAP', 'mAP_50', 'mAP_75')))
    print(f'  checkpoint: {ckpt}')
    print('  predictions (mmdet DetLocalVisualizer):')
    for p in pictures:
        print(f'    {p}')
    print(f'  total time: {time.time() - t0:.0f} s')
    print('=' * 72)


def main_pretrain(args, t0):
    from mmplugin_shufflemamba.datasets import (generate_synthetic_ade20k,
                                                generate_synthetic_imagenet)
    cfg, metrics, ckpt = train_and_test(args, generate_synthetic_imagenet)
    t_pre = time.time() - t0
    seg = TASKS['segmentation']
    runs = {}
    for name, init in (('pretrained', dict(type='Pretrained', checkpoint=ckpt)),
                       ('scratch', None)):
        seg_args = argparse.Namespace(
            config=seg['config'], data_root=args.finetune_data_root or seg['data_root'],
            num_train=seg['num_train'],
            num_val=seg['num_val'], max_iters=args.finetune_iters,
            work_dir=osp.join(args.work_dir, f'finetune_{name}'),
            cfg_options={'model.backbone.init_cfg': init})
        _, runs[name], _ = train_and_test(seg_args, generate_synthetic_ade20k)
    print('\n' + '=' * 72)
    print(f"ShuffleMamba-tiny classifier (cls token, SLWS shuffle_rate="
          f"{cfg.model.backbone.shuffle_rate}) pretrained on synthetic ImageNet "
          f"({cfg.model.head.num_classes} classes), {cfg.train_cfg.max_iters} iterations "
          'on CPU')
    print(f"  top-1 (mmpretrain Accuracy, raw weights): {metrics['accuracy/top1']:.2f}   "
          f"(chance: {100 / cfg.model.head.num_classes:.2f})")
    print(f'  checkpoint: {ckpt}   ({t_pre:.0f} s)')
    print(f'Segmentation quickstart, {args.finetune_iters} iterations each:')
    print(f"  mIoU from the pretrained checkpoint: {runs['pretrained']['mIoU']:.2f}   "
          f"aAcc: {runs['pretrained']['aAcc']:.2f}")
    print(f"  mIoU from scratch:                   {runs['scratch']['mIoU']:.2f}   "
          f"aAcc: {runs['scratch']['aAcc']:.2f}")
    print(f'  total time: {time.time() - t0:.0f} s')
    print('=' * 72)
    return metrics, runs


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    import mmplugin_shufflemamba  # noqa: F401
    from mmplugin_shufflemamba.utils import STOP_ERRORS, stop_message
    run = dict(detection=main_detection, pretrain=main_pretrain).get(args.task,
                                                                     main_segmentation)
    try:
        run(args, t0)
    except STOP_ERRORS as e:  # a data or checkpoint check stopped it: no traceback
        sys.exit(stop_message(e, 'tools/quickstart.py'))


if __name__ == '__main__':
    main()
