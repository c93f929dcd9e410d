"""Drop-in subclasses of the frameworks' datasets and of mmseg's ``IoUMetric`` that name
the file and the problem when data is bad, and count in one warning line what the
frameworks set aside silently (see docs/training_and_testing.md, data checks)."""
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np
from mmengine.fileio import list_dir_or_file
from mmengine.registry import DATASETS, METRICS

from .data_checks import (DataError, _examples, _is_local, _values, _warn, probe_image_file,
                          require_path)


class DataCheckMixin:
    """Mixed in front of a dataset class: when the pipeline raises on a sample whose file
    (:attr:`checked_file_keys`) is missing, empty, unreadable or truncated,
    :class:`DataError` names the file and the problem; other exceptions propagate."""

    #: Keys of a sample's information that hold the paths of its files.
    checked_file_keys = ('img_path', 'seg_map_path')

    def diagnose_sample(self, data_info: dict) -> Optional[str]:
        """``'<file>: <problem>'`` for the first bad file of a sample, else None."""
        for key in self.checked_file_keys:
            path = data_info.get(key)
            problem = probe_image_file(path) if path else None
            if problem is not None:
                return f'{path}: {problem}'
        return None

    def prepare_data(self, idx):
        try:
            return super().prepare_data(idx)
        except DataError:
            raise
        except Exception as e:
            problem = self.diagnose_sample(self.get_data_info(idx))
            if problem is None:
                raise
            lines = str(e).strip().splitlines()
            cause = f'{type(e).__name__}: {lines[0][:200] if lines else ""}'
            if cause not in problem:
                problem += f' (loading it raised {cause})'
            raise DataError(problem) from None


try:
    from mmseg.datasets import ADE20KDataset
    from mmseg.evaluation import IoUMetric
except ImportError:  # pragma: no cover - mmsegmentation is not installed
    ADE20KDataset = IoUMetric = None

if ADE20KDataset is not None:

    @DATASETS.register_module()
    class CheckedADE20KDataset(DataCheckMixin, ADE20KDataset):
        """mmseg's ``ADE20KDataset`` with data checks (same arguments): besides
        :class:`DataCheckMixin`, loading stops with :class:`DataError` on a split without
        images or images without their annotation file, and one warning line counts the
        annotation files without an image (mmseg does not use them).
        """

        def load_data_list(self) -> List[dict]:
            img_dir = self.data_prefix.get('img_path', '')
            ann_dir = self.data_prefix.get('seg_map_path')
            if not self.ann_file:
                require_path(img_dir, 'directory', self.data_root)
            data_list = super().load_data_list()
            if not data_list:
                raise DataError(
                    f"{img_dir}: no image ending in '{self.img_suffix}'"
                    + (f' listed in {self.ann_file}' if self.ann_file else '') +
                    '; check data_root and data_prefix')
            if not ann_dir or not _is_local(ann_dir):
                return data_list
            missing = [d for d in data_list if not osp.exists(d['seg_map_path'])]
            if missing:
                raise DataError(
                    f'{ann_dir}: {len(missing)} of the {len(data_list)} images have no '
                    f"annotation file, e.g. {missing[0]['seg_map_path']} for "
                    f"{missing[0]['img_path']}; every image needs its "
                    f"'{self.seg_map_suffix}' label map")
            if not self.ann_file and osp.isdir(ann_dir):
                used = {osp.relpath(d['seg_map_path'], ann_dir) for d in data_list}
                unused = sorted(set(list_dir_or_file(
                    ann_dir, list_dir=False, suffix=self.seg_map_suffix, recursive=True,
                    backend_args=self.backend_args)) - used)
                if unused:
                    _warn(f'{type(self).__name__} {ann_dir}: {len(unused)} annotation '
                          f'files have no image in {img_dir} and are not used: '
                          f'{_examples(unused)}')
            return data_list

    @METRICS.register_module()
    class CheckedIoUMetric(IoUMetric):
        """mmseg's ``IoUMetric`` (same arguments) that raises :class:`DataError` on a
        ground-truth value neither a class index nor ``ignore_index`` (which ``IoUMetric``
        leaves out silently), naming the image, and on an evaluation without a labeled
        pixel (``aAcc`` and ``mIoU`` would be nan).
        """

        def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
            if not self.format_only:
                num_classes = len(self.dataset_meta['classes'])
                for sample in data_samples:
                    label = sample['gt_sem_seg']['data']
                    bad = label[((label < 0) | (label >= num_classes))
                                & (label != self.ignore_index)]
                    if bad.numel():
                        where = sample.get('seg_map_path') or sample.get('img_path', '?')
                        raise DataError(
                            f'{where}: ground-truth values {_values(bad.unique().tolist())} '
                            f'outside [0, {num_classes}) and not the ignore index '
                            f'{self.ignore_index}: IoUMetric would leave those pixels out '
                            'silently; fix the annotation or the number of classes')
            super().process(data_batch, data_samples)

        def compute_metrics(self, results: list) -> dict:
            # results[i][3]: the labeled pixels of image i, per class
            if not self.format_only and results and sum(float(r[3].sum()) for r in results) == 0:
                raise DataError(
                    f'IoUMetric: none of the {len(results)} evaluated images has a labeled '
                    f'pixel (every ground-truth value is the ignore index {self.ignore_index}), '
                    'so aAcc and mIoU would be nan; check the annotations and '
                    'reduce_zero_label (with it, 0 in the files means unlabeled)')
            return super().compute_metrics(results)


try:
    from mmpretrain.datasets import CustomDataset as _ClsCustomDataset
    from mmpretrain.datasets import ImageNet as _ClsImageNet
except ImportError:  # pragma: no cover - mmpretrain is not installed
    _ClsCustomDataset = _ClsImageNet = None


class _ClassificationChecks(DataCheckMixin):
    """Checks of mmpretrain's annotation-file datasets (``<path> <label>`` lines)."""

    checked_file_keys = ('img_path', )

    def _bad_line(self) -> Optional[str]:
        with open(self.ann_file, encoding='utf-8') as f:
            for n, line in enumerate(f, 1):
                parts = line.strip().rsplit(' ', 1)
                if len(parts) != 2:
                    return f'{self.ann_file}:{n}: {line.strip()!r} is not "<path> <label>"'
                try:
                    int(parts[1])
                except ValueError:
                    return f'{self.ann_file}:{n}: label {parts[1]!r} is not an integer'
        return None

    def load_data_list(self) -> List[dict]:
        if self.ann_file:
            require_path(self.ann_file, 'file', self.data_root, 'ann_file')
        else:
            require_path(self.img_prefix, 'directory', self.data_root)
        try:
            data_list = super().load_data_list()
        except ValueError:
            problem = (self._bad_line() if self.ann_file and _is_local(self.ann_file)
                       and getattr(self, 'with_label', True) else None)
            if problem is None:
                raise
            raise DataError(problem) from None
        source = self.ann_file or self.img_prefix
        if not data_list:
            raise DataError(f'{source}: no image; check data_root, data_prefix and ann_file')
        classes = self.metainfo.get('classes')
        folders = list(getattr(self, 'folder_to_idx', {}) or {})
        if not self.ann_file and classes and sorted(folders) == sorted(classes) and \
                folders != list(classes):
            raise DataError(
                f'{self.img_prefix}: without an ann_file images are labelled by their '
                f'folder in sorted order ({_examples(folders, 6)}), but metainfo classes '
                f'lists the same names in another order ({_examples(list(classes), 6)}): '
                'every label would name another class; list the classes in sorted order, '
                'or give an ann_file')
        if classes and 'gt_label' in data_list[0]:
            labels = np.array([d['gt_label'] for d in data_list])
            bad = np.flatnonzero((labels < 0) | (labels >= len(classes)))
            if bad.size:
                first = data_list[bad[0]]
                raise DataError(
                    f'{source}: {bad.size} labels outside [0, {len(classes)}), values '
                    f'{_values(np.unique(labels[bad]))} (first: '
                    f"{first['img_path']} {first['gt_label']}); the dataset has "
                    f'{len(classes)} classes: fix the labels or metainfo classes')
        return data_list


if _ClsCustomDataset is not None:

    @DATASETS.register_module()
    class CheckedCustomDataset(_ClassificationChecks, _ClsCustomDataset):
        """mmpretrain's ``CustomDataset`` with data checks (same arguments): a bad line
        of the annotation file or a label outside the classes stops loading with the
        file and line named; a sample whose image fails to load names it."""

    @DATASETS.register_module()
    class CheckedImageNet(_ClassificationChecks, _ClsImageNet):
        """mmpretrain's ``ImageNet`` with the checks of :class:`CheckedCustomDataset`."""
