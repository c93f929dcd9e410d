"""A small, deterministic, learnable classification set in the ImageNet folder layout.

``<root>/{train,val}/<class>/<name>.JPEG`` with ``<root>/meta/{train,val}.txt`` (lines
``<class>/<name>.JPEG <label>``, ImageNet's annotation format): mmpretrain's
``ImageNet`` / ``CustomDataset`` and torchvision's ``ImageFolder`` read it unchanged.

Each image is a scene of :func:`~.synthetic_scenes.render_scene` (the renderer of the
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

from .synthetic_scenes import (SHAPE_CLASSES, SyntheticScene, render_scene, scene_rng,
                               stamp_matches, write_stamp)

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

    Idempotent: a stamp file records the arguments, and a second call with the same
    arguments writes nothing.

    Args:
        root (str): Output directory.
        num_train (int): Number of training images. Defaults to 800.
        num_val (int): Number of validation images. Defaults to 200.
        size (tuple[int, int]): ``(height, width)``. Defaults to ``(64, 64)``.
        seed (int): Dataset seed (the scenes are those of the other writers for the
            same seed, minus the rejected ones). Defaults to 0.
        margin (float): dominance needed for a label (see :func:`dominant_class`).
            Defaults to 1.5.
        overwrite (bool): Write even if the stamp says the data is there.

    Returns:
        str: ``root``.
    """
    import cv2
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train and num_val must be >= 1, got {num_train}, {num_val}')
    key = f'{num_train} {num_val} {size[0]}x{size[1]} seed={seed} margin={margin} v1'
    if not overwrite and stamp_matches(root, 'synthetic_imagenet', key):
        return root
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    for split, num in (('train', num_train), ('val', num_val)):
        lines = []
        for cls in SYNTHETIC_IMAGENET_CLASSES:
            os.makedirs(osp.join(root, split, cls), exist_ok=True)
        for i, (img, label) in enumerate(_render_split(seed, split, num, size, margin)):
            rel = f'{SYNTHETIC_IMAGENET_CLASSES[label]}/{split}_{i + 1:08d}.JPEG'
            cv2.imwrite(osp.join(root, split, rel), img[..., ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            lines.append(f'{rel} {label}\n')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.writelines(lines)
    write_stamp(root, 'synthetic_imagenet', key)
    return root
