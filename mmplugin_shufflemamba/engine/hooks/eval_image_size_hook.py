"""Segmentation evaluation in batches of images of one size, checked before the run."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ...datasets.data_checks import DataError


@HOOKS.register_module()
class EvalImageSizeHook(Hook):
    """mmseg's data preprocessor stacks an evaluation batch's images, which must share
    one size ('The image size in a batch should be the same' otherwise, at the first
    validation: after the whole training). Before training (the validation set) and
    before testing (the test set), a segmentation dataloader with ``batch_size > 1``
    whose pipeline does not resize to one fixed size has the sizes of its images read
    (file headers); images of more than one size are a :class:`DataError` naming the
    setting and the fix. ``build_runner`` registers it."""

    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        if runner.val_loop is not None:  # (None: no validation in this run)
            check_eval_image_sizes(runner.model, runner.val_loop.dataloader, 'val')

    def before_test(self, runner) -> None:
        check_eval_image_sizes(runner.model, runner.test_loop.dataloader, 'test')


def check_eval_image_sizes(model, loader, name: str, option: Optional[str] = None) -> None:
    """The check of :class:`EvalImageSizeHook` on one dataloader of ``model`` (``name``:
    'val' or 'test'; ``option``: the tool's option that set its batch size, as
    ``tools/analysis/benchmark.py`` runs it on its own loader). In a distributed run
    rank 0 reads the headers and every rank stops with its verdict."""
    from mmengine.dist import broadcast_object_list, get_rank
    from mmseg.models import SegDataPreProcessor

    from ...checkpoint.fit import unwrap_model
    size = getattr(loader, 'batch_size', None) or 1
    preprocessor = getattr(unwrap_model(model), 'data_preprocessor', None)
    if size <= 1 or not isinstance(preprocessor, SegDataPreProcessor):
        return
    dataset = loader.dataset
    for t in getattr(getattr(dataset, 'pipeline', None), 'transforms', []):
        if getattr(t, 'keep_ratio', True) is False and getattr(t, 'scale', None):
            return  # every image resized to one size
    verdict, error = [None], None  # (the same on every rank: one raising alone would hang)
    if get_rank() == 0:
        try:
            verdict[0] = _two_sizes(dataset)
        except Exception as e:  # e.g. an unreadable image: every rank stops with it
            error, verdict[0] = e, f'{type(e).__name__}: {e}'  # (text: always picklable)
    broadcast_object_list(verdict)  # (nothing to do on one process)
    if error is not None:
        raise error
    if isinstance(verdict[0], str):
        raise DataError(f'reading the {name} images\' sizes on rank 0: {verdict[0]}')
    if verdict[0] is not None:
        (w0, h0), (w1, h1), path = verdict[0]
        setting = option or f'{name}_dataloader.batch_size'
        sep = ' ' if option else '='
        raise DataError(
            f'{setting}{sep}{size}, and mmseg tests a batch of images of one size: the '
            f'{name} set has images of {h0}x{w0} and {h1}x{w1} (e.g. {path}). Set '
            f"{setting}{sep}1, as mmseg's own configs, or resize every image to one "
            'size in its pipeline (Resize with keep_ratio=False).')


def _two_sizes(dataset):
    """The first two image sizes (width, height) of ``dataset`` and the path of the first
    image of the second, read from the file headers; None for a set of one size (or
    without image paths)."""
    from PIL import Image
    first = None
    for i in range(len(dataset)):
        path = dataset.get_data_info(i).get('img_path')
        if path is None:
            return None
        with Image.open(path) as img:  # (the header only)
            if first is None:
                first = img.size
            elif img.size != first:
                return first, img.size, path
    return None
