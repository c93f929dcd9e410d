import os

import numpy as np

from mmplugin_shufflemamba.datasets import (SYNTHETIC_CLASSES, generate_synthetic_ade20k,
                                            render_sample)


def test_deterministic_and_valid_labels():
    a_img, a_ann = render_sample(np.random.default_rng([0, 1]))
    b_img, b_ann = render_sample(np.random.default_rng([0, 1]))
    assert np.array_equal(a_img, b_img) and np.array_equal(a_ann, b_ann)
    assert set(np.unique(a_ann)) <= set(SYNTHETIC_CLASSES.values()) | {0}
    assert (a_ann == 0).any()  # unlabeled rims exercise reduce_zero_label


def test_layout_read_by_mmseg_ade20k(tmp_path):
    from mmseg.datasets import ADE20KDataset
    root = generate_synthetic_ade20k(str(tmp_path / 'd'), num_train=3, num_val=2,
                                     size=(40, 48))
    assert sorted(os.listdir(os.path.join(root, 'images', 'training')))[0] == \
        'ADE_train_00000001.jpg'
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
