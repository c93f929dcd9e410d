"""A small, deterministic, learnable dataset in the real ADE20K directory layout.

``<root>/images/{training,validation}/*.jpg`` and
``<root>/annotations/{training,validation}/*.png``. Annotation values are ADE20K label
ids: 0 is "other" (ignored through ``reduce_zero_label``), 1..150 are ADE20K's classes.
Each image is a scene of :func:`~.scenes.render_scene`: a cluttered background
("wall") with a few textured shapes, one class per (shape, colour, texture); a thin
unlabeled (0) rim around every shape mimics ADE20K's unannotated boundaries. mmseg's own
``ADE20KDataset`` reads it unchanged.
"""
import os
import os.path as osp
from typing import Dict, Tuple

import numpy as np

from .scenes import (DataRoot, SyntheticScene, check_writer_args, render_scene,
                               scene_rng, semantic_map, write_image)

# ADE20K label ids (1-based index into ADE20KDataset.METAINFO['classes']).
SYNTHETIC_CLASSES: Dict[str, int] = {
    'wall': 1,  # background clutter
    'building': 2,  # squares, red stripes
    'sky': 3,  # circles, blue smooth gradient
    'tree': 5,  # triangles, green speckles
    'car': 21,  # ellipses, yellow checkerboard
}
#: Label id of the unannotated boundaries (ignored with ``reduce_zero_label``).
ADE20K_UNLABELED = 0


def ade20k_semantic_map(scene: SyntheticScene) -> np.ndarray:
    """The ADE20K annotation of a scene.

    Args:
        scene (SyntheticScene): A scene from :func:`~.scenes.render_scene`.

    Returns:
        np.ndarray: uint8 (H, W) map of ADE20K label ids (:data:`SYNTHETIC_CLASSES`),
        0 on the 1-pixel rim around every shape.
    """
    return semantic_map(scene, SYNTHETIC_CLASSES, rim_label=ADE20K_UNLABELED)


def render_sample(rng: np.random.Generator, size: Tuple[int, int] = (128, 128)
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """Render one scene as an ADE20K (image, annotation) pair.

    Args:
        rng (np.random.Generator): Source of randomness.
        size (tuple[int, int]): ``(height, width)``. Defaults to ``(128, 128)``.

    Returns:
        tuple[np.ndarray, np.ndarray]: RGB uint8 image (H, W, 3) and uint8
        annotation (H, W) of ADE20K label ids.
    """
    scene = render_scene(rng, size)
    return scene.image, ade20k_semantic_map(scene)


def generate_synthetic_ade20k(root: str,
                              num_train: int = 200,
                              num_val: int = 40,
                              size: Tuple[int, int] = (128, 128),
                              seed: int = 0,
                              overwrite: bool = False) -> str:
    """Write the dataset under ``root`` in the ADE20K layout.

    Idempotent: the stamp ``<root>/.synthetic_ade20k`` records the arguments and the
    files written, and a second call with the same arguments writes nothing. A call with
    other arguments removes the files of the previous run (those the stamp lists, nothing
    else) before writing, so that the split directories never mix two datasets. A root
    holding files that the stamp does not list (or that is not empty and has no stamp) is
    refused with ``FileExistsError``: nothing is removed or written.

    Args:
        root (str): Output directory.
        num_train (int): Number of training images (>= 0). Defaults to 200.
        num_val (int): Number of validation images (>= 0; 0 writes an empty
            split). Defaults to 40.
        size (tuple[int, int]): ``(height, width)`` of the images.
            Defaults to ``(128, 128)``.
        seed (int): Dataset seed. Defaults to 0.
        overwrite (bool): Rewrite even if the stamp says the data is there (the files
            of the previous run are removed first). Defaults to False.

    Returns:
        str: ``root``.
    """
    import cv2
    size = check_writer_args(num_train, num_val, size)
    key = f'{num_train} {num_val} {size[0]}x{size[1]} seed={seed} v1'
    data_root = DataRoot(root, 'synthetic_ade20k', 'generate_synthetic_ade20k',
                         r'(images/(training|validation)/ADE_(train|val)_\d{8}\.jpg|'
                         r'annotations/(training|validation)/ADE_(train|val)_\d{8}\.png)')
    if not data_root.prepare(key, overwrite):
        return root
    splits = (('training', 'train', num_train), ('validation', 'val', num_val))
    files = [f'{kind}/{split}/ADE_{short}_{i + 1:08d}.{ext}'
             for split, short, num in splits for i in range(num)
             for kind, ext in (('images', 'jpg'), ('annotations', 'png'))]
    data_root.write_stamp(key, files, complete=False)
    for split, short, num in splits:
        img_dir = osp.join(root, 'images', split)
        ann_dir = osp.join(root, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(num):
            img, ann = render_sample(scene_rng(seed, i, short), size)
            name = f'ADE_{short}_{i + 1:08d}'
            write_image(osp.join(img_dir, name + '.jpg'), img[..., ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            write_image(osp.join(ann_dir, name + '.png'), ann)
    data_root.write_stamp(key, files, complete=True)
    return root
