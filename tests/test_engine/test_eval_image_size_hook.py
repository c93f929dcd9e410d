"""EvalImageSizeHook: a segmentation evaluation batch stacks its images, which must share
one size; a set of several sizes with batch_size > 1 is refused before the run (mmseg's
data preprocessor asserted it at the first validation, after the whole training)."""
import glob
import os.path as osp
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.dataset import DefaultSampler, pseudo_collate
from PIL import Image

from mmplugin_shufflemamba.datasets import DataError, generate_synthetic_ade20k
from mmplugin_shufflemamba.engine.hooks import EvalImageSizeHook


def loop_of(root, batch_size, resize=None):
    from mmseg.datasets import ADE20KDataset
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    pipeline = [dict(type='LoadImageFromFile')] + ([resize] if resize else []) + \
        [dict(type='LoadAnnotations', reduce_zero_label=True), dict(type='PackSegInputs')]
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = ADE20KDataset(data_root=root, pipeline=pipeline,
                                data_prefix=dict(img_path='images/validation',
                                                 seg_map_path='annotations/validation'))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                         sampler=DefaultSampler(dataset, shuffle=False),
                                         collate_fn=pseudo_collate)
    return SimpleNamespace(dataloader=loader)


def runner_of(loop):
    from mmseg.models import SegDataPreProcessor
    model = torch.nn.Module()
    model.data_preprocessor = SegDataPreProcessor()
    return SimpleNamespace(model=model, val_loop=loop, test_loop=loop)


def test_a_set_of_several_sizes_in_batches_is_refused_before_the_run(tmp_path):
    root = str(tmp_path / 'ade')
    generate_synthetic_ade20k(root, num_train=1, num_val=3, size=(32, 32))
    hook = EvalImageSizeHook()
    hook.before_train(runner_of(loop_of(root, 2)))  # one size: nothing to say
    image = sorted(glob.glob(osp.join(root, 'images', 'validation', '*.jpg')))[1]
    label = osp.join(root, 'annotations', 'validation',
                     osp.basename(image).replace('.jpg', '.png'))
    Image.fromarray(np.zeros((48, 32, 3), np.uint8)).save(image)
    Image.fromarray(np.ones((48, 32), np.uint8)).save(label)
    with pytest.raises(DataError) as e:
        hook.before_test(runner_of(loop_of(root, 2)))
    assert str(e.value).startswith(
        'test_dataloader.batch_size=2, and mmseg tests a batch of images of one size: the '
        'test set has images of 32x32 and 48x32'), str(e.value)
    assert 'Set test_dataloader.batch_size=1' in str(e.value)
    with pytest.raises(DataError, match='val_dataloader.batch_size=2'):
        hook.before_train(runner_of(loop_of(root, 2)))
    # what it stands for: mmseg's preprocessor on such a batch
    loader = loop_of(root, 3).dataloader
    with pytest.raises(AssertionError, match='The image size in a batch should be the same'):
        runner_of(None).model.data_preprocessor(next(iter(loader)), training=False)
    # one image per batch, or every image resized to one size: fine
    hook.before_test(runner_of(loop_of(root, 1)))
    resize = dict(type='Resize', scale=(32, 32), keep_ratio=False)
    hook.before_test(runner_of(loop_of(root, 2, resize)))
    hook.before_train(runner_of(None))  # no validation


def _two_ranks(rank, port, root, out):
    import torch.distributed as torch_dist
    import PIL.Image
    torch_dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                                  rank=rank, world_size=2)
    try:
        if rank == 1:  # only rank 0 reads the headers
            def refuse(*args, **kwargs):
                raise AssertionError('rank 1 opened an image')
            PIL.Image.open = refuse
        try:
            EvalImageSizeHook().before_test(runner_of(loop_of(root, 2)))
            result = 'passed'
        except Exception as e:
            result = f'{type(e).__name__}: {e}'
        with open(f'{out}.{rank}', 'w') as f:
            f.write(result)
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.parametrize('case', ['sizes', 'unreadable'])
def test_two_ranks_read_the_headers_once_and_stop_together(tmp_path, case):
    """Rank 0 reads; every rank stops with its verdict, an unreadable image included
    (rank 0 with the error itself, the others with its text)."""
    import torch.multiprocessing as mp

    from helpers.dist import free_port
    root = str(tmp_path / 'ade')
    generate_synthetic_ade20k(root, num_train=1, num_val=3, size=(32, 32))
    image = sorted(glob.glob(osp.join(root, 'images', 'validation', '*.jpg')))[2]
    if case == 'sizes':
        Image.fromarray(np.zeros((40, 32, 3), np.uint8)).save(image)
    else:
        with open(image, 'wb') as f:
            f.write(b'not an image')
    out = str(tmp_path / 'verdict')
    mp.start_processes(_two_ranks, args=(free_port(), root, out), nprocs=2,
                       start_method='fork')
    verdicts = [open(f'{out}.{rank}').read() for rank in range(2)]
    if case == 'sizes':
        assert verdicts[0] == verdicts[1], verdicts
        assert verdicts[0].startswith(
            'DataError: test_dataloader.batch_size=2, and mmseg tests a batch of images of '
            'one size: the test set has images of 32x32 and 40x32'), verdicts[0]
    else:
        assert verdicts[0].startswith('UnidentifiedImageError: cannot identify image file')
        assert verdicts[1] == ("DataError: reading the test images' sizes on rank 0: "
                               + verdicts[0]), verdicts
