"""Mixed precision on the CPU (MMEngine 0.10's ``AmpOptimWrapper`` refuses machines
without a GPU): bfloat16 has float32's exponent range and needs no loss scaling, so only
the forward pass runs under ``torch.autocast('cpu', dtype=torch.bfloat16)``; parameters,
gradients, the optimizer and the state dict stay the plain ``OptimWrapper``'s (resuming
works across AMP on and off). The ShuffleMamba ops scan in float32 whatever the autocast.
"""
from contextlib import contextmanager
from typing import Union

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from ...errors import ArgumentValueError


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward context autocasts to bfloat16 on the CPU.

    Args:
        dtype (str or torch.dtype): the autocast dtype; only ``'bfloat16'`` (float16 on
            the CPU has too small a range without a loss scaler). Defaults to
            ``'bfloat16'``.
        **kwargs: ``OptimWrapper``'s arguments (optimizer, clip_grad,
            accumulative_counts).
    """

    def __init__(self, dtype: Union[str, torch.dtype] = 'bfloat16', **kwargs):
        super().__init__(**kwargs)
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ArgumentValueError(
                'CPUAmpOptimWrapper autocasts to bfloat16 only (float16 on the CPU would '
                f'need a loss scaler), got dtype={dtype!r}; use --amp-dtype bfloat16')
        self.cast_dtype = torch.bfloat16

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield


def amp_optim_wrapper_cfg(optim_wrapper: dict, dtype: str, cuda: bool,
                          scope: str = None) -> dict:
    """The ``optim_wrapper`` config for ``tools/train.py --amp --amp-dtype DTYPE``, the
    other settings kept: on CUDA MMEngine's ``AmpOptimWrapper`` (``float16`` with dynamic
    loss scaling, or ``bfloat16``), else :class:`CPUAmpOptimWrapper` (``bfloat16`` only).
    ``scope`` is the config's ``default_scope``: mmdet detectors have no CPU autocast
    (mmcv's CPU ``nms`` takes float32 only), a :class:`ConfigError` then.
    """
    if dtype not in ('float16', 'bfloat16'):
        raise ArgumentValueError(f"--amp-dtype must be 'float16' or 'bfloat16', got {dtype!r}")
    cfg = dict(optim_wrapper)
    if cuda:
        cfg.update(type='AmpOptimWrapper', dtype=dtype)
        cfg.setdefault('loss_scale', 'dynamic')
        return cfg
    if dtype != 'bfloat16':
        raise ArgumentValueError(
            '--amp on a machine without CUDA trains in bfloat16 (CPU autocast): float16 '
            'needs a GPU (its loss scaler is CUDA\'s). Use --amp-dtype bfloat16, or no '
            '--amp.')
    if scope == 'mmdet':
        from ...utils.config_checks import ConfigError
        raise ConfigError(
            '--amp on a machine without CUDA: mmdet detectors cannot train under CPU '
            "bfloat16 autocast (mmcv's CPU nms in the RPN takes float32 only). Train "
            'the detector without --amp on the CPU; --amp works on GPUs.')
    cfg.update(type='CPUAmpOptimWrapper', dtype='bfloat16')
    cfg.pop('loss_scale', None)
    return cfg
