"""The renderer shared by the synthetic dataset writers.

A scene is a cluttered background ("wall") with a few textured shapes drawn one after
another, one class per (shape, colour, texture): squares with red stripes (building),
circles with a blue gradient (sky), upward triangles with green speckles (tree) and
horizontal ellipses with a yellow checkerboard (car). :func:`render_scene` returns the
image and the list of drawn instances; the writers only turn that description into a
file format (:mod:`.ade20k` a semantic map, :mod:`.coco` instances),
so for the same seed both write the same images.
"""
import json
import os
import os.path as osp
import re
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


class DataRoot:
    """The files a synthetic writer owns under its output directory.

    A writer records its arguments and the list of files it writes in the stamp
    ``<root>/.<name>`` (JSON): first as unfinished, then, once every file is written, as
    complete. A call with other arguments (or ``overwrite=True``) removes exactly the
    files of the previous stamp before writing, so that no file of an earlier run is read
    together with the new ones; a file under ``root`` that no stamp lists (written by
    someone else, or put there by hand) is never removed: the writer refuses to write
    next to it.

    Args:
        root (str): The output directory.
        name (str): The writer's name (``'synthetic_ade20k'``, ...); the stamp is
            ``<root>/.<name>``.
        writer (str): What to call the writer in messages.
        legacy_pattern (str): Regular expression of the relative paths (``/``-separated)
            the writer produced before stamps listed their files; a stamp holding only
            the argument key owns the files that match it.
    """

    def __init__(self, root: str, name: str, writer: str, legacy_pattern: str):
        self.root = root
        self.name = name
        self.writer = writer
        self.legacy_pattern = legacy_pattern

    @property
    def stamp_path(self) -> str:
        return osp.join(self.root, f'.{self.name}')

    def read_stamp(self) -> Optional[dict]:
        """The stamp as ``dict(key=..., complete=..., files=[...])``, None without one."""
        if not osp.isfile(self.stamp_path):
            return None
        with open(self.stamp_path, encoding='utf-8') as f:
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

    def present_files(self) -> List[str]:
        """Relative paths (``/``-separated) of the files under ``root``, stamps aside."""
        if not osp.isdir(self.root):
            return []
        own = {f'.{self.name}', f'.{self.name}.tmp'}
        out = []
        for d, dirs, files in os.walk(self.root):
            dirs.sort()
            rel_dir = osp.relpath(d, self.root)
            for f in sorted(files + [x for x in dirs if osp.islink(osp.join(d, x))]):
                rel = f if rel_dir == '.' else f'{rel_dir}/{f}'.replace(os.sep, '/')
                if rel not in own:
                    out.append(rel)
        return out

    def _refuse(self, foreign: List[str], stamped: bool):
        examples = ', '.join(repr(p) for p in foreign[:3])
        more = f' and {len(foreign) - 3} more' if len(foreign) > 3 else ''
        why = (f'has {len(foreign)} file(s) that {self.writer} did not write' if stamped
               else f'is not empty ({len(foreign)} file(s)) and has no stamp '
               f"'.{self.name}', so {self.writer} did not write it")
        raise FileExistsError(
            f'{self.root} {why}: {examples}{more}. {self.writer} writes only into an '
            'empty directory or one it wrote before (it never deletes files it did not '
            'write, and the frameworks would read them together with the new ones): '
            'choose another directory or remove those files.')

    def prepare(self, key: str, overwrite: bool = False) -> bool:
        """Check ``root`` and clear the previous run's files when it must be rewritten.

        Args:
            key (str): The writer's arguments.
            overwrite (bool): Rewrite even if the stamp says the data of ``key`` is
                complete. Defaults to False.

        Returns:
            bool: False when ``root`` already holds the complete dataset of ``key``
            (nothing to write), True when the caller must write it (``root`` then holds
            no file of an earlier run).

        Raises:
            FileExistsError: ``root`` holds files that no stamp of this writer lists.
        """
        stamp = self.read_stamp()
        present = self.present_files()
        if stamp is None:
            if present:
                self._refuse(present, stamped=False)
            return True
        if stamp['files'] is None:
            owned = {p for p in present if re.fullmatch(self.legacy_pattern, p)}
        else:
            owned = set(stamp['files'])
        foreign = [p for p in present if p not in owned]
        if foreign:
            self._refuse(foreign, stamped=True)
        if stamp['complete'] and stamp['key'] == key and not overwrite:
            return False
        removed = self._remove([p for p in present if p in owned])
        if removed:
            from mmengine.logging import print_log
            why = 'overwrite=True' if stamp['key'] == key and stamp['complete'] else (
                f"it held {stamp['key']!r}" + ('' if stamp['complete'] else ' (unfinished)'))
            print_log(f'{self.writer}: removed the {removed} files of the previous run in '
                      f'{self.root} ({why}) before writing {key!r}', logger='current')
        return True

    def _remove(self, files: List[str]) -> int:
        dirs = set()
        for rel in files:
            os.remove(osp.join(self.root, *rel.split('/')))
            parent = osp.dirname(rel)
            while parent:
                dirs.add(parent)
                parent = osp.dirname(parent)
        # Directories the removed files leave empty (deepest first); never root itself.
        for rel in sorted(dirs, key=lambda d: -d.count('/')):
            path = osp.join(self.root, *rel.split('/'))
            if osp.isdir(path) and not os.listdir(path):
                os.rmdir(path)
        return len(files)

    def write_stamp(self, key: str, files: List[str], complete: bool) -> None:
        """Record that ``root`` holds (``complete``) or is being written with (not
        ``complete``) the dataset of ``key``, made of ``files`` (relative paths)."""
        os.makedirs(self.root, exist_ok=True)
        tmp = self.stamp_path + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(dict(key=key, complete=complete, files=sorted(files)), f, indent=0)
        os.replace(tmp, self.stamp_path)


def write_image(path: str, image: np.ndarray, params=()) -> None:
    """``cv2.imwrite`` that raises instead of returning False."""
    import cv2
    if not cv2.imwrite(path, image, list(params)):
        raise OSError(f'{path}: could not be written (cv2.imwrite failed)')


def check_writer_args(num_train: int, num_val: int, size, min_count: int = 0
                      ) -> Tuple[int, int]:
    """Validate the arguments every writer shares; returns ``size`` as a tuple.

    ``num_train`` and ``num_val`` must be integers >= ``min_count`` (0 writes an empty
    split where the writer allows it), not both 0; ``size`` two integers >= 1.
    """
    for arg, value in (('num_train', num_train), ('num_val', num_val)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                or value < min_count:
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
