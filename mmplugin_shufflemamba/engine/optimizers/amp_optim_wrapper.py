"""Mixed precision on the CPU: bfloat16 autocast.

MMEngine 0.10's ``AmpOptimWrapper`` refuses machines without a GPU (and its loss scaler
is CUDA's). bfloat16 has float32's exponent range, so it needs no loss scaling: this
wrapper only runs the forward pass (and thus the backward's matching casts) under
``torch.autocast('cpu', dtype=torch.bfloat16)``; parameters, gradients and the
optimizer stay float32, and its state dict is the plain ``OptimWrapper``'s (resuming
works across AMP on and off). The ShuffleMamba ops compute the selective scan in
float32 whatever the autocast (see ``mmplugin_shufflemamba.ops``).

``tools/train.py --amp`` uses it on machines without CUDA; on GPUs it uses MMEngine's
``AmpOptimWrapper`` (float16 with dynamic loss scaling, or bfloat16).
"""
from contextlib import contextmanager
from typing import Union

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


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
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, None) if dtype in ('bfloat16', 'float16') \
                else None
        if dtype != torch.bfloat16:
            raise ValueError(
                'CPUAmpOptimWrapper autocasts to bfloat16 only (float16 on the CPU would '
                f'need a loss scaler), got dtype={dtype!r}; use --amp-dtype bfloat16')
        self.cast_dtype = dtype

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model):
            with torch.autocast(device_type='cpu', dtype=self.cast_dtype):
                yield


def amp_optim_wrapper_cfg(optim_wrapper: dict, dtype: str, cuda: bool) -> dict:
    """The ``optim_wrapper`` config for ``tools/train.py --amp --amp-dtype DTYPE``.

    On CUDA: MMEngine's ``AmpOptimWrapper`` (``float16`` with dynamic loss scaling, or
    ``bfloat16``). Without CUDA: :class:`CPUAmpOptimWrapper` (``bfloat16`` only; a clear
    error for ``float16``). Keeps the other settings (optimizer, constructor, clip_grad,
    paramwise_cfg).
    """
    if dtype not in ('float16', 'bfloat16'):
        raise ValueError(f"--amp-dtype must be 'float16' or 'bfloat16', got {dtype!r}")
    cfg = dict(optim_wrapper)
    if cuda:
        cfg['type'] = 'AmpOptimWrapper'
        cfg['dtype'] = dtype
        cfg.setdefault('loss_scale', 'dynamic')
        return cfg
    if dtype != 'bfloat16':
        raise ValueError(
            '--amp on a machine without CUDA trains in bfloat16 (CPU autocast): float16 '
            'needs a GPU (its loss scaler is CUDA\'s). Use --amp-dtype bfloat16, or no '
            '--amp.')
    cfg['type'] = 'CPUAmpOptimWrapper'
    cfg['dtype'] = 'bfloat16'
    cfg.pop('loss_scale', None)
    return cfg
