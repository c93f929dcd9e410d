"""A small, deterministic, learnable classification set in the ImageNet folder layout.

``<root>/{train,val}/<class>/<name>.JPEG`` with ``<root>/meta/{train,val}.txt`` (lines
``<class>/<name>.JPEG <label>``, ImageNet's annotation format): mmpretrain's
``ImageNet`` / ``CustomDataset`` and torchvision's ``ImageFolder`` read it unchanged.

Each image is a scene of :func:`~.scenes.render_scene` labeled with the class of its
dominant shape (largest visible area); scenes where no shape dominates clearly
(:func:`dominant_class`) are skipped, and so are scenes of a class that has its share of
the split already (the classes are balanced).
"""
import os.path as osp
from collections import Counter
from typing import List, Optional, Tuple

import numpy as np

from .scenes import (SHAPE_CLASSES, SyntheticScene, check_writer_args, render_scene,
                     scene_rng, write_dataset, write_image)

#: Class names, in label order.
SYNTHETIC_IMAGENET_CLASSES: Tuple[str, ...] = SHAPE_CLASSES
# What a key-only stamp of this writer owns (see scenes.write_dataset).
_LEGACY_FILES = (r'((train|val)/(' + '|'.join(SYNTHETIC_IMAGENET_CLASSES) +
                 r')/(train|val)_\d{8}\.JPEG|meta/(train|val)\.txt)')


def dominant_class(scene: SyntheticScene, margin: float = 1.5) -> Optional[int]:
    """Label of the class with the largest visible area, or None when it is not at
    least ``margin`` times the visible area of the runner-up class."""
    areas = Counter()
    for inst in scene.instances:
        areas[inst.name] += inst.area
    ranked = areas.most_common(2)
    if (not ranked or ranked[0][1] == 0
            or len(ranked) > 1 and ranked[0][1] < margin * ranked[1][1]):
        return None
    return SYNTHETIC_IMAGENET_CLASSES.index(ranked[0][0])


def _render_split(seed: int, split: str, num: int, size: Tuple[int, int],
                  margin: float) -> List[Tuple[str, np.ndarray, int]]:
    """``(file path under the split, image, label)`` of the ``num`` images of ``split``."""
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
            name = f'{SYNTHETIC_IMAGENET_CLASSES[label]}/{split}_{len(samples) + 1:08d}.JPEG'
            samples.append((name, scene.image, label))
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
    """Write the dataset under ``root`` in the ImageNet folder layout; returns ``root``.
    Idempotent and never mixing two datasets, as :func:`~.ade20k.generate_synthetic_ade20k`
    (stamp ``.synthetic_imagenet``).

    Args:
        root (str): Output directory.
        num_train (int): Number of training images (>= 1). Defaults to 800.
        num_val (int): Number of validation images (>= 1). Defaults to 200.
        size (tuple[int, int]): ``(height, width)``. Defaults to ``(64, 64)``.
        seed (int): Dataset seed (the scenes are those of the other writers for the
            same seed, minus the rejected ones). Defaults to 0.
        margin (float): dominance needed for a label (see :func:`dominant_class`).
            Defaults to 1.5.
        overwrite (bool): Rewrite even if the stamp says the data is there.
            Defaults to False.
    """
    size = check_writer_args(num_train, num_val, size, min_count=1)

    def plan():
        samples = {split: _render_split(seed, split, num, size, margin)
                   for split, num in (('train', num_train), ('val', num_val))}

        def write():
            for split, split_samples in samples.items():
                for rel, img, _ in split_samples:
                    write_image(osp.join(root, split, rel), img)
                with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
                    f.writelines(f'{rel} {label}\n' for rel, _, label in split_samples)

        files = [f'{split}/{rel}' for split in samples for rel, _, _ in samples[split]]
        files += [f'meta/{split}.txt' for split in samples]
        dirs = ['meta'] + [f'{split}/{cls}' for split in samples
                           for cls in SYNTHETIC_IMAGENET_CLASSES]
        return files, dirs, write

    key = f'{num_train} {num_val} {size[0]}x{size[1]} seed={seed} margin={margin} v1'
    return write_dataset(root, 'synthetic_imagenet', key, _LEGACY_FILES, overwrite, plan)
