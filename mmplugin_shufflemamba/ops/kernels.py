"""Guarded access to the optional kernels: the fused CUDA kernels (mamba-ssm,
causal-conv1d) and this package's compiled CPU extension.

The packages are imported lazily and only once. ``kernel='auto'`` uses them when they
import and the tensors are on CUDA, and the pure-PyTorch path otherwise;
``kernel='cuda'`` demands them and fails loudly when they cannot be used;
``kernel='torch'`` never uses them.
"""
from typing import Callable, Optional, Tuple

KERNEL_BACKENDS = ('auto', 'cuda', 'torch')


class ShapeError(ValueError, RuntimeError):
    """A tensor argument of an op has the wrong size, dtype or device.

    Both a ValueError (what the Python entry points always raised) and a RuntimeError
    (what the compiled kernels raise), so either ``except`` catches it.
    """

_cache = {}


def _try_import(name: str) -> Tuple[Optional[Callable], Optional[str]]:
    if name in _cache:
        return _cache[name]
    fn, err = None, None
    try:
        if name == 'selective_scan_fn':
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as fn
        elif name == 'causal_conv1d_fn':
            from causal_conv1d import causal_conv1d_fn as fn
        else:  # pragma: no cover - internal misuse
            raise KeyError(name)
    except Exception as e:  # ImportError, missing compiled module, CUDA errors
        fn, err = None, f'{type(e).__name__}: {e}'
    _cache[name] = (fn, err)
    return fn, err


_INSTALL_HINT = {
    'selective_scan_fn': 'pip install mamba-ssm (needs a CUDA toolchain and GPU)',
    'causal_conv1d_fn': 'pip install causal-conv1d (needs a CUDA toolchain and GPU)',
}


def cpu_extension():
    """The compiled CPU kernels (``mmplugin_shufflemamba._ext``, built by setup.py),
    or None when the package was installed without them."""
    try:
        from .. import _ext
    except ImportError:
        return None
    return _ext


def cpu_paths():
    """The compiled CPU kernels' code paths: ``[(name, built, supported by this CPU)]``
    for 'generic', 'avx2', 'avx512' (empty without the extension)."""
    ext = cpu_extension()
    return [] if ext is None else [tuple(p) for p in ext.cpu_paths()]


def get_cpu_path() -> str:
    """The code path the compiled CPU kernels use (chosen at the first call from the
    CPU's features, or by ``SHUFFLEMAMBA_CPU_ISA``)."""
    ext = cpu_extension()
    if ext is None:
        raise RuntimeError('the compiled CPU extension is not built')
    return ext.get_cpu_path()


def set_cpu_path(name: str) -> str:
    """Use code path ``name`` ('auto', 'generic', 'avx2' or 'avx512') of the compiled
    CPU kernels from now on; returns the path chosen. A path this CPU cannot run is a
    RuntimeError (never an illegal instruction)."""
    ext = cpu_extension()
    if ext is None:
        raise RuntimeError('the compiled CPU extension is not built')
    return ext.set_cpu_path(name)


def check_kernel_backend(kernel: str) -> str:
    """Validate a ``kernel`` argument and return it."""
    if kernel not in KERNEL_BACKENDS:
        raise ValueError(f'kernel must be one of {KERNEL_BACKENDS}, got {kernel!r}.')
    return kernel


def get_cuda_kernel(name: str, kernel: str, is_cuda: bool) -> Optional[Callable]:
    """Return the fused function to use, or ``None`` for the PyTorch path.

    Args:
        name (str): 'selective_scan_fn' or 'causal_conv1d_fn'.
        kernel (str): 'auto', 'cuda' or 'torch'.
        is_cuda (bool): whether the input tensors live on a CUDA device.
    """
    check_kernel_backend(kernel)
    if kernel == 'torch':
        return None
    fn, err = _try_import(name)
    if kernel == 'cuda':
        if not is_cuda:
            raise RuntimeError(
                f"kernel='cuda' was requested for {name}, but the tensors are on the "
                "CPU. Move the model and inputs to a GPU, or use kernel='auto' / "
                "'torch' for the pure-PyTorch path.")
        if fn is None:
            raise RuntimeError(
                f"kernel='cuda' was requested but the fused {name} cannot be imported "
                f'({err}). Install it with `{_INSTALL_HINT[name]}` or '
                "`pip install mmplugin_shufflemamba[cuda]`, or use kernel='auto' / "
                "'torch' for the pure-PyTorch path.")
        return fn
    return fn if is_cuda else None
