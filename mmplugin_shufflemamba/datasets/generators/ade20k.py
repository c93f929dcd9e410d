"""A small, deterministic, learnable dataset in the real ADE20K directory layout.

``<root>/images/{training,validation}/*.jpg`` and
``<root>/annotations/{training,validation}/*.png`` of ADE20K label ids: 0 is "other"
(ignored through ``reduce_zero_label``), 1..150 ADE20K's classes. Each image is a scene of
:func:`~.scenes.render_scene`, one class per shape and a thin unlabeled (0) rim around
every shape, as ADE20K's unannotated boundaries. mmseg's ``ADE20KDataset`` reads it.
"""
import os.path as osp
from typing import Dict, Tuple

import numpy as np

from .scenes import (SyntheticScene, check_writer_args, render_scene, scene_rng,
                     semantic_map, write_dataset, write_image)

#: ADE20K label ids (1-based index into ADE20KDataset.METAINFO['classes']) of the classes.
SYNTHETIC_CLASSES: Dict[str, int] = {'wall': 1, 'building': 2, 'sky': 3, 'tree': 5, 'car': 21}
# What a key-only stamp of this writer owns (see scenes.write_dataset).
_LEGACY_FILES = (r'(images/(training|validation)/ADE_(train|val)_\d{8}\.jpg|'
                 r'annotations/(training|validation)/ADE_(train|val)_\d{8}\.png)')


def ade20k_semantic_map(scene: SyntheticScene) -> np.ndarray:
    """The ADE20K annotation of a scene of :func:`~.scenes.render_scene`: uint8 (H, W)
    map of ADE20K label ids (:data:`SYNTHETIC_CLASSES`), 0 (unlabeled, ignored with
    ``reduce_zero_label``) on the rim around every shape."""
    return semantic_map(scene, SYNTHETIC_CLASSES, rim_label=0)


def render_sample(rng: np.random.Generator, size: Tuple[int, int] = (128, 128)
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """Render one scene as an ADE20K pair: RGB uint8 image (H, W, 3) and uint8 annotation
    (H, W) of ADE20K label ids.

    Args:
        rng (np.random.Generator): Source of randomness.
        size (tuple[int, int]): ``(height, width)``. Defaults to ``(128, 128)``.
    """
    scene = render_scene(rng, size)
    return scene.image, ade20k_semantic_map(scene)


def generate_synthetic_ade20k(root: str,
                              num_train: int = 200,
                              num_val: int = 40,
                              size: Tuple[int, int] = (128, 128),
                              seed: int = 0,
                              overwrite: bool = False) -> str:
    """Write the dataset under ``root`` in the ADE20K layout; returns ``root``.

    Idempotent through the stamp ``<root>/.synthetic_ade20k``: the same arguments write
    nothing, other ones replace the files of the previous run, and a root holding files
    the stamp does not list is refused with ``FileExistsError``.

    Args:
        root (str): Output directory.
        num_train (int): Number of training images (>= 0). Defaults to 200.
        num_val (int): Number of validation images (>= 0; 0 writes an empty split).
            Defaults to 40.
        size (tuple[int, int]): ``(height, width)`` of the images. Defaults to (128, 128).
        seed (int): Dataset seed. Defaults to 0.
        overwrite (bool): Rewrite even if the stamp says the data is there.
            Defaults to False.
    """
    size = check_writer_args(num_train, num_val, size)
    splits = (('training', 'train', num_train), ('validation', 'val', num_val))
    stems = [(split, short, i, f'ADE_{short}_{i + 1:08d}') for split, short, num in splits
             for i in range(num)]

    def write():
        for split, short, i, stem in stems:
            img, ann = render_sample(scene_rng(seed, i, short), size)
            write_image(osp.join(root, 'images', split, stem + '.jpg'), img)
            write_image(osp.join(root, 'annotations', split, stem + '.png'), ann)

    files = [f'{kind}/{split}/{stem}.{ext}' for split, _, _, stem in stems
             for kind, ext in (('images', 'jpg'), ('annotations', 'png'))]
    dirs = [f'{kind}/{split}' for split, _, _ in splits for kind in ('images', 'annotations')]
    key = f'{num_train} {num_val} {size[0]}x{size[1]} seed={seed} v1'
    return write_dataset(root, 'synthetic_ade20k', key, _LEGACY_FILES, overwrite,
                         lambda: (files, dirs, write))
