"""A small, deterministic, learnable classification set in the ImageNet folder layout.

``<root>/{train,val}/<class>/<name>.JPEG`` with ``<root>/meta/{train,val}.txt`` (lines
``<class>/<name>.JPEG <label>``, ImageNet's annotation format): mmpretrain's
``ImageNet`` / ``CustomDataset`` and torchvision's ``ImageFolder`` read it unchanged.

Each image is a scene of :func:`~.scenes.render_scene` (the renderer of the
segmentation and detection sets) labeled with the class of its dominant shape, the one
with the largest visible area; scenes where no shape dominates clearly (the largest
visible area is less than ``margin`` times the second class's) are skipped, so that the
label is a property of the image, and so are scenes of a class that has its share of
the split already (the classes are balanced).
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

import numpy as np

from .scenes import (SHAPE_CLASSES, DataRoot, SyntheticScene, check_writer_args,
                               render_scene, scene_rng, write_image)

#: Class names, in label order.
SYNTHETIC_IMAGENET_CLASSES: Tuple[str, ...] = SHAPE_CLASSES


def dominant_class(scene: SyntheticScene, margin: float = 1.5) -> Optional[int]:
    """Label of the class with the largest visible area, or None when it is not at
    least ``margin`` times the visible area of the runner-up class."""
    areas: Dict[str, int] = {}
    for inst in scene.instances:
        areas[inst.name] = areas.get(inst.name, 0) + inst.area
    ranked = sorted(areas.items(), key=lambda kv: -kv[1])
    if not ranked or ranked[0][1] == 0:
        return None
    if len(ranked) > 1 and ranked[0][1] < margin * ranked[1][1]:
        return None
    return SYNTHETIC_IMAGENET_CLASSES.index(ranked[0][0])


def _render_split(seed: int, split: str, num: int, size: Tuple[int, int],
                  margin: float) -> List[Tuple[np.ndarray, int]]:
    # Balanced: at most ceil(num / C) images per class (a class whose quota is full
    # skips its scenes), so that the majority-class baseline is about 1 / C.
    num_classes = len(SYNTHETIC_IMAGENET_CLASSES)
    quota = -(-num // num_classes)
    counts = [0] * num_classes
    samples, index = [], 0
    while len(samples) < num:
        scene = render_scene(scene_rng(seed, index, split), size)
        index += 1
        label = dominant_class(scene, margin)
        if label is not None and counts[label] < quota:
            counts[label] += 1
            samples.append((scene.image, label))
        if index > 40 * num + 200:
            raise RuntimeError(f'margin={margin} rejects almost every scene; lower it')
    return samples


def generate_synthetic_imagenet(root: str,
                                num_train: int = 800,
                                num_val: int = 200,
                                size: Tuple[int, int] = (64, 64),
                                seed: int = 0,
                                margin: float = 1.5,
                                overwrite: bool = False) -> str:
    """Write the dataset under ``root`` in the ImageNet folder layout.

    Idempotent, and never mixes two datasets, as
    :func:`~.ade20k.generate_synthetic_ade20k` (stamp ``.synthetic_imagenet``):
    other arguments replace the files of the previous run, a root with files the stamp
    does not list is refused with ``FileExistsError``.

    Args:
        root (str): Output directory.
        num_train (int): Number of training images (>= 1). Defaults to 800.
        num_val (int): Number of validation images (>= 1). Defaults to 200.
        size (tuple[int, int]): ``(height, width)``. Defaults to ``(64, 64)``.
        seed (int): Dataset seed (the scenes are those of the other writers for the
            same seed, minus the rejected ones). Defaults to 0.
        margin (float): dominance needed for a label (see :func:`dominant_class`).
            Defaults to 1.5.
        overwrite (bool): Rewrite even if the stamp says the data is there (the files
            of the previous run are removed first). Defaults to False.

    Returns:
        str: ``root``.
    """
    import cv2
    size = check_writer_args(num_train, num_val, size, min_count=1)
    key = f'{num_train} {num_val} {size[0]}x{size[1]} seed={seed} margin={margin} v1'
    data_root = DataRoot(root, 'synthetic_imagenet', 'generate_synthetic_imagenet',
                         r'((train|val)/(' + '|'.join(SYNTHETIC_IMAGENET_CLASSES) +
                         r')/(train|val)_\d{8}\.JPEG|meta/(train|val)\.txt)')
    if not data_root.prepare(key, overwrite):
        return root
    samples = {split: _render_split(seed, split, num, size, margin)
               for split, num in (('train', num_train), ('val', num_val))}
    names = {split: [f'{SYNTHETIC_IMAGENET_CLASSES[label]}/{split}_{i + 1:08d}.JPEG'
                     for i, (_, label) in enumerate(samples[split])] for split in samples}
    files = [f'{split}/{rel}' for split in names for rel in names[split]]
    files += [f'meta/{split}.txt' for split in names]
    data_root.write_stamp(key, files, complete=False)
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    for split in ('train', 'val'):
        lines = []
        for cls in SYNTHETIC_IMAGENET_CLASSES:
            os.makedirs(osp.join(root, split, cls), exist_ok=True)
        for rel, (img, label) in zip(names[split], samples[split]):
            write_image(osp.join(root, split, rel), img[..., ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            lines.append(f'{rel} {label}\n')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.writelines(lines)
    data_root.write_stamp(key, files, complete=True)
    return root
