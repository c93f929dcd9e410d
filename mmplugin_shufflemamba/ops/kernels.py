"""Guarded access to the optional kernels: the fused CUDA kernels (mamba-ssm's
``selective_scan_cuda``, causal-conv1d) and this package's compiled CPU extension.

The scan and the conv take ``kernel``: ``'auto'`` (the fused CUDA kernels for CUDA
tensors when they import, the compiled CPU kernels for CPU tensors when built, else the
pure-PyTorch path; a fallback that costs speed is one :class:`KernelFallbackWarning` per
process, an error with ``SHUFFLEMAMBA_STRICT_KERNELS=1``), ``'cuda'`` (the fused kernels,
or an error saying why not) or ``'torch'`` (the pure-PyTorch path, silently). Deformable
attention takes 'auto' and 'torch' (on CUDA the adapter's module runs mmcv's kernel). See
docs/kernels_and_performance.md#kernels (why ``selective_scan_cuda`` is imported
directly rather than ``mamba_ssm.ops``).
"""
import contextlib
import os
import os.path as osp
import sys
import warnings
from types import SimpleNamespace
from typing import Dict, Optional, Tuple

import torch

from ..errors import ArgumentValueError

KERNEL_BACKENDS = ('auto', 'cuda', 'torch')

# Environment switch: a fallback that costs speed is an error instead of a warning.
STRICT_ENV = 'SHUFFLEMAMBA_STRICT_KERNELS'


class ShapeError(ValueError):
    """A tensor argument of an op has the wrong size, dtype or device; the compiled
    kernels' own argument checks raise ``ValueError`` too."""


def kernel_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype the kernels compute in for ``t``: float64 stays float64, else float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def check_tensors(fn: str, optional: Tuple[str, ...] = (), **tensors) -> None:
    """Each argument a floating-point tensor on the first one's device (None allowed for
    the names in ``optional``), else a :class:`ShapeError` naming it."""
    ref_name, ref = next(iter(tensors.items()))
    for name, t in tensors.items():
        if t is None and name in optional:
            continue
        if not isinstance(t, torch.Tensor):
            raise ShapeError(f'{fn}: {name} must be a tensor, got {type(t).__name__}')
        if not t.is_floating_point():
            raise ShapeError(f'{fn}: {name} must be a floating-point tensor, got {t.dtype}')
        if t.device != ref.device:
            raise ShapeError(f'{fn}: {name} is on {t.device}, {ref_name} on {ref.device}')


class KernelFallbackWarning(UserWarning):
    """An op runs on a slower path because a fused or compiled kernel is missing."""


_INSTALL = {
    'selective_scan_cuda': ('WITH_MAMBA_KERNELS=1 bash tools/setup_env.sh (builds '
                            'mamba-ssm for this GPU; or pip install mamba-ssm '
                            '--no-build-isolation)'),
    'causal_conv1d': ('WITH_MAMBA_KERNELS=1 bash tools/setup_env.sh (or pip install '
                      'causal-conv1d --no-build-isolation)'),
    'cpu_extension': ('pip install --no-build-isolation . in the checkout (-e . for an '
                      'editable install; needs torch installed first and a C++ compiler)'),
    'ms_deform_attn_cuda': ('bash tools/setup_env.sh on the GPU node (builds mmcv with '
                            'its CUDA ops, FORCE_CUDA=1)'),
}
_INSTALL['ms_deform_attn_cpu'] = _INSTALL['cpu_extension']
_COST = {
    'selective_scan_cuda': ('the PyTorch scan loops over time steps: a ShuffleMamba-B '
                            'training step at 512x512 took 27x longer (2.98 s vs 0.111 s '
                            'on an H200)'),
    'causal_conv1d': ('the depthwise causal conv runs as several PyTorch ops per block '
                      '(a few percent of a training step)'),
    'cpu_extension': ('the PyTorch scan loops over time steps: several times slower than '
                      'the compiled CPU kernels'),
    'ms_deform_attn_cpu': ('deformable attention samples each level with grid_sample: '
                           "about 6x slower forward + backward at the adapter's shape"),
    'ms_deform_attn_cuda': ("the adapter's deformable attention samples with grid_sample "
                            'per level (slower, and more memory in training)'),
}
_NAMES = {
    'selective_scan_cuda': "mamba-ssm's fused selective scan (selective_scan_cuda)",
    'causal_conv1d': "causal-conv1d's fused kernel",
    'cpu_extension': 'the extension of compiled CPU kernels (mmplugin_shufflemamba._ext)',
    'ms_deform_attn_cuda': "mmcv's CUDA deformable attention (mmcv built with CUDA ops)",
    'ms_deform_attn_cpu': 'the compiled CPU deformable attention kernel (in '
                          'mmplugin_shufflemamba._ext)',
}
#: how to choose the PyTorch path explicitly, where it is not ``kernel='torch'``
_CHOOSE_TORCH = {
    'ms_deform_attn_cpu': (", or set SHUFFLEMAMBA_MSDA_CPU=torch (MSDeformAttn.cpu_kernel="
                           "'torch'; kernel='torch' for ops.ms_deform_attn) to choose the "
                           'PyTorch path explicitly'),
    'ms_deform_attn_cuda': '',  # (mmcv's module has no other CUDA path to choose)
}

_cache: Dict[str, Tuple[Optional[object], Optional[str]]] = {}
_warned = set()


def _import_kernel(name: str) -> Tuple[Optional[object], Optional[str]]:
    """(module-like object, None) or (None, 'ErrorType: message'); imported once."""
    if name not in _cache:
        try:
            if name == 'selective_scan_cuda':
                import selective_scan_cuda as mod
            elif name == 'cpu_extension':
                from .. import _ext as mod
            elif name == 'causal_conv1d':
                from causal_conv1d.cpp_functions import (causal_conv1d_bwd_function,
                                                         causal_conv1d_fwd_function)
                mod = SimpleNamespace(fwd=causal_conv1d_fwd_function,
                                      bwd=causal_conv1d_bwd_function)
            else:  # pragma: no cover - internal misuse
                raise KeyError(name)
            _cache[name] = (mod, None)
        except Exception as e:  # ImportError, missing compiled module, CUDA errors
            _cache[name] = (None, f'{type(e).__name__}: {e}')
    return _cache[name]


def cpu_extension():
    """The compiled CPU kernels (``mmplugin_shufflemamba._ext``, built by setup.py),
    or None when the package was installed without them."""
    return _import_kernel('cpu_extension')[0]


def _cpu_extension_error() -> str:
    return _import_kernel('cpu_extension')[1] or 'not built'


def report_fallback(name: str, err: Optional[str]) -> None:
    """Say once per process that ``name`` is missing and what that costs; raise instead
    under ``SHUFFLEMAMBA_STRICT_KERNELS=1``."""
    msg = (f'{_NAMES[name]} is not available ({err}); falling back to the PyTorch path: '
           f'{_COST[name]}. Install it with `{_INSTALL[name]}`. Set {STRICT_ENV}=1 to make '
           'this an error' + _CHOOSE_TORCH.get(name, ", or pass kernel='torch' to choose "
                                               'the PyTorch path explicitly') + '.')
    if os.environ.get(STRICT_ENV, '0').strip().lower() not in ('', '0', 'false', 'no'):
        raise RuntimeError(f'{STRICT_ENV}=1: {msg}')
    if name not in _warned:
        _warned.add(name)
        warnings.warn(msg, KernelFallbackWarning, stacklevel=_caller_level())


#: the package's and torch's own files: a warning points past them, at the user's call
_INNER_FILES = (osp.dirname(osp.dirname(osp.abspath(__file__))),
                osp.dirname(osp.abspath(torch.__file__)))


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside this package and torch (a model's
    forward goes through ``nn.Module.__call__``), counted from our caller."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(_INNER_FILES):
        frame, level = frame.f_back, level + 1
    return level


def cpu_paths():
    """The compiled CPU kernels' code paths: ``[(name, built, supported by this CPU)]``
    for 'generic', 'avx2', 'avx512' (empty without the extension)."""
    ext = cpu_extension()
    return [] if ext is None else [tuple(p) for p in ext.cpu_paths()]


def require_cpu_extension(what: str = 'the compiled CPU extension',
                          instead: str = '') -> object:
    """The compiled CPU extension, or a RuntimeError naming ``what`` needs it, why it is
    missing and how to install it (``instead``: the alternative, e.g. "kernel='torch'")."""
    ext = cpu_extension()
    if ext is None:
        raise RuntimeError(
            f'{what} is not built (mmplugin_shufflemamba._ext: {_cpu_extension_error()}); '
            f"reinstall with `{_INSTALL['cpu_extension']}`"
            + (f' or use {instead}.' if instead else '.'))
    return ext


def get_cpu_path() -> str:
    """The code path the compiled CPU kernels use (chosen at the first call from the
    CPU's features, or by ``SHUFFLEMAMBA_CPU_ISA``)."""
    return require_cpu_extension().get_cpu_path()


def set_cpu_path(name: str) -> str:
    """Use code path ``name`` ('auto', 'generic', 'avx2' or 'avx512') of the compiled
    CPU kernels from now on; returns the path chosen. A path this CPU cannot run is a
    ValueError (never an illegal instruction)."""
    return require_cpu_extension().set_cpu_path(name)


def check_kernel_backend(kernel: str) -> str:
    """Validate a ``kernel`` argument and return it."""
    if kernel not in KERNEL_BACKENDS:
        raise ArgumentValueError(f'kernel must be one of {KERNEL_BACKENDS}, got {kernel!r}.')
    return kernel


def get_cuda_kernel(name: str, kernel: str, is_cuda: bool,
                    dtype: Optional[torch.dtype] = None):
    """The fused kernel ``name`` ('selective_scan_cuda' or 'causal_conv1d') to use, or
    None for the PyTorch path (with the once-only fallback report under 'auto'). The
    kernels take float32 / float16 / bfloat16: a float64 ``dtype`` runs the PyTorch path
    under 'auto' and is an error under 'cuda'."""
    if check_kernel_backend(kernel) == 'torch' or (kernel == 'auto' and not is_cuda):
        return None
    if dtype == torch.float64 and is_cuda:
        if kernel == 'cuda':
            raise RuntimeError(
                f"kernel='cuda' was requested for float64 tensors, but {_NAMES[name]} takes "
                "float32, float16 and bfloat16 only: use kernel='auto' (the PyTorch path "
                'computes float64) or cast the model to float32.')
        return None
    mod, err = _import_kernel(name)
    if not is_cuda:  # kernel='cuda'
        missing = '' if mod is not None else (
            f' (and it cannot be imported here either: {err}; install it on the GPU '
            f'machine with `{_INSTALL[name]}`)')
        raise RuntimeError(
            f"kernel='cuda' was requested for {_NAMES[name]}, but the tensors are on the "
            f"CPU{missing}. Move the model and inputs to a GPU, or use kernel='auto' / "
            "'torch'.")
    if mod is None:
        if kernel == 'cuda':
            raise RuntimeError(
                f"kernel='cuda' was requested but {_NAMES[name]} cannot be imported "
                f"({err}). Install it with `{_INSTALL[name]}`, or use kernel='auto' / "
                "'torch' for the PyTorch path.")
        report_fallback(name, err)
    return mod


def use_cpu_extension(kernel: str, is_cuda: bool) -> bool:
    """Whether CPU tensors go to the compiled CPU kernels (with the once-only fallback
    report under 'auto' when they are not built)."""
    if kernel != 'auto' or is_cuda:
        return False
    if cpu_extension() is None:
        report_fallback('cpu_extension', _cpu_extension_error())
        return False
    return True


def kernel_report(device: str = 'cuda') -> Dict[str, str]:
    """Which implementation each op runs for tensors on ``device`` ('cpu' or 'cuda')
    with ``kernel='auto'``: ``{op: description}``. Logged by the tools at start."""
    report = {}
    if str(device).startswith('cuda'):
        for op, name in (('selective_scan', 'selective_scan_cuda'),
                         ('causal_conv1d', 'causal_conv1d')):
            mod, err = _import_kernel(name)
            report[op] = (f'fused CUDA ({_NAMES[name]})' if mod is not None else
                          f'PyTorch fallback ({err}; install: {_INSTALL[name]})')
    else:
        ext = cpu_extension()
        report['selective_scan'] = report['causal_conv1d'] = (
            f'compiled CPU kernels, code path {ext.get_cpu_path()}' if ext is not None else
            f"PyTorch fallback ({_cpu_extension_error()}; install: {_INSTALL['cpu_extension']})")
    from .ms_deform_attn import ms_deform_attn_backend
    report['ms_deform_attn'] = ms_deform_attn_backend(device)
    return report


def autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """The dtype autocast runs ``device``'s matmuls in, or None where it is off (or
    where there is no autocast: the meta device, for shape inference)."""
    try:
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
    except RuntimeError:  # 'unknown device type for autocast'
        pass
    return None


def autocast_off(device: torch.device):
    """A context that turns autocast off for ``device`` (nothing where it is off)."""
    return torch.autocast(device_type=device.type, enabled=False) \
        if autocast_dtype(device) is not None else contextlib.nullcontext()
