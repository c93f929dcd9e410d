"""Drop-in subclasses of the frameworks' datasets and of mmseg's ``IoUMetric`` that name
the file and the problem when data is bad, and count in one warning line what the
frameworks set aside silently (see :mod:`.data_checks` for the whole list)."""
import os
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np
from mmengine.registry import DATASETS, METRICS

from .data_checks import DataError, _examples, _is_local, _values, _warn, probe_image_file


# ----------------------------------------------------------------------------- datasets


class DataCheckMixin:
    """Name the file when loading a sample fails.

    Mixed in front of a framework dataset class: an exception raised by the pipeline is
    diagnosed by probing the sample's files (``img_path``, ``seg_map_path``); when one of
    them is missing, empty, unreadable or truncated, :class:`DataError` names it and
    says what is wrong, otherwise the original exception propagates unchanged.
    """

    #: Keys of a sample's information that hold the paths of its files.
    checked_file_keys = ('img_path', 'seg_map_path')

    def diagnose_sample(self, data_info: dict) -> Optional[str]:
        """``'<file>: <problem>'`` for the first bad file of a sample, else None."""
        for key in self.checked_file_keys:
            path = data_info.get(key)
            if path:
                problem = probe_image_file(path)
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


def _local_files(root: str, suffix: str) -> List[str]:
    """Paths relative to ``root`` of the files ending in ``suffix`` below it."""
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(suffix):
                out.append(osp.relpath(osp.join(d, f), root))
    return out


try:
    from mmseg.datasets import ADE20KDataset
    from mmseg.evaluation import IoUMetric
except ImportError:  # pragma: no cover - mmsegmentation is not installed
    ADE20KDataset = IoUMetric = None

if ADE20KDataset is not None:

    @DATASETS.register_module()
    class CheckedADE20KDataset(DataCheckMixin, ADE20KDataset):
        """mmseg's ``ADE20KDataset`` with data checks (same arguments).

        Besides naming the file of a sample that fails to load (:class:`DataCheckMixin`),
        loading stops with :class:`DataError` when the split has no image or when
        images have no annotation file, and one warning line counts the annotation
        files that have no image (mmseg does not use them).
        """

        def load_data_list(self) -> List[dict]:
            data_list = super().load_data_list()
            img_dir = self.data_prefix.get('img_path', '')
            ann_dir = self.data_prefix.get('seg_map_path')
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
                unused = sorted(set(_local_files(ann_dir, self.seg_map_suffix)) - used)
                if unused:
                    _warn(f'{type(self).__name__} {ann_dir}: {len(unused)} annotation '
                          f'files have no image in {img_dir} and are not used: '
                          f'{_examples(unused)}')
            return data_list

    @METRICS.register_module()
    class CheckedIoUMetric(IoUMetric):
        """mmseg's ``IoUMetric`` that refuses to report numbers about nothing.

        A ground-truth value that is neither a class index nor ``ignore_index`` (which
        ``IoUMetric`` silently leaves out) raises :class:`DataError` naming the image,
        and so does an evaluation where no pixel is labeled (``aAcc`` and ``mIoU`` would
        be nan). Same arguments as ``IoUMetric``.
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
            if not self.format_only and results:
                labeled = sum(float(r[3].sum()) for r in results)
                if labeled == 0:
                    raise DataError(
                        f'IoUMetric: none of the {len(results)} evaluated images has a '
                        f'labeled pixel (every ground-truth value is the ignore index '
                        f'{self.ignore_index}), so aAcc and mIoU would be nan; check the '
                        'annotations and reduce_zero_label (with it, 0 in the files means '
                        'unlabeled)')
            return super().compute_metrics(results)


try:
    from mmdet.datasets import CocoDataset
except ImportError:  # pragma: no cover - mmdetection is not installed
    CocoDataset = None

if CocoDataset is not None:

    @DATASETS.register_module()
    class CheckedCocoDataset(DataCheckMixin, CocoDataset):
        """mmdet's ``CocoDataset`` with data checks (same arguments).

        Besides naming the file of a sample that fails to load (:class:`DataCheckMixin`),
        loading counts what mmdet sets aside without a word and reports it in ONE warning
        line per dataset: annotations ``parse_data_info`` skips (marked ``ignore``, box
        empty or outside the image, category not among the classes), crowd instances
        (kept as ignored), instances whose polygons all have fewer than 3 points (which
        ``LoadAnnotations(with_mask=True)`` turns into ignored instances), and the
        training images ``filter_data`` drops (no annotation of the classes with
        ``filter_empty_gt``, smaller than ``min_size``). It stops with
        :class:`DataError` when masks are loaded and an annotation has no segmentation
        (mmdet's ``LoadAnnotations`` would fail on it with ``KeyError: 'mask'``), and when
        no image is left.
        """

        def _pipeline_masks(self):
            """(loads masks, poly2mask) of the pipeline's ``LoadAnnotations``."""
            for t in getattr(self.pipeline, 'transforms', []):
                if getattr(t, 'with_mask', False):
                    return True, bool(getattr(t, 'poly2mask', True))
            return False, True

        def load_data_list(self) -> List[dict]:
            self._loads_masks, self._poly2mask = self._pipeline_masks()
            self._set_aside = dict(anns=0, instances=0, images=0, images_total=0)
            self._reasons = {}
            self._no_segmentation = []
            data_list = super().load_data_list()
            self._set_aside['images_total'] = len(data_list)
            if self._no_segmentation:
                raise DataError(
                    f'{self.ann_file}: {len(self._no_segmentation)} annotations have no '
                    f'segmentation (annotation ids {_examples(self._no_segmentation)}) but '
                    'the pipeline loads masks (LoadAnnotations with_mask=True): give them a '
                    'polygon or RLE mask, or load boxes only')
            return data_list

        def _count(self, reason: str, n: int = 1) -> None:
            self._reasons[reason] = self._reasons.get(reason, 0) + n

        def parse_data_info(self, raw_data_info: dict):
            data_info = super().parse_data_info(raw_data_info)
            img = raw_data_info['raw_img_info']
            kept = {}
            for ann in raw_data_info['raw_ann_info']:
                self._set_aside['anns'] += 1
                x1, y1, w, h = ann['bbox']
                inter_w = max(0, min(x1 + w, img['width']) - max(x1, 0))
                inter_h = max(0, min(y1 + h, img['height']) - max(y1, 0))
                if ann.get('ignore', False):
                    self._count("marked 'ignore' (skipped)")
                elif inter_w * inter_h == 0:
                    self._count('with a box outside the image (skipped)')
                elif ann['area'] <= 0 or w < 1 or h < 1:
                    self._count('with area 0 or a box under 1 pixel (skipped)')
                elif ann['category_id'] not in self.cat_ids:
                    self._count('of a category not among the classes (skipped)')
                else:
                    kept[len(kept)] = ann
            for i, instance in enumerate(data_info['instances']):
                ann = kept.get(i, {})
                if instance.get('ignore_flag', 0):
                    self._count('crowd (ignored)')
                    continue
                if not self._loads_masks:
                    continue
                mask = instance.get('mask')
                if mask is None:
                    self._no_segmentation.append(ann.get('id', '?'))
                elif isinstance(mask, list):
                    if not any(len(p) % 2 == 0 and len(p) >= 6 for p in mask):
                        self._count('whose polygons all have fewer than 3 points (ignored)')
                elif not self._poly2mask:
                    self._count('with an RLE mask and poly2mask=False (ignored)')
                elif isinstance(mask, dict) and not (
                        mask.get('counts') is not None and mask.get('size') is not None
                        and isinstance(mask['counts'], (list, str))):
                    self._count('with a malformed RLE mask (ignored)')
            return data_info

        def filter_data(self) -> List[dict]:
            before = self.data_list
            after = super().filter_data()
            if len(after) != len(before):
                filter_empty_gt = (self.filter_cfg or {}).get('filter_empty_gt', False)
                ids_in_cat = set()
                for cat_id in self.cat_ids:
                    ids_in_cat |= set(self.cat_img_map[cat_id])
                kept = {id(d) for d in after}
                for d in before:
                    if id(d) in kept:
                        continue
                    if filter_empty_gt and d['img_id'] not in ids_in_cat:
                        self._count('image: without annotations (filter_empty_gt)')
                    else:
                        self._count('image: smaller than filter_cfg.min_size')
            if not after:
                self._report()
                raise DataError(
                    f'{self.ann_file}: no image left to '
                    f"{'evaluate' if self.test_mode else 'train'} on"
                    + (' after filter_data' if len(before) else '') +
                    '; check the annotation file, metainfo classes and filter_cfg')
            return after

        def _report(self) -> None:
            """The one warning line of what was set aside, if anything was."""
            # Skipped before ignored annotations, then the images.
            reasons = dict(sorted(getattr(self, '_reasons', {}).items(),
                                  key=lambda kv: (kv[0].startswith('image: '),
                                                  not kv[0].endswith('(skipped)'),
                                                  'crowd' in kv[0], kv[0])))
            inst = {k: v for k, v in reasons.items() if not k.startswith('image: ')}
            imgs = {k[len('image: '):]: v for k, v in reasons.items()
                    if k.startswith('image: ')}
            parts = []
            if inst:
                parts.append(f'{sum(inst.values())} of {self._set_aside["anns"]} '
                             'annotations: ' + ', '.join(f'{v} {k}' for k, v in inst.items()))
            if imgs:
                parts.append(f'{sum(imgs.values())} of {self._set_aside["images_total"]} '
                             'images: ' + ', '.join(f'{v} {k}' for k, v in imgs.items()))
            if parts:
                mode = 'test' if self.test_mode else 'train'
                _warn(f'{type(self).__name__} {self.ann_file} ({mode}): set aside '
                      + '; and '.join(parts))

        def full_init(self) -> None:
            if self._fully_initialized:
                return
            super().full_init()
            self._report()


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
