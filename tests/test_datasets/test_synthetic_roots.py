"""The synthetic writers never mix two datasets in one root: other arguments replace the
files of the previous run (those its stamp lists, nothing else); a root with files the
writer did not write is refused before anything is removed or written."""
import json
import os
import os.path as osp

import cv2
import pytest

from mmplugin_shufflemamba.datasets import (generate_synthetic_ade20k, generate_synthetic_coco,
                                            generate_synthetic_imagenet)


def _files(root):
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            out.append(osp.relpath(osp.join(d, f), root).replace(os.sep, '/'))
    return sorted(out)


def _snapshot(root):
    return {p: os.stat(osp.join(root, p)).st_mtime_ns for p in _files(root)}


def test_ade20k_other_arguments_replace_the_old_files(tmp_path):
    root = str(tmp_path / 'd')
    generate_synthetic_ade20k(root, num_train=5, num_val=2, size=(64, 64))
    generate_synthetic_ade20k(root, num_train=3, num_val=1, size=(32, 32))
    images = _files(osp.join(root, 'images'))
    assert images == ['training/ADE_train_00000001.jpg', 'training/ADE_train_00000002.jpg',
                      'training/ADE_train_00000003.jpg', 'validation/ADE_val_00000001.jpg']
    assert len(_files(osp.join(root, 'annotations'))) == 4
    for rel in images:  # every image is of the new size: nothing stale is left
        assert cv2.imread(osp.join(root, 'images', rel)).shape == (32, 32, 3)
    with open(osp.join(root, '.synthetic_ade20k')) as f:
        stamp = json.load(f)
    assert stamp['key'] == '3 1 32x32 seed=0 v1' and stamp['complete']
    assert sorted(stamp['files']) == [p for p in _files(root) if p != '.synthetic_ade20k']


def test_same_arguments_write_nothing_overwrite_rewrites(tmp_path):
    root = str(tmp_path / 'd')
    generate_synthetic_ade20k(root, num_train=2, num_val=1, size=(16, 16))
    before = _snapshot(root)
    generate_synthetic_ade20k(root, num_train=2, num_val=1, size=(16, 16))
    assert _snapshot(root) == before
    generate_synthetic_ade20k(root, num_train=2, num_val=1, size=(16, 16), overwrite=True)
    after = _snapshot(root)
    assert sorted(after) == sorted(before)
    assert all(after[p] >= before[p] for p in before)


def test_foreign_file_next_to_stamp_is_refused(tmp_path):
    root = str(tmp_path / 'd')
    generate_synthetic_ade20k(root, num_train=2, num_val=1, size=(16, 16))
    stray = osp.join(root, 'images', 'training', 'mine.jpg')
    open(stray, 'w').close()
    before = _snapshot(root)
    for kw in (dict(num_train=3), dict(num_train=2, overwrite=True), dict(num_train=2)):
        with pytest.raises(FileExistsError) as e:
            generate_synthetic_ade20k(root, num_val=1, size=(16, 16), **kw)
        assert str(e.value) == (
            f"{root} has 1 file(s) that generate_synthetic_ade20k did not write: "
            "'images/training/mine.jpg'. generate_synthetic_ade20k writes only into an empty "
            'directory or one it wrote before (it never deletes files it did not write, and '
            'the frameworks would read them together with the new ones): choose another '
            'directory or remove those files.')
        assert _snapshot(root) == before  # nothing removed, nothing written


def test_non_empty_root_without_stamp_is_refused(tmp_path):
    root = tmp_path / 'd'
    (root / 'images' / 'training').mkdir(parents=True)
    for name in ('a.jpg', 'b.jpg', 'c.jpg', 'd.jpg'):
        (root / 'images' / 'training' / name).write_bytes(b'x')
    with pytest.raises(FileExistsError) as e:
        generate_synthetic_ade20k(str(root), num_train=2, num_val=1, size=(16, 16))
    assert str(e.value).startswith(
        f"{root} is not empty (4 file(s)) and has no stamp '.synthetic_ade20k', so "
        "generate_synthetic_ade20k did not write it: 'images/training/a.jpg', "
        "'images/training/b.jpg', 'images/training/c.jpg' and 1 more.")
    assert _files(str(root)) == ['images/training/a.jpg', 'images/training/b.jpg',
                                 'images/training/c.jpg', 'images/training/d.jpg']


def test_two_writers_in_one_root_are_refused(tmp_path):
    root = str(tmp_path / 'd')
    generate_synthetic_ade20k(root, num_train=2, num_val=1, size=(16, 16))
    with pytest.raises(FileExistsError, match="has no stamp '.synthetic_coco'"):
        generate_synthetic_coco(root, num_train=2, num_val=1, size=(16, 16))


def test_unfinished_run_is_cleaned_up(tmp_path):
    root = str(tmp_path / 'd')
    generate_synthetic_ade20k(root, num_train=3, num_val=1, size=(16, 16))
    stamp = osp.join(root, '.synthetic_ade20k')
    with open(stamp) as f:
        content = json.load(f)
    content['complete'] = False  # as if the run had stopped half-way
    with open(stamp, 'w') as f:
        json.dump(content, f)
    os.remove(osp.join(root, 'images', 'training', 'ADE_train_00000003.jpg'))
    generate_synthetic_ade20k(root, num_train=3, num_val=1, size=(16, 16))
    assert len(_files(osp.join(root, 'images'))) == 4
    with open(stamp) as f:
        assert json.load(f)['complete']


def test_stamp_of_earlier_versions(tmp_path):
    # Earlier stamps held the argument key alone: same key -> nothing to do; other
    # arguments -> the files of the writer's naming are replaced, others refused.
    root = str(tmp_path / 'd')
    generate_synthetic_ade20k(root, num_train=3, num_val=1, size=(16, 16))
    stamp = osp.join(root, '.synthetic_ade20k')
    with open(stamp, 'w') as f:
        f.write('3 1 16x16 seed=0 v1')
    before = _snapshot(root)
    generate_synthetic_ade20k(root, num_train=3, num_val=1, size=(16, 16))
    assert _snapshot(root) == before
    generate_synthetic_ade20k(root, num_train=2, num_val=1, size=(16, 16))
    assert len(_files(osp.join(root, 'images'))) == 3
    with open(stamp, 'w') as f:
        f.write('3 1 16x16 seed=0 v1')
    open(osp.join(root, 'notes.txt'), 'w').close()
    with pytest.raises(FileExistsError, match="'notes.txt'"):
        generate_synthetic_ade20k(root, num_train=1, num_val=1, size=(16, 16))


def test_coco_other_arguments_replace_the_old_files(tmp_path):
    root = str(tmp_path / 'd')
    generate_synthetic_coco(root, num_train=4, num_val=2, size=(24, 24))
    generate_synthetic_coco(root, num_train=2, num_val=1, size=(24, 24), seed=1)
    assert _files(root) == ['.synthetic_coco', 'annotations/instances_train2017.json',
                            'annotations/instances_val2017.json',
                            'train2017/000000000001.jpg', 'train2017/000000000002.jpg',
                            'val2017/000001000001.jpg']


def test_imagenet_other_arguments_replace_the_old_files(tmp_path):
    root = str(tmp_path / 'd')
    generate_synthetic_imagenet(root, num_train=8, num_val=4, size=(16, 16))
    generate_synthetic_imagenet(root, num_train=4, num_val=4, size=(16, 16), seed=3)
    train = [p for p in _files(root) if p.startswith('train/')]
    assert len(train) == 4
    with open(osp.join(root, 'meta', 'train.txt')) as f:
        listed = sorted('train/' + line.split()[0] for line in f)
    assert listed == sorted(train)


@pytest.mark.parametrize('kw, words', [
    (dict(num_train=-1), 'num_train must be an integer >= 0, got -1'),
    (dict(num_train=0, num_val=0), 'num_train and num_val are both 0: nothing to write'),
    (dict(num_val=2.5), 'num_val must be an integer >= 0, got 2.5'),
    (dict(size=(0, 16)), 'size must be (height, width), two integers >= 1, got (0, 16)'),
    (dict(size=16), 'size must be (height, width), two integers >= 1, got 16'),
])
def test_bad_arguments(tmp_path, kw, words):
    args = dict(num_train=2, num_val=1, size=(16, 16))
    args.update(kw)
    with pytest.raises(ValueError) as e:
        generate_synthetic_ade20k(str(tmp_path / 'd'), **args)
    assert str(e.value) == words
    assert not osp.exists(tmp_path / 'd')
    with pytest.raises(ValueError, match='num_val must be an integer >= 1, got 0'):
        generate_synthetic_imagenet(str(tmp_path / 'i'), num_train=4, num_val=0)
