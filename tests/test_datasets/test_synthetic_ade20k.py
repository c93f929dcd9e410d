import os

import numpy as np
import pytest

from mmplugin_shufflemamba.datasets import (SHAPE_CLASSES, SYNTHETIC_CLASSES, ade20k_semantic_map,
                                            generate_synthetic_ade20k, render_sample,
                                            render_scene, scene_rng)


def _reference_ade_map(scene):
    """How the ADE20K annotation has always been composed: shapes painted in drawing
    order, each first clearing a 1-pixel (4-neighbour) rim around its full extent to 0,
    then painting its full (amodal) mask with its label."""
    ann = np.full(scene.size, SYNTHETIC_CLASSES['wall'], np.uint8)
    for inst in scene.instances:
        m = np.pad(inst.amodal_mask, 1)
        grown = m[:-2, 1:-1] | m[2:, 1:-1] | m[1:-1, :-2] | m[1:-1, 2:] | m[1:-1, 1:-1]
        ann[grown & ~inst.amodal_mask] = 0
        ann[inst.amodal_mask] = SYNTHETIC_CLASSES[inst.name]
    return ann


def test_deterministic_and_valid_labels():
    a_img, a_ann = render_sample(np.random.default_rng([0, 1]))
    b_img, b_ann = render_sample(np.random.default_rng([0, 1]))
    assert np.array_equal(a_img, b_img) and np.array_equal(a_ann, b_ann)
    assert set(np.unique(a_ann)) <= set(SYNTHETIC_CLASSES.values()) | {0}
    assert (a_ann == 0).any()  # unlabeled rims exercise reduce_zero_label


def test_scene_rng_is_the_historical_seed_sequence():
    # Changing it would silently change every generated dataset.
    for split, offset in (('train', 0), ('val', 10**6)):
        a, b = scene_rng(3, 7, split), np.random.default_rng([3, offset + 7])
        assert a.random() == b.random()
    with pytest.raises(ValueError):
        scene_rng(0, 0, 'test')


@pytest.mark.parametrize('size', [(64, 64), (40, 56)])
def test_render_sample_is_the_scene_semantic_map(size):
    n_occluded = 0
    for i in range(12):
        scene = render_scene(scene_rng(0, i), size)
        img, ann = render_sample(scene_rng(0, i), size)
        assert np.array_equal(img, scene.image) and img.shape == size + (3, )
        assert img.dtype == np.uint8 and ann.dtype == np.uint8
        assert 2 <= len(scene.instances) <= 4
        assert np.array_equal(ann, ade20k_semantic_map(scene))
        assert np.array_equal(ann, _reference_ade_map(scene))
        # Visible masks: what no later shape covers; disjoint, same union as drawn.
        later = np.zeros(size, bool)
        for inst in reversed(scene.instances):
            assert inst.name in SHAPE_CLASSES
            assert np.array_equal(inst.mask, inst.amodal_mask & ~later)
            n_occluded += int((inst.mask != inst.amodal_mask).any())
            later |= inst.amodal_mask
        total = sum(inst.mask.astype(int) for inst in scene.instances)
        assert total.max() <= 1 and np.array_equal(total > 0, later)
        # The annotation is never a shape's label outside that shape's visible pixels.
        for inst in scene.instances:
            label = SYNTHETIC_CLASSES[inst.name]
            mine = np.zeros(size, bool)
            for other in scene.instances:
                if other.name == inst.name:
                    mine |= other.mask
            assert not ((ann == label) & ~mine).any()
    assert n_occluded > 0  # the check above saw occlusions


def test_visible_masks_cover_their_texture():
    """The visible masks lie where the image shows the class's texture."""
    seen = set()
    for i in range(20):
        scene = render_scene(scene_rng(1, i), (96, 96))
        for inst in scene.instances:
            if inst.area < 50:
                continue
            r, g, b = scene.image[inst.mask].astype(float).mean(0)
            seen.add(inst.name)
            if inst.name == 'building':
                assert r > g + 60 and r > b + 60
            elif inst.name == 'sky':
                assert b > r + 60 and b > g + 40
            elif inst.name == 'tree':
                assert g > r + 60 and g > b + 60
            else:
                assert r > b + 100 and g > b + 100
    assert seen == set(SHAPE_CLASSES)


def test_written_files_are_the_rendered_scenes(tmp_path):
    import cv2
    size = (40, 48)
    root = generate_synthetic_ade20k(str(tmp_path / 'd'), num_train=3, num_val=2, size=size,
                                     seed=5)
    for split, short, num in (('training', 'train', 3), ('validation', 'val', 2)):
        for i in range(num):
            scene = render_scene(scene_rng(5, i, short), size)
            name = f'ADE_{short}_{i + 1:08d}'
            ann = cv2.imread(os.path.join(root, 'annotations', split, name + '.png'),
                             cv2.IMREAD_UNCHANGED)
            assert np.array_equal(ann, _reference_ade_map(scene))
            with open(os.path.join(root, 'images', split, name + '.jpg'), 'rb') as f:
                jpg = f.read()
            ok, want = cv2.imencode('.jpg', scene.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            assert ok and jpg == want.tobytes()


def test_idempotent(tmp_path):
    root = str(tmp_path / 'd')
    generate_synthetic_ade20k(root, num_train=2, num_val=1, size=(32, 32))
    img = os.path.join(root, 'images', 'training', 'ADE_train_00000001.jpg')
    os.remove(img)
    generate_synthetic_ade20k(root, num_train=2, num_val=1, size=(32, 32))
    assert not os.path.exists(img)  # the stamp says it is done: nothing rewritten
    generate_synthetic_ade20k(root, num_train=2, num_val=1, size=(32, 32), overwrite=True)
    assert os.path.exists(img)


def test_layout_read_by_mmseg_ade20k(tmp_path):
    from mmengine.registry import DefaultScope
    from mmseg.datasets import ADE20KDataset
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    root = generate_synthetic_ade20k(str(tmp_path / 'd'), num_train=3, num_val=2,
                                     size=(40, 48))
    assert sorted(os.listdir(os.path.join(root, 'images', 'training')))[0] == \
        'ADE_train_00000001.jpg'
    # mmseg's LoadAnnotations, whatever default scope earlier tests left behind.
    with DefaultScope.overwrite_default_scope('mmseg'):
        ds = ADE20KDataset(
            data_root=root, data_prefix=dict(img_path='images/validation',
                                             seg_map_path='annotations/validation'),
            pipeline=[dict(type='LoadImageFromFile'),
                      dict(type='LoadAnnotations', reduce_zero_label=True)])
        assert len(ds) == 2
        item = ds[0]
    seg = item['gt_seg_map']
    assert item['img'].shape == (40, 48, 3)
    valid = set(np.unique(seg)) - {255}
    assert valid <= {v - 1 for v in SYNTHETIC_CLASSES.values()}
