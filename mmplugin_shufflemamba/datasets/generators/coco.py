"""The synthetic scenes as a COCO instance-segmentation dataset.

``<root>/{train2017,val2017}/*.jpg`` and
``<root>/annotations/instances_{train2017,val2017}.json`` in the real COCO format, read by
pycocotools and mmdet's ``CocoDataset`` (``metainfo=dict(classes=SYNTHETIC_COCO_CLASSES)``).
The images are those of :func:`~.ade20k.generate_synthetic_ade20k` for the same seed and
size; each visible shape is an instance (its mask as polygons), the background is not.
"""
import json
import os.path as osp
from typing import Dict, List, Tuple

import numpy as np

from .scenes import (SHAPE_CLASSES, check_writer_args, render_scene, scene_rng, write_dataset,
                     write_image)

#: Class names in category-id order (category id = index + 1).
SYNTHETIC_COCO_CLASSES: Tuple[str, ...] = SHAPE_CLASSES
# Roughly the colour of each class's texture.
_PALETTE: Tuple[Tuple[int, int, int], ...] = ((220, 60, 60), (80, 135, 220), (50, 170, 45),
                                              (225, 215, 50))
# What a key-only stamp of this writer owns (see scenes.write_dataset).
_LEGACY_FILES = r'((train|val)2017/\d{12}\.jpg|annotations/instances_(train|val)2017\.json)'


def synthetic_coco_metainfo() -> Dict[str, list]:
    """The ``metainfo`` of mmdet's ``CocoDataset`` for this dataset: the classes in
    category-id order and one RGB colour per class."""
    return dict(classes=SYNTHETIC_COCO_CLASSES, palette=list(_PALETTE))


def _holes(mask: np.ndarray) -> List[np.ndarray]:
    """Background regions enclosed by ``mask`` (4-connected, as OpenCV's contours)."""
    import cv2
    bg = np.pad(~mask, 1, constant_values=True).astype(np.uint8)
    num, comp = cv2.connectedComponents(bg, connectivity=4)
    return [comp[1:-1, 1:-1] == k for k in range(1, num) if k != comp[0, 0]]


def _hole_free_parts(mask: np.ndarray) -> List[np.ndarray]:
    """Split ``mask`` column-wise through its holes until no part has one."""
    holes = _holes(mask)
    if not holes:
        return [mask]
    cols = np.flatnonzero(holes[0].any(0))
    cut = int(cols[len(cols) // 2])  # a column through the hole: opens it on both sides
    left, right = mask.copy(), mask.copy()
    left[:, cut:] = False
    right[:, :cut] = False
    return _hole_free_parts(left) + _hole_free_parts(right)


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons (flat ``[x0, y0, x1, y1, ...]`` lists) of a binary mask, one per
    connected part (a part with holes is first cut into hole-free pieces), dropping those
    of fewer than 3 points.

    Pixel ``(x, y)`` covers ``[x, x + 1) x [y, y + 1)`` (COCO). The contours are taken on
    the mask upsampled 2x, so each polygon runs a quarter pixel inside the outer edges of
    its boundary pixels and rasterising it (pycocotools) gives back the mask.

    Args:
        mask (np.ndarray): (H, W) mask, nonzero inside.
    """
    import cv2
    polygons = []
    for part in _hole_free_parts(np.asarray(mask).astype(bool)):
        up = np.repeat(np.repeat(part, 2, 0), 2, 1).astype(np.uint8)
        contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            pts = contour.reshape(-1, 2)
            if len(pts) >= 3:
                polygons.append([round(float(v), 2) for v in ((pts + 0.5) / 2).ravel()])
    return polygons


def mask_to_bbox(mask: np.ndarray) -> List[float]:
    """COCO box ``[x, y, w, h]`` (coordinates of :func:`mask_to_polygons`) of the pixels
    of a non-empty (H, W) mask, nonzero inside."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)]


def generate_synthetic_coco(root: str,
                            num_train: int = 200,
                            num_val: int = 40,
                            size: Tuple[int, int] = (128, 128),
                            seed: int = 0,
                            overwrite: bool = False,
                            min_area: int = 100) -> str:
    """Write the dataset under ``root`` in the COCO instance-segmentation layout; returns
    ``root``. Idempotent and never mixing two datasets, as
    :func:`~.ade20k.generate_synthetic_ade20k` (stamp ``.synthetic_coco``).

    Image ``i`` of a split has file name ``f'{id:012d}.jpg'`` and id ``i + 1`` (train)
    or ``10**6 + i + 1`` (val); annotation ids count from 1 in each file. Images whose
    shapes are all dropped are kept, with no annotation.

    Args:
        root (str): Output directory.
        num_train (int): Number of training images (>= 0). Defaults to 200.
        num_val (int): Number of validation images (>= 0). Defaults to 40.
        size (tuple[int, int]): ``(height, width)`` of the images. Defaults to (128, 128).
        seed (int): Dataset seed. Defaults to 0.
        overwrite (bool): Rewrite even if the stamp says the data is there.
            Defaults to False.
        min_area (int): Shapes with fewer visible pixels are not annotated.
            Defaults to 100.
    """
    size = check_writer_args(num_train, num_val, size)
    splits = (('train', num_train, 0), ('val', num_val, 10**6))
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(SYNTHETIC_COCO_CLASSES)]

    def write():
        for split, num, id_offset in splits:
            images, annotations = [], []
            for i in range(num):
                scene = render_scene(scene_rng(seed, i, split), size)
                image_id = id_offset + i + 1
                file_name = f'{image_id:012d}.jpg'
                write_image(osp.join(root, f'{split}2017', file_name), scene.image)
                images.append(dict(id=image_id, file_name=file_name, height=size[0],
                                   width=size[1]))
                for inst in scene.instances:
                    # (an empty mask has no polygon, whatever min_area)
                    polygons = mask_to_polygons(inst.mask) if inst.area >= min_area else []
                    if polygons:
                        annotations.append(dict(
                            id=len(annotations) + 1, image_id=image_id,
                            category_id=SYNTHETIC_COCO_CLASSES.index(inst.name) + 1,
                            segmentation=polygons, area=float(inst.area),
                            bbox=mask_to_bbox(inst.mask), iscrowd=0))
            info = dict(description=f'synthetic shapes, {split}, seed {seed}', version='1.0')
            with open(osp.join(root, 'annotations', f'instances_{split}2017.json'), 'w') as f:
                json.dump(dict(info=info, licenses=[], images=images, annotations=annotations,
                               categories=categories), f)

    files = [f'{split}2017/{id_offset + i + 1:012d}.jpg' for split, num, id_offset in splits
             for i in range(num)]
    files += [f'annotations/instances_{split}2017.json' for split, _, _ in splits]
    dirs = ['annotations'] + [f'{split}2017' for split, _, _ in splits]
    key = f'{num_train} {num_val} {size[0]}x{size[1]} seed={seed} min_area={min_area} v1'
    return write_dataset(root, 'synthetic_coco', key, _LEGACY_FILES, overwrite,
                         lambda: (files, dirs, write))
