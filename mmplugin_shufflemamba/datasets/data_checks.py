"""Data checks: a data problem stops the run with the file and the problem named, where
the frameworks fail deep inside (``IndexError: Target 199 is out of bounds`` in the loss,
an OpenCV assertion, ``aAcc: nan`` with exit status 0). The transforms
:class:`CheckSegLabels` and :class:`CheckImageSize`, and the datasets and metric of
:mod:`.checked_datasets` and :mod:`.checked_coco`, are registered in MMEngine's root
registries (configs add ``'mmplugin_shufflemamba.datasets'`` to ``custom_imports``); see
docs/training_and_testing.md (data checks).
"""
import logging
import os
import os.path as osp
from typing import Iterable, Optional, Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log
from mmengine.registry import TRANSFORMS

from ..errors import ArgumentValueError, relative_path_note


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


def require_path(path, what: str, data_root, check: str = 'data_prefix') -> None:
    """:class:`DataError` when a local ``path`` (a ``what``: 'directory', 'file') does not
    exist, naming the settings to check."""
    if path and _is_local(path) and not osp.exists(path):
        raise DataError(f'{path}: no such {what}{relative_path_note(path, False)}; '
                        f'check data_root ({data_root!r}) and {check}')


def probe_image_file(path: str) -> Optional[str]:
    """What is wrong with the image (or annotation map) file ``path`` in words, or None
    when it decodes.

    Reports a missing file, a directory, an empty file, and a file that neither Pillow
    (fully decoded: a truncated file is found) nor OpenCV reads. Remote paths
    (``s3://``...) are not probed.

    Args:
        path (str): Local path of the file.
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


@TRANSFORMS.register_module()
class CheckSegLabels(BaseTransform):
    """Check a semantic segmentation map right after ``LoadAnnotations`` (before any crop
    or padding); without a ``gt_seg_map`` (inference) it does nothing.

    Every value must be a class index in ``[0, num_classes)`` or ``ignore_index`` (else
    the loss fails with ``IndexError`` and ``IoUMetric`` leaves it out silently), as
    ``LoadAnnotations`` left it: after ``reduce_zero_label`` (0 in the file becomes 255,
    ``k`` becomes ``k - 1``) and the dataset's ``label_map``. The map must also be
    single-channel and of the image's size (``ori_shape``).

    Args:
        num_classes (int): Number of classes of the model (``decode_head.num_classes``).
        ignore_index (int): The label that is not trained on nor evaluated
            (``decode_head.ignore_index``, ``IoUMetric.ignore_index``). Defaults to 255.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) \
                or num_classes < 1:
            raise ArgumentValueError(
                f'num_classes must be an integer >= 1, got {num_classes!r}')
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._wide_checked = set()  # label files _check_wide_label_file has read

    def _check_wide_label_file(self, path) -> None:
        """mmseg's ``LoadAnnotations`` casts label maps to uint8: a 16- or 32-bit file
        with values above 255 would wrap (261 -> 5) before any check sees it. Each file
        is read once (per data-loader worker)."""
        if path in self._wide_checked or not (_is_local(path) and osp.isfile(path)):
            return
        from PIL import Image
        try:
            with Image.open(path) as img:
                mode = img.mode
                top = float(np.asarray(img).max()) if mode in (
                    'I', 'I;16', 'I;16B', 'I;16L', 'F') else 0.0
        except Exception:  # noqa: BLE001  (unreadable: LoadAnnotations reports it)
            return
        if top > 255:
            raise DataError(
                f"{path}: a label map of mode {mode} with values up to {top:g}; mmseg's "
                'LoadAnnotations reads label maps as 8-bit, so values above 255 would wrap '
                '(e.g. 261 becomes 5): store the class indices (< 256) in an 8-bit PNG')
        self._wide_checked.add(path)

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
        if seg.dtype == np.uint8:  # what LoadAnnotations made of the file
            self._check_wide_label_file(path)
        present = (np.flatnonzero(np.bincount(seg.ravel(), minlength=256))
                   if seg.dtype == np.uint8 else np.unique(seg))
        bad = present[((present < 0) | (present >= self.num_classes))
                      & (present != self.ignore_index)]
        if bad.size:
            note = (f' (read with reduce_zero_label=True: the file holds {_values(bad + 1)}; '
                    'its 0 is ignored and k > 0 becomes k - 1)'
                    if results.get('reduce_zero_label', False) else '')
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
    """Check the decoded image against the ``height`` / ``width`` its annotation declares
    (mmdet's COCO datasets: the boxes, polygons and ``CocoMetric``'s masks are in those
    coordinates). Place it after ``LoadImageFromFile``; it does nothing for samples
    without a declared size.
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
