"""mmdet's ``CocoDataset`` with data checks (see docs/training_and_testing.md, data
checks): what mmdet sets aside silently is counted in one warning line, malformed
entries and files stop loading with the json, the image and the field named."""
import math
from collections import Counter
from typing import List

from mmengine.registry import DATASETS

from .checked_datasets import DataCheckMixin
from .data_checks import DataError, _examples, _warn, require_path

try:
    from mmdet.datasets import CocoDataset
except ImportError:  # pragma: no cover - mmdetection is not installed
    CocoDataset = None

if CocoDataset is not None:

    @DATASETS.register_module()
    class CheckedCocoDataset(DataCheckMixin, CocoDataset):
        """mmdet's ``CocoDataset`` with data checks (same arguments): besides
        :class:`DataCheckMixin`, ONE warning line per dataset counts the annotations,
        instances and images mmdet sets aside silently, and loading stops with
        :class:`DataError` when masks are loaded and an annotation has no segmentation
        (mmdet: ``KeyError: 'mask'``), and when no image is left. A test set without
        annotations (a test-dev file, scored -1 by ``CocoMetric``) is warned about.
        """

        def load_data_list(self) -> List[dict]:
            loader = next((t for t in getattr(self.pipeline, 'transforms', [])
                           if getattr(t, 'with_mask', False)), None)  # LoadAnnotations
            self._loads_masks = loader is not None
            self._poly2mask = bool(getattr(loader, 'poly2mask', True))
            self._num_anns = self._num_images = 0
            self._ann_reasons, self._image_reasons = Counter(), Counter()
            self._no_segmentation = []
            require_path(self.ann_file, 'file', self.data_root, 'ann_file')
            try:
                data_list = super().load_data_list()
            except ValueError as e:  # json.JSONDecodeError
                if type(e).__name__ != 'JSONDecodeError':
                    raise
                raise DataError(f'{self.ann_file}: not a valid json file ({e})') from None
            self._num_images = len(data_list)
            if self.test_mode and data_list and not self._num_anns:
                _warn(f'{type(self).__name__} {self.ann_file} (test): the file has no '
                      f'annotations (an image-info / test-dev file): CocoMetric can only '
                      'write results for an evaluation server from it (format_only=True, '
                      f'outfile_prefix); scored, its {len(data_list)} images give -1 for '
                      'every metric. To evaluate, give the file with the annotations.')
            if self._no_segmentation:
                raise DataError(
                    f'{self.ann_file}: {len(self._no_segmentation)} annotations have no '
                    f'segmentation (annotation ids {_examples(self._no_segmentation)}) but '
                    'the pipeline loads masks (LoadAnnotations with_mask=True): give them a '
                    'polygon or RLE mask, or load boxes only')
            return data_list

        @property
        def coco(self):
            """The COCO API object while mmdet's ``load_data_list`` reads the file (it
            deletes it afterwards), checked whenever it is set (:meth:`_check_image_ids`),
            whichever ``COCOAPI`` a subclass uses."""
            try:
                return self.__dict__['_coco_api']
            except KeyError:
                raise AttributeError('coco') from None

        @coco.setter
        def coco(self, api) -> None:
            self._check_image_ids(api)
            self.__dict__['_coco_api'] = api

        @coco.deleter
        def coco(self) -> None:
            self.__dict__.pop('_coco_api', None)

        def _check_image_ids(self, api) -> None:
            """Duplicate image ids (the COCO API keeps the last entry and gives it the
            first's annotations) stop loading; annotations of an image id the file does
            not list are counted (mmdet drops them)."""
            dataset = getattr(api, 'dataset', None) or {}
            images = dataset.get('images', [])
            counts = Counter(img.get('id') for img in images)
            dup = sorted((i for i, n in counts.items() if n > 1), key=str)
            if dup:
                files = [img.get('file_name') for img in images if img.get('id') == dup[0]]
                raise DataError(
                    f'{self.ann_file}: {len(dup)} image id(s) used by several images, '
                    f'e.g. id {dup[0]!r} by {_examples(files)}; COCO image ids must be '
                    'unique (the COCO API would keep one entry and attach the '
                    "annotations to the wrong image)")
            orphans = sum(1 for ann in dataset.get('annotations', [])
                          if ann.get('image_id') not in counts)
            if orphans and hasattr(self, '_ann_reasons'):  # (counted while loading)
                self._num_anns += orphans
                self._ann_reasons['of an image_id not among the images (skipped)'] += orphans

        def _check_raw_entries(self, img: dict, anns: list) -> None:
            """The fields mmdet's ``parse_data_info`` reads, so that a malformed entry is
            named (mmdet raises a bare KeyError / ValueError) and a non-finite box is not
            kept or skipped silently."""
            where = f"{self.ann_file}: image id {img.get('id')!r} ({img.get('file_name')})"
            missing = [k for k in ('id', 'file_name', 'height', 'width') if k not in img]
            if missing:
                raise DataError(f'{where} has no {missing}: every image entry needs id, '
                                'file_name, height and width')
            cats = self.coco.cats
            for ann in anns:
                if ann.get('ignore', False):
                    continue
                bbox, what = ann.get('bbox'), f"{where}, annotation id {ann.get('id')!r}"
                if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(
                        isinstance(v, (int, float)) and not isinstance(v, bool)
                        for v in bbox)):
                    raise DataError(f'{what}: bbox {bbox!r} is not [x, y, w, h] (4 numbers)')
                if not all(math.isfinite(v) for v in bbox):
                    raise DataError(f'{what} has a non-finite bbox {bbox}: fix or remove it')
                missing = [k for k in ('area', 'category_id') if k not in ann]
                if missing:
                    raise DataError(f'{what} has no {missing}: every annotation needs '
                                    'bbox, area and category_id')
                if isinstance(ann['area'], float) and not math.isfinite(ann['area']):
                    raise DataError(f"{what} has a non-finite area {ann['area']}")
                if ann['category_id'] not in cats:
                    raise DataError(
                        f"{what} has category_id {ann['category_id']!r}, which the file's "
                        f'categories do not list (ids {_examples(sorted(cats, key=str))}); '
                        'fix the annotation or add its category')

        def parse_data_info(self, raw_data_info: dict):
            img = raw_data_info['raw_img_info']
            self._check_raw_entries(img, raw_data_info['raw_ann_info'])
            data_info = super().parse_data_info(raw_data_info)
            kept, reasons = {}, self._ann_reasons
            self._num_anns += len(raw_data_info['raw_ann_info'])
            for ann in raw_data_info['raw_ann_info']:
                if ann.get('ignore', False):
                    reasons["marked 'ignore' (skipped)"] += 1
                    continue
                x1, y1, w, h = ann['bbox']
                inter_w = max(0, min(x1 + w, img['width']) - max(x1, 0))
                inter_h = max(0, min(y1 + h, img['height']) - max(y1, 0))
                if inter_w * inter_h == 0:
                    reasons['with a box outside the image (skipped)'] += 1
                elif ann['area'] <= 0 or w < 1 or h < 1:
                    reasons['with area 0 or a box under 1 pixel (skipped)'] += 1
                elif ann['category_id'] not in self.cat_ids:
                    reasons['of a category not among the classes (skipped)'] += 1
                else:
                    kept[len(kept)] = ann
            for i, instance in enumerate(data_info['instances']):
                ann = kept.get(i, {})
                if instance.get('ignore_flag', 0):
                    reasons['crowd (ignored)'] += 1
                    continue
                if not self._loads_masks:
                    continue
                mask = instance.get('mask')
                if mask is None:
                    self._no_segmentation.append(ann.get('id', '?'))
                elif isinstance(mask, list):
                    if not any(len(p) % 2 == 0 and len(p) >= 6 for p in mask):
                        reasons['whose polygons all have fewer than 3 points (ignored)'] += 1
                elif not self._poly2mask:
                    reasons['with an RLE mask and poly2mask=False (ignored)'] += 1
                elif isinstance(mask, dict) and not (
                        mask.get('counts') is not None and mask.get('size') is not None
                        and isinstance(mask['counts'], (list, str))):
                    reasons['with a malformed RLE mask (ignored)'] += 1
            return data_info

        def filter_data(self) -> List[dict]:
            before = self.data_list
            after = super().filter_data()
            if len(after) != len(before):
                filter_empty_gt = (self.filter_cfg or {}).get('filter_empty_gt', False)
                ids_in_cat = set().union(*(self.cat_img_map[c] for c in self.cat_ids))
                kept = {id(d) for d in after}
                for d in before:
                    if id(d) not in kept:
                        self._image_reasons[
                            'without annotations (filter_empty_gt)'
                            if filter_empty_gt and d['img_id'] not in ids_in_cat else
                            'smaller than filter_cfg.min_size'] += 1
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
            parts = []
            for reasons, total, what in ((self._ann_reasons, self._num_anns, 'annotations'),
                                         (self._image_reasons, self._num_images, 'images')):
                if reasons:  # skipped before ignored annotations, crowd last
                    group = sorted(reasons.items(), key=lambda kv: (
                        not kv[0].endswith('(skipped)'), 'crowd' in kv[0], kv[0]))
                    parts.append(f'{sum(reasons.values())} of {total} {what}: '
                                 + ', '.join(f'{v} {k}' for k, v in group))
            if parts:
                mode = 'test' if self.test_mode else 'train'
                _warn(f'{type(self).__name__} {self.ann_file} ({mode}): set aside '
                      + '; and '.join(parts))

        def full_init(self) -> None:
            if self._fully_initialized:
                return
            super().full_init()
            self._report()
