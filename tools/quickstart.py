"""Quickstart: fine-tune a tiny ShuffleMamba-UperNet on a generated ADE20K-layout
dataset on CPU, evaluate mIoU with mmseg's IoUMetric and write prediction overlays.

    python tools/quickstart.py [--work-dir work_dirs/quickstart] [--max-iters 600]
"""
import argparse
import os
import os.path as osp
import time

import numpy as np

QUICKSTART_CONFIG = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'quickstart',
    'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')


def parse_args():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default=QUICKSTART_CONFIG)
    p.add_argument('--data-root', default='data/synthetic_ade20k')
    p.add_argument('--work-dir', default='work_dirs/quickstart')
    p.add_argument('--max-iters', type=int, default=None)
    p.add_argument('--num-train', type=int, default=240)
    p.add_argument('--num-val', type=int, default=48)
    p.add_argument('--num-overlays', type=int, default=4)
    return p.parse_args()


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


def main():
    args = parse_args()
    t0 = time.time()
    from mmengine.config import Config
    from mmengine.runner import Runner

    import mmplugin_shufflemamba  # noqa: F401
    from mmplugin_shufflemamba.datasets import generate_synthetic_ade20k
    from mmplugin_shufflemamba.utils import prepare_runtime

    generate_synthetic_ade20k(args.data_root, args.num_train, args.num_val)
    majority, base_miou = majority_baseline(
        osp.join(args.data_root, 'annotations', 'validation'))

    cfg = Config.fromfile(args.config)
    cfg.work_dir = args.work_dir
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = args.data_root
    if args.max_iters:
        cfg.train_cfg.max_iters = args.max_iters
        cfg.train_cfg.val_interval = args.max_iters
        cfg.default_hooks.checkpoint.interval = args.max_iters
        warmup = min(cfg.param_scheduler[0].end, max(1, args.max_iters // 10))
        cfg.param_scheduler[0].end = warmup
        cfg.param_scheduler[-1].begin = warmup
        cfg.param_scheduler[-1].end = args.max_iters
    prepare_runtime(cfg, 'none')
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    ckpt = osp.join(args.work_dir, f'iter_{cfg.train_cfg.max_iters}.pth')
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


if __name__ == '__main__':
    main()
