"""A small, deterministic, learnable dataset in the real ADE20K directory layout.

``<root>/images/{training,validation}/*.jpg`` and
``<root>/annotations/{training,validation}/*.png``. Annotation values are ADE20K label
ids: 0 is "other" (ignored through ``reduce_zero_label``), 1..150 are ADE20K's classes.
Each image is a cluttered background ("wall") with a few textured shapes, one
class per (shape, colour, texture); a thin unlabeled (0) rim around every shape mimics
ADE20K's unannotated boundaries. mmseg's own ``ADE20KDataset`` reads it unchanged.
"""
import os
import os.path as osp
from typing import Dict, Tuple

import numpy as np

# ADE20K label ids (1-based index into ADE20KDataset.METAINFO['classes']).
SYNTHETIC_CLASSES: Dict[str, int] = {
    'wall': 1,  # background clutter
    'building': 2,  # squares, red stripes
    'sky': 3,  # circles, blue smooth gradient
    'tree': 5,  # triangles, green speckles
    'car': 21,  # ellipses, yellow checkerboard
}
_SHAPE_CLASSES = ('building', 'sky', 'tree', 'car')


def _texture(name: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    if name == 'building':
        s = 0.5 + 0.5 * np.sign(np.sin(xx * 0.9 + phase))
        rgb = np.stack([150 + 90 * s, 40 + 20 * s, 40 + 20 * s], -1)
    elif name == 'sky':
        g = (yy / max(h - 1, 1))
        rgb = np.stack([60 + 40 * g, 110 + 50 * g, 200 + 40 * g], -1)
    elif name == 'tree':
        n = rng.random((h, w)) > 0.6
        rgb = np.stack([30 + 40 * n, 120 + 100 * n, 30 + 30 * n], -1)
    elif name == 'car':
        c = ((xx // 4 + yy // 4) % 2).astype(np.float32)
        rgb = np.stack([200 + 50 * c, 190 + 50 * c, 30 + 40 * c], -1)
    else:  # wall clutter: smooth random blobs + noise, grayish
        low = rng.random((h // 16 + 2, w // 16 + 2)).astype(np.float32)
        low = np.kron(low, np.ones((16, 16), np.float32))[:h, :w]
        base = 90 + 80 * low + rng.normal(0, 12, (h, w))
        tint = rng.uniform(-15, 15, 3)
        rgb = np.stack([base + tint[0], base + tint[1], base + tint[2]], -1)
    return rgb


def _shape_mask(kind: str, h: int, w: int, cy: float, cx: float, r: float,
                rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 'building':
        return (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
    if kind == 'sky':
        return (yy - cy)**2 + (xx - cx)**2 <= r**2
    if kind == 'tree':  # upward triangle
        return (yy <= cy + r) & (yy >= cy - r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2)
    ratio = rng.uniform(0.45, 0.7)  # car: horizontal ellipse
    return ((yy - cy) / (r * ratio))**2 + ((xx - cx) / r)**2 <= 1


def render_sample(rng: np.random.Generator, size: Tuple[int, int] = (128, 128)
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """One (image RGB uint8 (H, W, 3), annotation uint8 (H, W)) pair."""
    h, w = size
    img = _texture('wall', h, w, rng)
    ann = np.full((h, w), SYNTHETIC_CLASSES['wall'], np.uint8)
    for _ in range(int(rng.integers(2, 5))):
        kind = _SHAPE_CLASSES[int(rng.integers(len(_SHAPE_CLASSES)))]
        r = rng.uniform(0.12, 0.22) * min(h, w)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        mask = _shape_mask(kind, h, w, cy, cx, r, rng)
        # 1-pixel unlabeled rim, as ADE20K's unannotated boundaries.
        rim = np.zeros_like(mask)
        rim[1:] |= mask[:-1]
        rim[:-1] |= mask[1:]
        rim[:, 1:] |= mask[:, :-1]
        rim[:, :-1] |= mask[:, 1:]
        rim &= ~mask
        tex = _texture(kind, h, w, rng)
        img[mask] = tex[mask]
        ann[rim] = 0
        ann[mask] = SYNTHETIC_CLASSES[kind]
    img = img + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), ann


def generate_synthetic_ade20k(root: str,
                              num_train: int = 200,
                              num_val: int = 40,
                              size: Tuple[int, int] = (128, 128),
                              seed: int = 0,
                              overwrite: bool = False) -> str:
    """Write the dataset under ``root`` (idempotent unless ``overwrite``).

    Returns:
        str: ``root``.
    """
    import cv2
    stamp = osp.join(root, '.synthetic_ade20k')
    key = f'{num_train} {num_val} {size[0]}x{size[1]} seed={seed} v1'
    if not overwrite and osp.exists(stamp) and open(stamp).read() == key:
        return root
    for split, num, offset in (('training', num_train, 0), ('validation', num_val, 10**6)):
        img_dir = osp.join(root, 'images', split)
        ann_dir = osp.join(root, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(num):
            rng = np.random.default_rng([seed, offset + i])
            img, ann = render_sample(rng, size)
            name = f'ADE_{"train" if split == "training" else "val"}_{i + 1:08d}'
            cv2.imwrite(osp.join(img_dir, name + '.jpg'), img[..., ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(osp.join(ann_dir, name + '.png'), ann)
    with open(stamp, 'w') as f:
        f.write(key)
    return root
