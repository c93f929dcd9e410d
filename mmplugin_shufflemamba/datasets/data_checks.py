"""Data checks: a data problem stops the run with the file and the problem named.

Without them, a label value out of range ends in ``IndexError: Target 199 is out of
bounds`` deep in the loss, an empty image in an OpenCV assertion, a truncated annotation
in ``OSError: image file is truncated``, and a validation set whose labels are all out of
range in ``aAcc: nan`` with exit status 0; mmdet moves instances whose polygons all have
fewer than 3 points to the ignored instances, and drops training images without
annotations, without a word. Everything here is registered in MMEngine's root registries,
so mmseg, mmdet and mmpretrain configs find it by name (with
``custom_imports = dict(imports=['mmplugin_shufflemamba',
'mmplugin_shufflemamba.datasets'])``):

Transforms (``TRANSFORMS``):

- :class:`CheckSegLabels` (after ``LoadAnnotations``): label values against
  ``num_classes`` and the ignore index (after ``reduce_zero_label``), and the
  annotation's size against the image's.
- :class:`CheckImageSize` (after ``LoadImageFromFile``): the decoded image against the
  size its annotation declares (COCO's ``height`` / ``width``).

Both do nothing when their inputs are absent (inference on arrays), and the loaders keep
their names, which mmseg's, mmdet's and mmpretrain's inferencers look for.

Datasets (``DATASETS``), drop-in subclasses of the frameworks' own:

- :class:`CheckedADE20KDataset` (mmseg ``ADE20KDataset``),
  :class:`CheckedCocoDataset` (mmdet ``CocoDataset``),
  :class:`CheckedCustomDataset` and :class:`CheckedImageNet` (mmpretrain).

  When loading a sample fails (missing, empty, unreadable or truncated image or
  annotation), they raise :class:`DataError` naming the file and the problem. At load
  time they stop on problems that would end the run later (an empty split, images
  without their annotation file, labels of the annotation file outside the classes,
  instances without a mask when masks are loaded) and put what the framework sets aside
  silently into ONE warning line per dataset (COCO: instances ignored for degenerate
  polygons, crowd or empty boxes, training images without annotations; ADE20K:
  annotation files without an image).

Metrics (``METRICS``):

- :class:`CheckedIoUMetric` (mmseg ``IoUMetric``): a ground-truth value outside the
  classes names the image, and an evaluation without one labeled pixel (aAcc and mIoU
  would be nan) stops with an explanation.
"""
import logging
import os
import os.path as osp
from typing import Iterable, Optional, Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log
from mmengine.registry import TRANSFORMS


class DataError(ValueError):
    """A data file is missing, unreadable or inconsistent; the message names it."""


def _values(values: Iterable, limit: int = 8) -> str:
    values = [int(v) for v in values]
    shown = ', '.join(str(v) for v in values[:limit])
    return '{' + shown + (f', ... ({len(values)} values)' if len(values) > limit else '') + '}'


def _examples(items: Sequence, limit: int = 3) -> str:
    shown = ', '.join(str(i) for i in items[:limit])
    return shown + (f' and {len(items) - limit} more' if len(items) > limit else '')


def _is_local(path) -> bool:
    return isinstance(path, (str, os.PathLike)) and '://' not in str(path)


def probe_image_file(path: str) -> Optional[str]:
    """What is wrong with the image (or annotation map) file ``path``, or None.

    Reports a missing file, a directory, an empty file, and a file that neither Pillow
    (fully decoded, so a truncated file is found) nor OpenCV reads. Paths of remote
    storage (``s3://``...) are not probed.

    Args:
        path (str): Local path of the file.

    Returns:
        str | None: The problem in words, None when the file decodes.
    """
    if not _is_local(path):
        return None
    if not osp.lexists(path):
        return 'no such file'
    if not osp.exists(path):
        return 'a broken symbolic link'
    if osp.isdir(path):
        return 'a directory, not an image file'
    size = osp.getsize(path)
    if size == 0:
        return 'empty file (0 bytes)'
    try:
        from PIL import Image
        with Image.open(path) as img:
            img.load()
        return None
    except Exception as e:  # noqa: BLE001  (any decoding failure is the answer)
        pil_error = f'{type(e).__name__}: {e}'
    import cv2
    if cv2.imread(path, cv2.IMREAD_UNCHANGED) is not None and 'truncated' not in pil_error:
        return None  # a format Pillow does not know
    return f'not a readable image ({size} bytes; {pil_error})'


def _warn(line: str) -> None:
    print_log(line, logger='current', level=logging.WARNING)


# --------------------------------------------------------------------------- transforms


@TRANSFORMS.register_module()
class CheckSegLabels(BaseTransform):
    """Check a semantic segmentation map after ``LoadAnnotations``.

    Every value must be a class index in ``[0, num_classes)`` or ``ignore_index``: a
    value outside ends training in the loss (``IndexError: Target ... is out of
    bounds``) and is silently left out of mmseg's ``IoUMetric`` (all of them: ``aAcc``
    nan). The check runs on the map as ``LoadAnnotations`` left it, i.e. after
    ``reduce_zero_label`` (ADE20K: 0 in the file becomes 255, ignored, and ``k`` becomes
    ``k - 1``) and the dataset's ``label_map``. The map must also be single-channel and
    of the image's size (``ori_shape``).

    Place it right after ``LoadAnnotations`` (before any crop or padding). Without a
    ``gt_seg_map`` (inference) it does nothing.

    Args:
        num_classes (int): Number of classes of the model (``decode_head.num_classes``).
        ignore_index (int): The label that is not trained on nor evaluated
            (``decode_head.ignore_index``, ``IoUMetric.ignore_index``). Defaults to 255.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) \
                or num_classes < 1:
            raise ValueError(f'num_classes must be an integer >= 1, got {num_classes!r}')
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        seg = results.get('gt_seg_map')
        if seg is None:
            return results
        path = results.get('seg_map_path', 'the segmentation map')
        seg = np.asarray(seg)
        if seg.ndim != 2:
            raise DataError(
                f'{path}: the annotation has shape {seg.shape}, expected a single-channel '
                '(height, width) label map (a colour-coded annotation must be converted '
                'to class indices first)')
        ori = results.get('ori_shape')
        if ori is not None and tuple(seg.shape) != tuple(ori[:2]):
            raise DataError(
                f'{path}: the annotation is {seg.shape[0]}x{seg.shape[1]} (height x width) '
                f"but the image {results.get('img_path', '')} is {ori[0]}x{ori[1]}; "
                'every pixel needs its label: fix or re-export one of them')
        if seg.dtype == np.uint8:
            present = np.flatnonzero(np.bincount(seg.ravel(), minlength=256))
        else:
            present = np.unique(seg)
        bad = present[((present < 0) | (present >= self.num_classes))
                      & (present != self.ignore_index)]
        if bad.size:
            reduced = results.get('reduce_zero_label', False)
            note = ''
            if reduced:
                note = (f' (read with reduce_zero_label=True: the file holds '
                        f'{_values(bad + 1)}; its 0 is ignored and k > 0 becomes k - 1)')
            raise DataError(
                f'{path}: label values {_values(bad)} outside [0, {self.num_classes}) and '
                f'not the ignore index {self.ignore_index}{note}; fix the annotation, or '
                f'set num_classes (here {self.num_classes}) to the number of classes its '
                'labels count')
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')


@TRANSFORMS.register_module()
class CheckImageSize(BaseTransform):
    """Check the decoded image against the size its annotation declares.

    mmdet's COCO datasets carry each image's ``height`` and ``width`` from the annotation
    file; the boxes and polygons are in those coordinates and ``CocoMetric`` builds the
    ground-truth masks at that size. An image of another size trains and evaluates
    against annotations that do not line up with it. Place it after
    ``LoadImageFromFile``; it does nothing for samples without a declared size.
    """

    def transform(self, results: dict) -> dict:
        h, w = results.get('height'), results.get('width')
        ori = results.get('ori_shape')
        if h is None or w is None or ori is None:
            return results
        if (int(h), int(w)) != tuple(int(v) for v in ori[:2]):
            raise DataError(
                f"{results.get('img_path', 'the image')}: the image is {ori[0]}x{ori[1]} "
                f'(height x width) but its annotation declares {h}x{w}; boxes and masks '
                "would not line up with it: fix the annotation's height/width or the image")
        return results
