"""Data problems stop with the file and the problem named; what mmdet / mmseg set aside
silently is counted in one warning line per dataset (mmplugin_shufflemamba.datasets.data_checks).

Each test builds the datasets the way the configs do (root registries, the frameworks'
default scopes) on a few tiny generated images, breaks one file and checks the words of
the message."""
import json
import logging
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.registry import DATASETS, METRICS, DefaultScope

from mmplugin_shufflemamba.datasets import (DataError, generate_synthetic_ade20k,
                                            generate_synthetic_coco, generate_synthetic_imagenet,
                                            probe_image_file, synthetic_coco_metainfo)

from helpers.tools import load_tool

# The pipeline lines the configs use (see the data section of README.md).
SEG_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegLabels', num_classes=150, ignore_index=255),
]
DET_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='CheckImageSize'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
]


class _Lines(logging.Handler):

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def warnings_logged():
    logger = MMLogger.get_current_instance()
    handler = _Lines()
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def _build(scope, cfg):
    if scope == 'mmseg':
        from mmseg.utils import register_all_modules
    elif scope == 'mmdet':
        from mmdet.utils import register_all_modules
    else:
        from mmpretrain.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(scope):
        return DATASETS.build(cfg)


def _load(scope, ds, idx):
    with DefaultScope.overwrite_default_scope(scope):
        return ds[idx]


# ------------------------------------------------------------------------ segmentation


@pytest.fixture
def ade(tmp_path):
    return generate_synthetic_ade20k(str(tmp_path / 'ade'), num_train=3, num_val=2,
                                     size=(32, 40))


def _ade_ds(root, split='training', pipeline=SEG_PIPELINE, **kw):
    return _build('mmseg', dict(type='CheckedADE20KDataset', data_root=root,
                                data_prefix=dict(img_path=f'images/{split}',
                                                 seg_map_path=f'annotations/{split}'),
                                pipeline=pipeline, test_mode=split == 'validation', **kw))


def _ann(root, name='ADE_train_00000001', split='training'):
    return osp.join(root, 'annotations', split, name + '.png')


def _img(root, name='ADE_train_00000001', split='training'):
    return osp.join(root, 'images', split, name + '.jpg')


def test_clean_data_passes(ade):
    ds = _ade_ds(ade)
    item = _load('mmseg', ds, 0)
    assert item['gt_seg_map'].shape == (32, 40)
    assert len(_ade_ds(ade, 'validation')) == 2


@pytest.mark.parametrize('split', ['training', 'validation'])
def test_label_out_of_range_names_file_and_values(ade, split):
    name = 'ADE_train_00000001' if split == 'training' else 'ADE_val_00000001'
    path = _ann(ade, name, split)
    ann = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    ann[0, :4] = 200  # ADE20K ids are 0..150; 200 is 199 after reduce_zero_label
    cv2.imwrite(path, ann)
    ds = _ade_ds(ade, split)
    with pytest.raises(DataError) as e:
        _load('mmseg', ds, 0)
    assert str(e.value) == (
        f'{path}: label values {{199}} outside [0, 150) and not the ignore index 255 '
        '(read with reduce_zero_label=True: the file holds {200}; its 0 is ignored and '
        'k > 0 becomes k - 1); fix the annotation, or set num_classes (here 150) to the '
        'number of classes its labels count')


def test_wide_label_map_does_not_wrap(ade):
    """mmseg reads label maps as uint8: a 16-bit file's 261 would silently become 5."""
    path = _ann(ade)
    ann = cv2.imread(path, cv2.IMREAD_UNCHANGED).astype(np.uint16)
    cv2.imwrite(path, ann)  # values <= 150: a 16-bit file is fine
    assert _load('mmseg', _ade_ds(ade), 0)['gt_seg_map'].shape == (32, 40)
    ann[:4, :4] = 261
    cv2.imwrite(path, ann)
    with pytest.raises(DataError, match=f"{path}: a label map of mode I;16 with values "
                       "up to 261; mmseg's LoadAnnotations reads label maps as 8-bit"):
        _load('mmseg', _ade_ds(ade), 0)
    # a loader that keeps the wide values (nothing wrapped) is not refused
    from mmplugin_shufflemamba.datasets import CheckSegLabels
    check = CheckSegLabels(num_classes=300)
    out = check(dict(gt_seg_map=ann.astype(np.int32), seg_map_path=path))
    assert out['gt_seg_map'].max() == 261


def test_zero_label_is_ignored_not_an_error(ade):
    # ADE20K's 0 (unlabeled) becomes the ignore index; 150 becomes 149: both valid.
    path = _ann(ade)
    ann = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    ann[:2] = 0
    ann[2:4] = 150
    cv2.imwrite(path, ann)
    seg = _load('mmseg', _ade_ds(ade), 0)['gt_seg_map']
    assert (seg[:2] == 255).all() and (seg[2:4] == 149).all()


def test_empty_image_names_file(ade):
    path = _img(ade)
    open(path, 'w').close()
    with pytest.raises(DataError, match=r'ADE_train_00000001\.jpg: empty file \(0 bytes\)'):
        _load('mmseg', _ade_ds(ade), 0)


def test_unreadable_image_names_file(ade):
    path = _img(ade)
    with open(path, 'wb') as f:
        f.write(b'this is not a JPEG')
    with pytest.raises(DataError) as e:
        _load('mmseg', _ade_ds(ade), 0)
    assert str(e.value).startswith(f'{path}: not a readable image (18 bytes; ')


def test_truncated_annotation_names_file(ade):
    path = _ann(ade)
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(DataError) as e:
        _load('mmseg', _ade_ds(ade), 0)
    assert str(e.value).startswith(f'{path}: not a readable image (')
    assert 'image file is truncated' in str(e.value)


def test_annotation_size_mismatch(ade):
    path = _ann(ade)
    cv2.imwrite(path, np.ones((16, 40), np.uint8))
    with pytest.raises(DataError) as e:
        _load('mmseg', _ade_ds(ade), 0)
    assert str(e.value).startswith(
        f'{path}: the annotation is 16x40 (height x width) but the image '
        f'{_img(ade)} is 32x40')


def test_colour_annotation(ade):
    path = _ann(ade)
    cv2.imwrite(path, np.ones((32, 40, 3), np.uint8) * np.array([1, 2, 3], np.uint8))
    with pytest.raises(DataError, match=r'shape \(32, 40, 3\), expected a single-channel'):
        _load('mmseg', _ade_ds(ade), 0)


def test_missing_annotation_stops_loading(ade):
    os.remove(_ann(ade, 'ADE_train_00000002'))
    with pytest.raises(DataError) as e:
        _ade_ds(ade)
    assert str(e.value) == (
        f"{osp.join(ade, 'annotations/training')}: 1 of the 3 images have no annotation "
        f"file, e.g. {_ann(ade, 'ADE_train_00000002')} for {_img(ade, 'ADE_train_00000002')}"
        "; every image needs its '.png' label map")


def test_empty_split_stops_loading(tmp_path):
    os.makedirs(tmp_path / 'images' / 'training')
    os.makedirs(tmp_path / 'annotations' / 'training')
    with pytest.raises(DataError, match=r"images/training: no image ending in '\.jpg'; "
                       'check data_root and data_prefix'):
        _ade_ds(str(tmp_path))


def test_missing_data_root_names_the_directory(tmp_path):
    root = str(tmp_path / 'nope')
    with pytest.raises(DataError, match=r"nope/images/training: no such directory; check "
                       f"data_root \\({root!r}\\) and data_prefix"):
        _ade_ds(root)


def test_unused_annotations_one_warning_line(ade, warnings_logged):
    os.remove(_img(ade, 'ADE_train_00000002'))
    os.remove(_img(ade, 'ADE_train_00000003'))
    ds = _ade_ds(ade)
    assert len(ds) == 1
    lines = [m for m in warnings_logged if 'CheckedADE20KDataset' in m]
    assert lines == [
        f"CheckedADE20KDataset {osp.join(ade, 'annotations/training')}: 2 annotation files "
        f"have no image in {osp.join(ade, 'images/training')} and are not used: "
        'ADE_train_00000002.png, ADE_train_00000003.png']


def _seg_sample(label, path='a.png'):
    return dict(pred_sem_seg=dict(data=torch.zeros(1, *label.shape, dtype=torch.long)),
                gt_sem_seg=dict(data=torch.as_tensor(label)[None]), seg_map_path=path,
                img_path='a.jpg')


def _iou_metric():
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmseg'):
        metric = METRICS.build(dict(type='CheckedIoUMetric', iou_metrics=['mIoU']))
    metric.dataset_meta = dict(classes=('a', 'b', 'c'))
    return metric


def test_iou_metric_all_ignored_is_an_error_not_nan():
    metric = _iou_metric()
    metric.process({}, [_seg_sample(np.full((4, 4), 255))] * 2)
    with pytest.raises(DataError) as e:
        metric.compute_metrics(metric.results)
    assert str(e.value).startswith(
        'IoUMetric: none of the 2 evaluated images has a labeled pixel (every ground-truth '
        'value is the ignore index 255), so aAcc and mIoU would be nan')


def test_iou_metric_out_of_range_names_file():
    metric = _iou_metric()
    label = np.zeros((4, 4), np.int64)
    label[0, 0] = 7
    with pytest.raises(DataError, match=r'^b\.png: ground-truth values \{7\} outside \[0, 3\) '
                       'and not the ignore index 255'):
        metric.process({}, [_seg_sample(label, 'b.png')])
    metric.process({}, [_seg_sample(np.zeros((4, 4), np.int64))])
    assert metric.compute_metrics(metric.results)['aAcc'] == 100.0


def test_checks_do_nothing_without_their_inputs():
    from mmplugin_shufflemamba.datasets import CheckImageSize, CheckSegLabels
    results = dict(img=np.zeros((4, 4, 3), np.uint8), ori_shape=(4, 4))
    assert CheckSegLabels(150)(dict(results)) == results
    assert CheckImageSize()(dict(results)) == results
    with pytest.raises(ValueError, match='num_classes must be an integer >= 1, got 0'):
        CheckSegLabels(0)


def test_probe_image_file(tmp_path):
    assert probe_image_file(str(tmp_path / 'nope.png')) == 'no such file'
    assert probe_image_file(str(tmp_path)) == 'a directory, not an image file'
    good = str(tmp_path / 'ok.png')
    cv2.imwrite(good, np.zeros((3, 3), np.uint8))
    assert probe_image_file(good) is None
    assert probe_image_file('s3://bucket/x.jpg') is None  # remote: not probed


# --------------------------------------------------------------------------- detection


@pytest.fixture
def coco(tmp_path):
    # min_area 200 on 40x48 scenes: some images keep no annotation.
    return generate_synthetic_coco(str(tmp_path / 'coco'), num_train=6, num_val=2,
                                   size=(40, 48), min_area=200)


def _coco_json(root, split='train'):
    return osp.join(root, 'annotations', f'instances_{split}2017.json')


def _edit_json(root, fn, split='train'):
    with open(_coco_json(root, split)) as f:
        content = json.load(f)
    fn(content)
    with open(_coco_json(root, split), 'w') as f:
        json.dump(content, f)
    return content


def _coco_ds(root, split='train', pipeline=DET_PIPELINE, **kw):
    cfg = dict(type='CheckedCocoDataset', data_root=root,
               ann_file=f'annotations/instances_{split}2017.json',
               data_prefix=dict(img=f'{split}2017/'), metainfo=synthetic_coco_metainfo(),
               pipeline=pipeline, test_mode=split == 'val')
    if split == 'train':
        cfg['filter_cfg'] = dict(filter_empty_gt=True, min_size=32)
    cfg.update(kw)
    return _build('mmdet', cfg)


def test_coco_set_aside_counted_in_one_warning_line(coco, warnings_logged):
    def add(content):
        a0 = content['annotations'][0]
        content['annotations'] += [
            dict(a0, id=1000, segmentation=[[1, 1, 5, 5]]),  # 2 points
            dict(a0, id=1001, segmentation=[[1, 1, 5, 5], [2, 2, 9, 2, 9]]),  # 2 and odd
            dict(a0, id=1002, iscrowd=1),
            dict(a0, id=1003, bbox=[0, 0, 0.5, 3]),
        ]

    content = _edit_json(coco, add)
    with_anns = {a['image_id'] for a in content['annotations']}
    n_empty = len(content['images']) - len(with_anns)
    assert n_empty > 0
    ds = _coco_ds(coco)
    assert len(ds) == len(with_anns)
    n_anns = len(content['annotations'])
    lines = [m for m in warnings_logged if 'CheckedCocoDataset' in m]
    assert lines == [
        f'CheckedCocoDataset {_coco_json(coco)} (train): set aside 4 of {n_anns} '
        'annotations: 1 with area 0 or a box under 1 pixel (skipped), 2 whose polygons all '
        'have fewer than 3 points (ignored), 1 crowd (ignored); and '
        f'{n_empty} of 6 images: {n_empty} without annotations (filter_empty_gt)']
    # mmdet does ignore those instances: the count is what LoadAnnotations sets aside.
    idx = [ds.get_data_info(i)['img_id'] for i in range(len(ds))].index(
        content['annotations'][0]['image_id'])
    flags = _load('mmdet', ds, idx)['gt_ignore_flags']
    assert flags.sum() == 3


def test_coco_duplicate_image_ids_stop_loading(coco):
    content = _edit_json(coco, lambda c: c['images'][1].update(id=c['images'][0]['id']))
    files = [img['file_name'] for img in content['images'][:2]]
    with pytest.raises(DataError, match=f"1 image id\\(s\\) used by several images, e.g. id "
                       f"{content['images'][0]['id']} by {files[0]}, {files[1]}; COCO image "
                       'ids must be unique'):
        _coco_ds(coco)


def test_coco_duplicate_image_ids_checked_with_a_subclass_coco_api(coco):
    # The check sits where mmdet stores the COCO object, not in COCOAPI: a subclass
    # that sets its own COCOAPI (as mmdet's datasets do) keeps it.
    from mmdet.datasets.api_wrappers import COCO

    from mmplugin_shufflemamba.datasets.checked_coco import CheckedCocoDataset

    class OwnApi(CheckedCocoDataset):
        COCOAPI = COCO

    _edit_json(coco, lambda c: c['images'][1].update(id=c['images'][0]['id']))
    with pytest.raises(DataError, match='used by several images'):
        _coco_ds(coco, type=OwnApi)


def test_coco_annotations_of_unknown_images_are_counted(coco, warnings_logged):
    content = _edit_json(coco, lambda c: c['annotations'][0].update(image_id=12345))
    _coco_ds(coco)
    (line, ) = [m for m in warnings_logged if 'CheckedCocoDataset' in m]
    assert "1 of an image_id not among the images (skipped)" in line
    assert f"of {len(content['annotations'])} annotations" in line


def test_coco_test_set_without_annotations_is_warned_about(coco, warnings_logged):
    """CocoMetric scores a file without annotations (test-dev) -1 for every metric."""
    _coco_ds(coco, split='val')
    assert not [m for m in warnings_logged if 'CheckedCocoDataset' in m]
    content = _edit_json(coco, lambda c: c.pop('annotations'), split='val')
    _coco_ds(coco, split='val')
    (line, ) = [m for m in warnings_logged if 'CheckedCocoDataset' in m]
    assert line == (
        f"CheckedCocoDataset {_coco_json(coco, 'val')} (test): the file has no annotations "
        '(an image-info / test-dev file): CocoMetric can only write results for an '
        'evaluation server from it (format_only=True, outfile_prefix); scored, its '
        f"{len(content['images'])} images give -1 for every metric. To evaluate, give the "
        'file with the annotations.')


@pytest.mark.parametrize('edit,words', [
    (lambda c: c['annotations'][0].update(bbox=[1, 2, 3]),
     r'annotation id {ann}: bbox \[1, 2, 3\] is not \[x, y, w, h\] \(4 numbers\)'),
    (lambda c: c['annotations'][0].pop('bbox'), r'annotation id {ann}: bbox None is not'),
    (lambda c: c['annotations'][0].pop('area'), r"annotation id {ann} has no \['area'\]"),
    (lambda c: c['annotations'][0].update(area=float('nan')), 'has a non-finite area nan'),
    (lambda c: c['images'][0].pop('height'), r"has no \['height'\]: every image entry"),
    (lambda c: c['annotations'][0].update(category_id=99),
     r"annotation id {ann} has category_id 99, which the file's categories do not list "
     r'\(ids 1, 2, 3 and 1 more\); fix the annotation or add its category'),
])
def test_coco_malformed_entries_are_named(coco, edit, words):
    content = _edit_json(coco, edit)
    ann = content['annotations'][0]
    img_id = (content['images'][0]['id'] if 'height' not in content['images'][0] else
              ann['image_id'])
    (img, ) = [i for i in content['images'] if i['id'] == img_id]
    with pytest.raises(DataError, match=f"{_coco_json(coco)}: image id {img['id']} "
                       f"\\({img['file_name']}\\)" + '.*' + words.format(ann=ann['id'])):
        _coco_ds(coco)


def test_coco_config_mistakes_are_not_blamed_on_the_data(coco):
    """mmdet's own KeyError for a data_prefix without 'img' is not a data problem."""
    with pytest.raises(KeyError, match="'img'"):
        _coco_ds(coco, data_prefix=dict(img_path='train2017/'))


def test_coco_non_finite_box_and_bad_json(coco):
    content = _edit_json(coco, lambda c: c['annotations'][0]['bbox'].__setitem__(
        2, float('inf')))
    with pytest.raises(DataError, match=f"annotation id {content['annotations'][0]['id']}"
                       r' has a non-finite bbox \[.*inf'):
        _coco_ds(coco)
    with open(_coco_json(coco), 'w') as f:
        f.write('{"images": [')
    with pytest.raises(DataError, match=f'{_coco_json(coco)}: not a valid json file'):
        _coco_ds(coco)


def test_coco_clean_val_logs_nothing(coco, warnings_logged):
    ds = _coco_ds(coco, 'val')
    assert len(ds) == 2
    assert not [m for m in warnings_logged if 'CheckedCocoDataset' in m]


def test_coco_image_size_mismatch(coco):
    def grow(content):
        content['images'][0]['height'] = 50

    _edit_json(coco, grow, 'val')
    with pytest.raises(DataError) as e:
        _load('mmdet', _coco_ds(coco, 'val'), 0)
    assert str(e.value) == (
        f"{osp.join(coco, 'val2017', '000001000001.jpg')}: the image is 40x48 (height x "
        'width) but its annotation declares 50x48; boxes and masks would not line up with '
        "it: fix the annotation's height/width or the image")


def test_coco_empty_image_names_file(coco):
    path = osp.join(coco, 'val2017', '000001000002.jpg')
    open(path, 'w').close()
    with pytest.raises(DataError, match=r'000001000002\.jpg: empty file \(0 bytes\)'):
        _load('mmdet', _coco_ds(coco, 'val'), 1)


def test_coco_annotation_without_segmentation(coco):
    def strip(content):
        content['annotations'][0]['segmentation'] = []

    content = _edit_json(coco, strip, 'val')
    with pytest.raises(DataError) as e:
        _coco_ds(coco, 'val')
    assert str(e.value).startswith(
        f"{_coco_json(coco, 'val')}: 1 annotations have no segmentation (annotation ids "
        f"{content['annotations'][0]['id']}) but the pipeline loads masks")
    # Boxes only: nothing to complain about.
    assert len(_coco_ds(coco, 'val', pipeline=DET_PIPELINE[:2])) == 2


def test_coco_no_image_left(coco):
    def drop(content):
        content['annotations'] = []

    _edit_json(coco, drop)
    with pytest.raises(DataError, match='instances_train2017.json: no image left to train on '
                       'after filter_data'):
        _coco_ds(coco)


# ---------------------------------------------------------------------- classification


@pytest.fixture
def in1k(tmp_path):
    return generate_synthetic_imagenet(str(tmp_path / 'in1k'), num_train=8, num_val=4,
                                       size=(16, 16))


def _cls_ds(root, split='train'):
    return _build('mmpretrain', dict(
        type='CheckedCustomDataset', data_root=root, ann_file=f'meta/{split}.txt',
        data_prefix=split, metainfo=dict(classes=('building', 'sky', 'tree', 'car')),
        pipeline=[dict(type='LoadImageFromFile')]))


def _rewrite_meta(root, fn, split='train'):
    path = osp.join(root, 'meta', f'{split}.txt')
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, 'w') as f:
        f.write('\n'.join(fn(lines)) + '\n')
    return path


def test_cls_label_out_of_range(in1k):
    first = {}

    def bump(lines):
        first['line'] = lines[1].rsplit(' ', 1)[0]
        return [lines[0], first['line'] + ' 7'] + lines[2:]

    path = _rewrite_meta(in1k, bump)
    with pytest.raises(DataError) as e:
        _cls_ds(in1k)
    assert str(e.value) == (
        f"{path}: 1 labels outside [0, 4), values {{7}} (first: "
        f"{osp.join(in1k, 'train', first['line'])} 7); the dataset has 4 classes: fix the "
        'labels or metainfo classes')


def test_missing_coco_and_imagenet_files_are_named(tmp_path):
    """As the ADE20K data root above: a missing COCO annotation file, ImageNet list file
    or ImageNet image folder is a DataError naming it and the settings to check."""
    root = str(tmp_path / 'nope')
    with pytest.raises(DataError, match=r"nope/annotations/instances_train2017\.json: no "
                       f"such file; check data_root \\({root!r}\\) and ann_file"):
        _coco_ds(root)
    with pytest.raises(DataError, match=r"nope/meta/train\.txt: no such file; check "
                       f"data_root \\({root!r}\\) and ann_file"):
        _cls_ds(root)
    with pytest.raises(DataError, match=r"nope/val: no such directory; check data_root "
                       f"\\({root!r}\\) and data_prefix"):
        _build('mmpretrain', dict(type='CheckedImageNet', data_root=root, data_prefix='val',
                                  pipeline=[]))


def test_a_missing_relative_data_root_says_where_it_was_looked_for(tmp_path, monkeypatch):
    """Data paths are read from the current directory (not a config's folder)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        _coco_ds('data/coco')
    assert str(e.value) == (
        'data/coco/annotations/instances_train2017.json: no such file (a relative path: '
        f"looked for in the current directory, {tmp_path}); check data_root ('data/coco') "
        'and ann_file')


def test_cls_bad_line(in1k):
    path = _rewrite_meta(in1k, lambda lines: lines[:2] + ['sky/x.JPEG two'] + lines[2:])
    with pytest.raises(DataError, match=f"^{path}:3: label 'two' is not an integer$"):
        _cls_ds(in1k)


def test_cls_folder_labels_against_classes_in_another_order(in1k):
    """Without an ann_file, mmpretrain labels images by their sorted folder names and
    only checks the number of classes."""
    cfg = dict(type='CheckedCustomDataset', data_root=in1k, data_prefix='train',
               pipeline=[])
    with pytest.raises(DataError, match=r'labelled by their folder in sorted order '
                       r'\(building, car, sky, tree\), but metainfo classes lists the same '
                       r'names in another order \(building, sky, tree, car\)'):
        _build('mmpretrain', dict(cfg, metainfo=dict(
            classes=('building', 'sky', 'tree', 'car'))))
    ds = _build('mmpretrain', dict(cfg, metainfo=dict(
        classes=('building', 'car', 'sky', 'tree'))))
    assert len(ds) == 8


def test_cls_empty_image(in1k):
    ds = _cls_ds(in1k, 'val')
    path = ds.get_data_info(0)['img_path']
    open(path, 'w').close()
    with pytest.raises(DataError, match=r'\.JPEG: empty file \(0 bytes\)'):
        _load('mmpretrain', ds, 0)


# --------------------------------------------------------------------------- a real run

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# The lines configs/upernet_*.py and configs/quickstart/upernet_*.py carry.
SEG_CONFIG = """
_base_ = [{base!r}]
custom_imports = dict(imports=['mmplugin_shufflemamba', 'mmplugin_shufflemamba.datasets'],
                      allow_failed_imports=False)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegLabels', num_classes=150, ignore_index=255),
    dict(type='RandomResize', scale=(128, 128), ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(128, 128), cat_max_ratio=0.9),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegLabels', num_classes=150, ignore_index=255),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(type='CheckedADE20KDataset', pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(type='CheckedADE20KDataset', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CheckedIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
"""


def test_train_run_stops_with_the_file_named(tmp_path):
    import subprocess
    import sys
    tiny_overrides = load_tool('analysis', 'stress_dist_exit.py').tiny_overrides
    data = generate_synthetic_ade20k(str(tmp_path / 'data'), num_train=4, num_val=2,
                                     size=(64, 64))
    path = _ann(data, 'ADE_train_00000002')
    ann = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    ann[5, 5] = 200
    cv2.imwrite(path, ann)
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(SEG_CONFIG.format(base=osp.join(
        ROOT, 'configs', 'quickstart',
        'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')))
    run = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), str(cfg), '--work-dir',
         str(tmp_path / 'work'), '--cfg-options'] + tiny_overrides(data, 2),
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path),
        env=dict(os.environ, OMP_NUM_THREADS='2',
                 PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', '')))
    assert run.returncode == 1 and 'Traceback' not in run.stderr, run.stderr[-3000:]
    assert (run.stdout + run.stderr).strip().splitlines()[-1] == (
        f'tools/train.py: {path}: label values {{199}} '
        'outside [0, 150) and not the ignore index 255 (read with reduce_zero_label=True: '
        'the file holds {200}; its 0 is ignored and k > 0 becomes k - 1); fix the '
        'annotation, or set num_classes (here 150) to the number of classes its labels count')
