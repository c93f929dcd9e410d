"""The renderer shared by the synthetic dataset writers, and their common file handling.

A scene is a cluttered background ("wall") with a few textured shapes drawn one after
another, one class per (shape, colour, texture): squares with red stripes (building),
circles with a blue gradient (sky), upward triangles with green speckles (tree) and
horizontal ellipses with a yellow checkerboard (car). The writers only turn a scene into
a file format, so for the same seed they all write the same images.
"""
import importlib
import json
import os
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..data_checks import _examples

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
        mask (np.ndarray): Boolean (H, W) mask of the visible pixels (not covered by
            later shapes).
        amodal_mask (np.ndarray): Boolean (H, W) mask of the whole shape as drawn.
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
        instances (list[SceneInstance]): The shapes in drawing order (later ones on
            top). Defaults to an empty list.
        background (str): Class of every pixel no instance covers. Defaults to 'wall'.
    """
    image: np.ndarray
    instances: List[SceneInstance] = field(default_factory=list)
    background: str = BACKGROUND_CLASS

    @property
    def size(self) -> Tuple[int, int]:
        """tuple[int, int]: ``(height, width)`` of the scene."""
        return tuple(self.image.shape[:2])


def _read_stamp(path: str) -> Optional[dict]:
    """The stamp as ``dict(key=..., complete=..., files=[...])``, None without one."""
    if not osp.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        text = f.read()
    try:
        stamp = json.loads(text)
    except ValueError:
        stamp = None
    if not (isinstance(stamp, dict) and isinstance(stamp.get('key'), str)
            and isinstance(stamp.get('files'), list)):
        # The stamp of earlier versions: the argument key alone, written at the end.
        stamp = dict(key=text, complete=True, files=None)
    return stamp


def _present_files(root: str, stamp_name: str) -> List[str]:
    """Relative paths (``/``-separated) of the files under ``root``, stamps aside."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        rel_dir = osp.relpath(d, root)
        for f in sorted(files + [x for x in dirs if osp.islink(osp.join(d, x))]):
            rel = f if rel_dir == '.' else f'{rel_dir}/{f}'.replace(os.sep, '/')
            if rel not in (stamp_name, stamp_name + '.tmp'):
                out.append(rel)
    return out


def _remove(root: str, files: List[str]) -> None:
    """Remove ``files`` and the directories they leave empty (never ``root`` itself)."""
    dirs = set()
    for rel in files:
        parts = rel.split('/')
        os.remove(osp.join(root, *parts))
        dirs.update('/'.join(parts[:i]) for i in range(1, len(parts)))
    for rel in sorted(dirs, key=lambda d: -d.count('/')):  # deepest first
        path = osp.join(root, *rel.split('/'))
        if osp.isdir(path) and not os.listdir(path):
            os.rmdir(path)


def write_dataset(root: str, name: str, key: str, legacy_pattern: str, overwrite: bool,
                  plan: Callable[[], Tuple[List[str], Sequence[str], Callable[[], None]]]
                  ) -> str:
    """Write a writer's dataset into ``root`` unless its stamp ``<root>/.<name>`` (JSON:
    ``key``, the files, complete or not) says it is there; returns ``root``. Another
    ``key`` (or ``overwrite``) first removes exactly the stamp's files; a root holding
    other files is refused with ``FileExistsError`` (docs/getting_started.md).

    Args:
        root (str): The output directory.
        name (str): The dataset's name, e.g. ``'synthetic_ade20k'``: its writer is
            ``generate_<name>``.
        key (str): The writer's arguments.
        legacy_pattern (str): Regular expression of the relative paths that a key-only
            stamp (of earlier versions) owns.
        overwrite (bool): Rewrite even a complete dataset of ``key``.
        plan (Callable): Called when the dataset must be written; returns ``(files, dirs,
            write)``: the relative paths ``write()`` writes, the directories to create.
    """
    importlib.import_module('cv2')  # without OpenCV, fail before root is touched
    writer, stamp_name = f'generate_{name}', f'.{name}'
    stamp_path = osp.join(root, stamp_name)
    stamp, present = _read_stamp(stamp_path), _present_files(root, stamp_name)
    if stamp is None:
        owned = set()
    elif stamp['files'] is None:
        owned = {p for p in present if re.fullmatch(legacy_pattern, p)}
    else:
        owned = set(stamp['files'])
    foreign = [p for p in present if p not in owned]
    if foreign:
        why = (f'has {len(foreign)} file(s) that {writer} did not write' if stamp is not None
               else f"is not empty ({len(foreign)} file(s)) and has no stamp '{stamp_name}', so "
               f'{writer} did not write it')
        raise FileExistsError(
            f'{root} {why}: {_examples([repr(p) for p in foreign])}. {writer} writes only '
            'into an empty directory or one it wrote before (it never deletes files it did '
            'not write, and the frameworks would read them together with the new ones): '
            'choose another directory or remove those files.')
    if stamp is not None:
        if stamp['complete'] and stamp['key'] == key and not overwrite:
            return root
        if present:  # all of them owned
            _remove(root, present)
            from mmengine.logging import print_log
            why = 'overwrite=True' if stamp['key'] == key and stamp['complete'] else (
                f"it held {stamp['key']!r}" + ('' if stamp['complete'] else ' (unfinished)'))
            print_log(f'{writer}: removed the {len(present)} files of the previous run in '
                      f'{root} ({why}) before writing {key!r}', logger='current')
    files, dirs, write = plan()

    def write_stamp(complete: bool) -> None:
        os.makedirs(root, exist_ok=True)
        with open(stamp_path + '.tmp', 'w', encoding='utf-8') as f:
            json.dump(dict(key=key, complete=complete, files=sorted(files)), f, indent=0)
        os.replace(stamp_path + '.tmp', stamp_path)

    write_stamp(complete=False)
    for d in dirs:
        os.makedirs(osp.join(root, d), exist_ok=True)
    write()
    write_stamp(complete=True)
    return root


def write_image(path: str, image: np.ndarray) -> None:
    """``cv2.imwrite`` of an RGB (H, W, 3) image (JPEG quality 95) or an (H, W) label map,
    raising instead of returning False."""
    import cv2
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if image.ndim == 3 else []
    if not cv2.imwrite(path, image[..., ::-1] if image.ndim == 3 else image, params):
        raise OSError(f'{path}: could not be written (cv2.imwrite failed)')


def check_writer_args(num_train: int, num_val: int, size, min_count: int = 0
                      ) -> Tuple[int, int]:
    """Check that ``num_train`` / ``num_val`` are integers >= ``min_count``, not both 0,
    and ``size`` two integers >= 1; returns ``size`` as a tuple."""
    for arg, value in (('num_train', num_train), ('num_val', num_val)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < min_count:
            raise ValueError(f'{arg} must be an integer >= {min_count}, got {value!r}')
    if num_train + num_val == 0:
        raise ValueError('num_train and num_val are both 0: nothing to write')
    try:
        h, w = (int(v) for v in size)
        ok = (h, w) == tuple(size) and h >= 1 and w >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f'size must be (height, width), two integers >= 1, got {size!r}')
    return h, w


def scene_rng(seed: int, index: int, split: str = 'train') -> np.random.Generator:
    """A fresh generator for scene ``index`` of ``split`` (the same for all writers, so
    that a seed gives the same scenes in every format).

    Args:
        seed (int): Dataset seed.
        index (int): 0-based image index within the split.
        split (str): ``'train'`` or ``'val'``. Defaults to ``'train'``.
    """
    if split not in _SPLIT_OFFSETS:
        raise ValueError(f'split must be one of {tuple(_SPLIT_OFFSETS)}, got {split!r}')
    return np.random.default_rng([seed, _SPLIT_OFFSETS[split] + index])


def _texture(name: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    if name == 'building':
        s = 0.5 + 0.5 * np.sign(np.sin(xx * 0.9 + phase))
        return np.stack([150 + 90 * s, 40 + 20 * s, 40 + 20 * s], -1)
    if name == 'sky':
        g = yy / max(h - 1, 1)
        return np.stack([60 + 40 * g, 110 + 50 * g, 200 + 40 * g], -1)
    if name == 'tree':
        n = rng.random((h, w)) > 0.6
        return np.stack([30 + 40 * n, 120 + 100 * n, 30 + 30 * n], -1)
    if name == 'car':
        c = ((xx // 4 + yy // 4) % 2).astype(np.float32)
        return np.stack([200 + 50 * c, 190 + 50 * c, 30 + 40 * c], -1)
    # wall clutter: smooth random blobs + noise, grayish
    low = rng.random((h // 16 + 2, w // 16 + 2)).astype(np.float32)
    low = np.kron(low, np.ones((16, 16), np.float32))[:h, :w]
    base = 90 + 80 * low + rng.normal(0, 12, (h, w))
    return base[..., None] + rng.uniform(-15, 15, 3)  # plus a slight tint


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
    """Draw one scene: the background clutter, then 2 to 4 shapes of random class, size
    and position, each on top of the previous ones, then pixel noise.

    Args:
        rng (np.random.Generator): Source of randomness (see :func:`scene_rng`).
        size (tuple[int, int]): ``(height, width)``. Defaults to ``(128, 128)``.
    """
    h, w = size
    img = _texture(BACKGROUND_CLASS, h, w, rng)
    drawn = []
    for _ in range(int(rng.integers(2, 5))):
        kind = SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))]
        r = rng.uniform(0.12, 0.22) * min(h, w)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        mask = _shape_mask(kind, h, w, cy, cx, r, rng)
        img[mask] = _texture(kind, h, w, rng)[mask]
        drawn.append((kind, mask))
    img = img + rng.normal(0, 6, img.shape)
    instances, covered = [], np.zeros((h, w), bool)  # visible: what no later shape covers
    for kind, mask in reversed(drawn):
        instances.append(SceneInstance(kind, mask & ~covered, mask))
        covered |= mask
    instances.reverse()
    return SyntheticScene(np.clip(img, 0, 255).astype(np.uint8), instances)


def outer_rim(mask: np.ndarray) -> np.ndarray:
    """The 1-pixel band just outside a boolean (H, W) ``mask`` (4-connected neighbours),
    as a boolean (H, W) mask disjoint from ``mask``."""
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
    """The per-pixel class map of a scene: the label of the topmost instance covering
    each pixel, else the background's. With ``rim_label``, the 1-pixel band around each
    shape as drawn (:func:`outer_rim`) gets ``rim_label`` where no later shape covers
    it, as ADE20K's unannotated object boundaries.

    Args:
        scene (SyntheticScene): The rendered scene.
        labels (Mapping[str, int]): Label of each class name, the background's included.
        rim_label (int, optional): Label of the boundary bands; None draws none.
            Defaults to None.
        dtype (type): Output dtype of the (H, W) map. Defaults to ``np.uint8``.
    """
    out = np.full(scene.size, labels[scene.background], dtype)
    for inst in scene.instances:
        if rim_label is not None:
            out[outer_rim(inst.amodal_mask)] = rim_label
        out[inst.mask] = labels[inst.name]
    return out
