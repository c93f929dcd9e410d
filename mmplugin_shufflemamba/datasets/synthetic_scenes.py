"""The renderer shared by the synthetic dataset writers.

A scene is a cluttered background ("wall") with a few textured shapes drawn one after
another, one class per (shape, colour, texture): squares with red stripes (building),
circles with a blue gradient (sky), upward triangles with green speckles (tree) and
horizontal ellipses with a yellow checkerboard (car). :func:`render_scene` returns the
image and the list of drawn instances; the writers only turn that description into a
file format (:mod:`.synthetic_ade20k` a semantic map, :mod:`.synthetic_coco` instances),
so for the same seed both write the same images.
"""
import os.path as osp
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Tuple

import numpy as np

#: Classes of the drawn shapes, in the order the renderer samples them.
SHAPE_CLASSES: Tuple[str, ...] = ('building', 'sky', 'tree', 'car')
#: Class of the background clutter (not an instance).
BACKGROUND_CLASS = 'wall'

# Offsets of the per-image seed sequence, so that training and validation scenes differ.
_SPLIT_OFFSETS = {'train': 0, 'val': 10**6}


@dataclass
class SceneInstance:
    """One drawn shape.

    Args:
        name (str): Class name, one of :data:`SHAPE_CLASSES`.
        mask (np.ndarray): Boolean (H, W) mask of the pixels of the shape still
            visible in the image, i.e. not covered by shapes drawn after it.
        amodal_mask (np.ndarray): Boolean (H, W) mask of the whole shape as drawn,
            occluded parts included.
    """
    name: str
    mask: np.ndarray
    amodal_mask: np.ndarray

    @property
    def area(self) -> int:
        """int: Number of visible pixels."""
        return int(self.mask.sum())


@dataclass
class SyntheticScene:
    """A rendered scene.

    Args:
        image (np.ndarray): RGB uint8 image of shape (H, W, 3).
        instances (list[SceneInstance]): The shapes in drawing order (later ones lie
            on top of earlier ones). Defaults to an empty list.
        background (str): Class of every pixel no instance covers.
            Defaults to ``'wall'``.
    """
    image: np.ndarray
    instances: List[SceneInstance] = field(default_factory=list)
    background: str = BACKGROUND_CLASS

    @property
    def size(self) -> Tuple[int, int]:
        """tuple[int, int]: ``(height, width)`` of the scene."""
        return tuple(self.image.shape[:2])


def stamp_matches(root: str, name: str, key: str) -> bool:
    """Whether ``root`` holds a finished dataset written with arguments ``key``: the
    writers record their arguments in ``<root>/.<name>`` once everything is written
    (:func:`write_stamp`), so that a second call with the same arguments writes nothing."""
    path = osp.join(root, f'.{name}')
    if not osp.exists(path):
        return False
    with open(path) as f:
        return f.read() == key


def write_stamp(root: str, name: str, key: str) -> None:
    """Record that ``root`` holds the dataset written with arguments ``key``."""
    with open(osp.join(root, f'.{name}'), 'w') as f:
        f.write(key)


def scene_rng(seed: int, index: int, split: str = 'train') -> np.random.Generator:
    """The random generator scene ``index`` of ``split`` is rendered with.

    All writers draw their images with it, so that the same ``seed`` gives the same
    scenes whatever the output format.

    Args:
        seed (int): Dataset seed.
        index (int): 0-based image index within the split.
        split (str): ``'train'`` or ``'val'``. Defaults to ``'train'``.

    Returns:
        np.random.Generator: A fresh generator.
    """
    if split not in _SPLIT_OFFSETS:
        raise ValueError(f'split must be one of {tuple(_SPLIT_OFFSETS)}, got {split!r}')
    return np.random.default_rng([seed, _SPLIT_OFFSETS[split] + index])


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


def render_scene(rng: np.random.Generator,
                 size: Tuple[int, int] = (128, 128)) -> SyntheticScene:
    """Draw one scene.

    The background clutter is drawn first, then 2 to 4 shapes of random class, size
    and position, each on top of the previous ones, then pixel noise.

    Args:
        rng (np.random.Generator): Source of randomness; the whole scene is a function
            of its state (see :func:`scene_rng`).
        size (tuple[int, int]): ``(height, width)``. Defaults to ``(128, 128)``.

    Returns:
        SyntheticScene: The image and the drawn instances with their visible masks.
    """
    h, w = size
    img = _texture(BACKGROUND_CLASS, h, w, rng)
    kinds, amodal = [], []
    for _ in range(int(rng.integers(2, 5))):
        kind = SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))]
        r = rng.uniform(0.12, 0.22) * min(h, w)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        mask = _shape_mask(kind, h, w, cy, cx, r, rng)
        tex = _texture(kind, h, w, rng)
        img[mask] = tex[mask]
        kinds.append(kind)
        amodal.append(mask)
    img = img + rng.normal(0, 6, img.shape)
    # Visible part: what no later shape covers.
    instances = []
    covered = np.zeros((h, w), bool)
    for kind, mask in zip(reversed(kinds), reversed(amodal)):
        instances.append(SceneInstance(kind, mask & ~covered, mask))
        covered |= mask
    instances.reverse()
    return SyntheticScene(np.clip(img, 0, 255).astype(np.uint8), instances)


def outer_rim(mask: np.ndarray) -> np.ndarray:
    """The 1-pixel band just outside ``mask`` (4-connected neighbours).

    Args:
        mask (np.ndarray): Boolean (H, W) mask.

    Returns:
        np.ndarray: Boolean (H, W) mask, disjoint from ``mask``.
    """
    rim = np.zeros_like(mask)
    rim[1:] |= mask[:-1]
    rim[:-1] |= mask[1:]
    rim[:, 1:] |= mask[:, :-1]
    rim[:, :-1] |= mask[:, 1:]
    return rim & ~mask


def semantic_map(scene: SyntheticScene,
                 labels: Mapping[str, int],
                 rim_label: Optional[int] = None,
                 dtype: type = np.uint8) -> np.ndarray:
    """The per-pixel class map of a scene.

    Every pixel gets the label of the topmost instance that covers it, else the
    background's. With ``rim_label``, the 1-pixel band around each shape (as drawn,
    see :func:`outer_rim`) is labeled ``rim_label`` where no later shape covers it,
    which mimics the unannotated object boundaries of ADE20K.

    Args:
        scene (SyntheticScene): The rendered scene.
        labels (Mapping[str, int]): Label of each class name, the background's
            included.
        rim_label (int, optional): Label of the boundary bands; ``None`` draws none.
            Defaults to None.
        dtype (type): Output dtype. Defaults to ``np.uint8``.

    Returns:
        np.ndarray: (H, W) label map.
    """
    out = np.full(scene.size, labels[scene.background], dtype)
    for inst in scene.instances:
        if rim_label is not None:
            out[outer_rim(inst.amodal_mask)] = rim_label
        out[inst.mask] = labels[inst.name]
    return out
