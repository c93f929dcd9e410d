import filecmp
import json
import os

import numpy as np
import pytest

from mmplugin_shufflemamba.datasets import (SYNTHETIC_COCO_CLASSES, generate_synthetic_ade20k,
                                            generate_synthetic_coco, mask_to_bbox,
                                            mask_to_polygons, render_scene, scene_rng,
                                            synthetic_coco_metainfo)

SIZE = (56, 72)  # (h, w), not square: catches x/y mix-ups
SEED = 3
MIN_AREA = 40
NUM = dict(train=5, val=3)


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    return generate_synthetic_coco(str(tmp_path_factory.mktemp('coco') / 'd'),
                                   num_train=NUM['train'], num_val=NUM['val'], size=SIZE,
                                   seed=SEED, min_area=MIN_AREA)


def _rasterise(polygons, h, w):
    from pycocotools import mask as mask_utils
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))) > 0


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _tree(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            out[os.path.relpath(os.path.join(d, f), root)] = os.path.join(d, f)
    return out


def test_classes_and_metainfo():
    assert SYNTHETIC_COCO_CLASSES == ('building', 'sky', 'tree', 'car')
    meta = synthetic_coco_metainfo()
    assert tuple(meta['classes']) == SYNTHETIC_COCO_CLASSES
    assert len(meta['palette']) == len(SYNTHETIC_COCO_CLASSES)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in meta['palette'])


def test_polygons_of_parts_and_holes():
    m = np.zeros((30, 40), bool)
    m[2:20, 3:25] = True
    m[6:12, 8:14] = False  # a hole
    m[8:10, 10:12] = True  # an island inside the hole
    m[15:17, 18:20] = False  # a second hole
    m[25, 30] = True  # a single pixel
    m[22:28, 34] = True  # a 1-pixel wide line
    m[0, 39] = m[1, 38] = True  # touching diagonally only
    polys = mask_to_polygons(m)
    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)
    assert np.array_equal(_rasterise(polys, 30, 40), m)
    assert mask_to_bbox(m) == [3.0, 0.0, 37.0, 28.0]
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []


def test_polygons_of_rendered_masks_are_exact():
    ious = []
    for i in range(15):
        scene = render_scene(scene_rng(7, i), (48, 40))
        for inst in scene.instances:
            if inst.area:
                ious.append(_iou(_rasterise(mask_to_polygons(inst.mask), 48, 40), inst.mask))
    assert min(ious) > 0.99


@pytest.mark.parametrize('split', ['train', 'val'])
def test_annotations_match_the_renderer(coco_root, split):
    import cv2
    from pycocotools.coco import COCO
    coco = COCO(os.path.join(coco_root, 'annotations', f'instances_{split}2017.json'))
    assert [c['name'] for c in coco.loadCats(sorted(coco.getCatIds()))] == \
        list(SYNTHETIC_COCO_CLASSES)
    assert sorted(coco.getCatIds()) == [1, 2, 3, 4]
    ann_ids = [a['id'] for a in coco.dataset['annotations']]
    img_ids = [im['id'] for im in coco.dataset['images']]
    assert len(set(ann_ids)) == len(ann_ids) and len(set(img_ids)) == len(img_ids)
    assert len(img_ids) == NUM[split]
    n_dropped = 0
    ious = []
    for i, img_info in enumerate(coco.dataset['images']):
        assert (img_info['height'], img_info['width']) == SIZE
        path = os.path.join(coco_root, f'{split}2017', img_info['file_name'])
        img = cv2.imread(path)
        assert img is not None and img.shape == SIZE + (3, )
        scene = render_scene(scene_rng(SEED, i, split), SIZE)
        with open(path, 'rb') as f:  # the JPEG of the rendered image
            jpg = f.read()
        ok, want = cv2.imencode('.jpg', scene.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok and jpg == want.tobytes()
        expected = [inst for inst in scene.instances if inst.area >= MIN_AREA]
        n_dropped += len(scene.instances) - len(expected)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_info['id']]))
        assert len(anns) == len(expected)
        for ann, inst in zip(anns, expected):
            assert ann['iscrowd'] == 0 and ann['image_id'] == img_info['id']
            assert SYNTHETIC_COCO_CLASSES[ann['category_id'] - 1] == inst.name
            assert isinstance(ann['segmentation'], list) and ann['segmentation']
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann['segmentation'])
            mask = coco.annToMask(ann) > 0
            ious.append(_iou(mask, inst.mask))
            assert ious[-1] > 0.85
            ys, xs = np.nonzero(inst.mask)
            want = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            assert np.allclose(ann['bbox'], want, atol=1)
            assert ann['area'] == inst.area and ann['area'] >= MIN_AREA
    assert np.mean(ious) > 0.98
    if split == 'train':
        assert ann_ids  # something to learn


def test_min_area_drops_occluded_shapes(tmp_path):
    # Shapes this size have at most ~300 pixels: a high threshold drops most.
    kw = dict(num_train=6, num_val=0, size=(40, 40), seed=0)
    counts = []
    for min_area in (1, 300):
        root = generate_synthetic_coco(str(tmp_path / str(min_area)), min_area=min_area, **kw)
        with open(os.path.join(root, 'annotations', 'instances_train2017.json')) as f:
            anns = json.load(f)['annotations']
        assert all(a['area'] >= min_area for a in anns)
        counts.append(len(anns))
    n_all = sum(len(render_scene(scene_rng(0, i), (40, 40)).instances) for i in range(6))
    assert n_all >= counts[0] > counts[1]


def test_read_by_mmdet_coco_dataset(coco_root):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    with open(os.path.join(coco_root, 'annotations', 'instances_train2017.json')) as f:
        raw = json.load(f)
    # mmdet's transforms, without leaving 'mmdet' as the default scope of later tests.
    with DefaultScope.overwrite_default_scope('mmdet'):
        _check_mmdet_coco_dataset(CocoDataset, coco_root, raw)


def _check_mmdet_coco_dataset(CocoDataset, coco_root, raw):
    ds = CocoDataset(
        data_root=coco_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        metainfo=dict(classes=SYNTHETIC_COCO_CLASSES),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
            dict(type='PackDetInputs')
        ])
    assert len(ds) == NUM['train']
    assert tuple(ds.metainfo['classes']) == SYNTHETIC_COCO_CLASSES
    for i in range(len(ds)):
        item = ds[i]
        sample = item['data_samples']
        gt = sample.gt_instances
        img_id = sample.img_id
        raw_anns = [a for a in raw['annotations'] if a['image_id'] == img_id]
        assert tuple(item['inputs'].shape) == (3, ) + SIZE
        assert len(gt.bboxes) == len(gt.masks) == len(gt.labels) == len(raw_anns)
        assert gt.masks.height == SIZE[0] and gt.masks.width == SIZE[1]
        labels = gt.labels.tolist()
        assert labels == [a['category_id'] - 1 for a in raw_anns]
        assert all(0 <= label < len(SYNTHETIC_COCO_CLASSES) for label in labels)
        boxes = gt.bboxes.tensor.numpy()
        masks = gt.masks.to_ndarray().astype(bool)
        for box, mask in zip(boxes, masks):
            ys, xs = np.nonzero(mask)
            assert np.allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1)


def test_same_images_as_ade20k(coco_root, tmp_path):
    ade = generate_synthetic_ade20k(str(tmp_path / 'ade'), num_train=NUM['train'],
                                    num_val=NUM['val'], size=SIZE, seed=SEED)
    for split, ade_split, offset in (('train', 'training', 0), ('val', 'validation', 10**6)):
        for i in range(NUM[split]):
            assert filecmp.cmp(
                os.path.join(coco_root, f'{split}2017', f'{offset + i + 1:012d}.jpg'),
                os.path.join(ade, 'images', ade_split, f'ADE_{split}_{i + 1:08d}.jpg'),
                shallow=False)


def test_deterministic_and_idempotent(coco_root, tmp_path):
    again = generate_synthetic_coco(str(tmp_path / 'again'), num_train=NUM['train'],
                                    num_val=NUM['val'], size=SIZE, seed=SEED,
                                    min_area=MIN_AREA)
    a, b = _tree(coco_root), _tree(again)
    assert sorted(a) == sorted(b)
    assert len([p for p in a if p.endswith('.jpg')]) == NUM['train'] + NUM['val']
    for rel in a:
        assert filecmp.cmp(a[rel], b[rel], shallow=False), rel

    other = generate_synthetic_coco(str(tmp_path / 'other'), num_train=NUM['train'],
                                    num_val=NUM['val'], size=SIZE, seed=SEED + 1,
                                    min_area=MIN_AREA)
    ann = os.path.join('annotations', 'instances_train2017.json')
    assert not filecmp.cmp(a[ann], os.path.join(other, ann), shallow=False)

    # A second call with the same arguments rewrites nothing.
    mtimes = {rel: os.stat(p).st_mtime_ns for rel, p in b.items()}
    img = b[os.path.join('train2017', '000000000001.jpg')]
    os.remove(img)
    generate_synthetic_coco(again, num_train=NUM['train'], num_val=NUM['val'], size=SIZE,
                            seed=SEED, min_area=MIN_AREA)
    assert not os.path.exists(img)
    del mtimes[os.path.join('train2017', '000000000001.jpg')]
    assert {rel: os.stat(p).st_mtime_ns for rel, p in _tree(again).items()} == mtimes
    # Other arguments or overwrite=True write again.
    generate_synthetic_coco(again, num_train=NUM['train'], num_val=NUM['val'], size=SIZE,
                            seed=SEED, min_area=MIN_AREA, overwrite=True)
    assert filecmp.cmp(img, a[os.path.join('train2017', '000000000001.jpg')], shallow=False)
