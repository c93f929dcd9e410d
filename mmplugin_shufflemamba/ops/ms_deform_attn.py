"""Multi-scale deformable attention sampling (the core of mmcv's
``MultiScaleDeformableAttention``) with a compiled CPU kernel.

For every batch b, query q, head h::

    out[b, q, h * D:(h + 1) * D] = sum_(l, p) attention_weights[b, q, h, l, p]
        * bilinear(value_l[b, :, h], sampling_locations[b, q, h, l, p])

where ``value_l`` is level l of ``value`` (its ``h_l * w_l`` keys, row-major), sampled
like ``F.grid_sample(..., mode='bilinear', padding_mode='zeros', align_corners=False)``
at ``2 * loc - 1`` ((0, 0): the level's top-left corner, (1, 1) its bottom-right one).
:func:`ms_deform_attn_ref` is mmcv's ``multi_scale_deformable_attn_pytorch``;
:func:`ms_deform_attn_cpu` the compiled kernel (``csrc/ms_deform_attn_cpu.cpp``, NaN and
inf where the reference has them); :func:`ms_deform_attn` dispatches between the two
(CUDA tensors: the reference; mmcv's CUDA kernel is used by the attention module
itself). See docs/kernels_and_performance.md#deformable-attention-on-the-cpu.
"""
import torch

from ..errors import ArgumentValueError
from .kernels import (_INSTALL, ShapeError, _cpu_extension_error, cpu_extension,
                      kernel_dtype, report_fallback, require_cpu_extension)

__all__ = ['ms_deform_attn', 'ms_deform_attn_cpu', 'ms_deform_attn_ref', 'cpu_sampling',
           'has_ms_deform_attn_cpu', 'has_ms_deform_attn_mmcv_cuda',
           'ms_deform_attn_backend']

_mmcv_cuda_probe = {}


def has_ms_deform_attn_cpu() -> bool:
    """Whether the compiled CPU kernel is available (the extension is built and has it)."""
    ext = cpu_extension()
    return ext is not None and hasattr(ext, 'ms_deform_attn_fwd')


def has_ms_deform_attn_mmcv_cuda(device=None):
    """Whether mmcv's compiled CUDA deformable attention runs on ``device``:
    ``(True, None)`` or ``(False, reason)``, probed once per device with a tiny call
    (mmcv built without ``FORCE_CUDA`` or a CPU-only wheel otherwise fails deep in the
    forward: "implementation for device cuda:0 not found")."""
    if not torch.cuda.is_available():
        return False, 'CUDA is not available'
    device = torch.device('cuda', torch.cuda.current_device()) if device is None \
        else torch.device(device)
    key = str(device)
    if key not in _mmcv_cuda_probe:
        try:
            from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
            value = torch.zeros(1, 4, 1, 2, device=device)
            shapes = torch.tensor([[2, 2]], dtype=torch.long, device=device)
            start = torch.zeros(1, dtype=torch.long, device=device)
            locs = torch.full((1, 1, 1, 1, 1, 2), 0.5, device=device)
            weights = torch.ones(1, 1, 1, 1, 1, device=device)
            MultiScaleDeformableAttnFunction.apply(value, shapes, start, locs, weights, 64)
            _mmcv_cuda_probe[key] = (True, None)
        except Exception as e:  # mmcv without CUDA ops: RuntimeError "... not found"
            _mmcv_cuda_probe[key] = (False, f'{type(e).__name__}: {e}'.strip())
    return _mmcv_cuda_probe[key]


def ms_deform_attn_backend(device='cpu') -> str:
    """Which sampling the adapter's deformable attention runs on ``device``."""
    if str(device).startswith('cuda'):
        ok, err = has_ms_deform_attn_mmcv_cuda()
        return ("mmcv's CUDA kernel" if ok else
                f"mmcv's PyTorch path (no CUDA ops in mmcv: {err}; install: "
                f"{_INSTALL['ms_deform_attn_cuda']})")
    return ('compiled CPU kernel' if has_ms_deform_attn_cpu() else
            "mmcv's PyTorch path (compiled CPU kernel not built)")


def check_ms_deform_attn_args(value, spatial_shapes, sampling_locations, attention_weights,
                              fn: str = 'ms_deform_attn') -> None:
    """Dimensions, sizes and devices of the arguments; a :class:`ShapeError` naming the
    argument, not an error deep inside grid_sample or the kernel."""
    for name, t in (('value', value), ('spatial_shapes', spatial_shapes),
                    ('sampling_locations', sampling_locations),
                    ('attention_weights', attention_weights)):
        if not isinstance(t, torch.Tensor):
            raise ShapeError(f'{fn}: {name} must be a tensor, got {type(t).__name__}')
        if t.device != value.device:
            raise ShapeError(f'{fn}: {name} is on {t.device}, value on {value.device}')
        if name != 'spatial_shapes' and not t.is_floating_point():
            raise ShapeError(f'{fn}: {name} must be a floating-point tensor, got {t.dtype}')
    if value.dim() != 4:
        raise ShapeError(f'{fn}: value must be (batch, num_keys, num_heads, head_dims), got '
                         f'shape {tuple(value.shape)}')
    if (spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2
            or spatial_shapes.shape[0] < 1 or spatial_shapes.is_floating_point()):
        raise ShapeError(f'{fn}: spatial_shapes must be an integer (num_levels, 2) tensor '
                         f'of (h, w), got {spatial_shapes.dtype} {tuple(spatial_shapes.shape)}')
    bs, num_keys, num_heads, _ = value.shape
    levels = spatial_shapes.shape[0]
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ShapeError(f'{fn}: sampling_locations must be (batch, num_queries, num_heads, '
                         f'num_levels, num_points, 2), got {tuple(sampling_locations.shape)}')
    nq, npts = sampling_locations.shape[1], sampling_locations.shape[4]
    want = (bs, nq, num_heads, levels, npts, 2)
    if tuple(sampling_locations.shape) != want:
        raise ShapeError(f'{fn}: sampling_locations must have shape {want} (batch and heads '
                         'of value, levels of spatial_shapes), got '
                         f'{tuple(sampling_locations.shape)}')
    if tuple(attention_weights.shape) != want[:5]:
        raise ShapeError(f'{fn}: attention_weights must have shape {want[:5]}, got '
                         f'{tuple(attention_weights.shape)}')
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    if min(min(hw) for hw in spatial_shapes.tolist()) <= 0:
        raise ShapeError(f'{fn}: spatial_shapes must be positive, got '
                         f'{spatial_shapes.tolist()}')
    if sum(sizes) != num_keys:
        raise ShapeError(f'{fn}: value has {num_keys} keys but spatial_shapes '
                         f'{spatial_shapes.tolist()} add up to sum(h * w) = {sum(sizes)}')


def ms_deform_attn_ref(value: torch.Tensor, spatial_shapes: torch.Tensor,
                       sampling_locations: torch.Tensor,
                       attention_weights: torch.Tensor) -> torch.Tensor:
    """mmcv's ``multi_scale_deformable_attn_pytorch`` (the reference).

    Args:
        value (Tensor): (B, num_keys, H, D), levels concatenated.
        spatial_shapes (Tensor): (L, 2) integer (h, w) per level.
        sampling_locations (Tensor): (B, Q, H, L, P, 2) as (x, y), 0..1 spans a level.
        attention_weights (Tensor): (B, Q, H, L, P).

    Returns:
        Tensor: (B, Q, H * D).
    """
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    check_ms_deform_attn_args(value, spatial_shapes, sampling_locations, attention_weights,
                              'ms_deform_attn_ref')
    return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations,
                                               attention_weights)


class _MSDeformAttnCPU(torch.autograd.Function):

    @staticmethod
    def forward(ctx, value, spatial_shapes, sampling_locations, attention_weights):
        ct = kernel_dtype(value)
        v, loc, attn = (t.to(ct).contiguous()
                        for t in (value, sampling_locations, attention_weights))
        shapes = spatial_shapes.to(torch.long).contiguous()
        ctx.save_for_backward(v, shapes, loc, attn)
        ctx.dtypes = (value.dtype, sampling_locations.dtype, attention_weights.dtype)
        return cpu_extension().ms_deform_attn_fwd(v, shapes, loc, attn).to(value.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        v, shapes, loc, attn = ctx.saved_tensors
        gv, gloc, gattn = cpu_extension().ms_deform_attn_bwd(
            v, shapes, loc, attn, grad_out.to(v.dtype).contiguous())
        return (gv.to(ctx.dtypes[0]), None, gloc.to(ctx.dtypes[1]),
                gattn.to(ctx.dtypes[2]))


def ms_deform_attn_cpu(value: torch.Tensor, spatial_shapes: torch.Tensor,
                       sampling_locations: torch.Tensor,
                       attention_weights: torch.Tensor) -> torch.Tensor:
    """The compiled CPU kernel (same arguments and result as :func:`ms_deform_attn_ref`).

    Inputs of any layout are made contiguous; float16 / bfloat16 compute in float32 and
    the result has ``value.dtype``. CPU tensors only.
    """
    if not has_ms_deform_attn_cpu():
        require_cpu_extension('ms_deform_attn_cpu (the compiled deformable attention kernel)',
                              instead='ms_deform_attn_ref')
        raise RuntimeError('the deformable attention kernel is not built in the compiled '
                           'CPU extension (an older build): reinstall with '
                           f"`{_INSTALL['cpu_extension']}` or use ms_deform_attn_ref.")
    if isinstance(value, torch.Tensor) and value.device.type != 'cpu':
        raise ShapeError(f'ms_deform_attn_cpu needs CPU tensors, got value on {value.device}')
    check_ms_deform_attn_args(value, spatial_shapes, sampling_locations, attention_weights,
                              'ms_deform_attn_cpu')
    with torch.autocast(device_type='cpu', enabled=False):
        return _MSDeformAttnCPU.apply(value, spatial_shapes, sampling_locations,
                                      attention_weights)


def _checked(kernel: str, setting: str = 'kernel') -> str:
    if kernel not in ('auto', 'torch'):
        raise ArgumentValueError(
            f"{setting} must be 'auto' or 'torch', got {kernel!r} (CUDA tensors sample "
            "with mmcv's CUDA kernel inside the adapter's MSDeformAttn; this choice is "
            "between the compiled CPU kernel and mmcv's PyTorch path)")
    return kernel


def cpu_sampling(kernel: str = 'auto', setting: str = 'kernel'):
    """The sampling function for CPU tensors: :func:`ms_deform_attn_cpu` under 'auto'
    when it is built, else None (mmcv's PyTorch path). Under 'auto' a missing kernel is
    the once-only fallback report of :mod:`.kernels` (an error with
    ``SHUFFLEMAMBA_STRICT_KERNELS=1``); 'torch' chooses the PyTorch path silently.
    Another choice is refused, naming ``setting`` (where the caller read it)."""
    if _checked(kernel, setting) == 'torch':
        return None
    if has_ms_deform_attn_cpu():
        return ms_deform_attn_cpu
    report_fallback('ms_deform_attn_cpu', _cpu_extension_error() if cpu_extension() is None
                    else 'the compiled extension was built without it: an older build')
    return None


def ms_deform_attn(value: torch.Tensor, spatial_shapes: torch.Tensor,
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                   kernel: str = 'auto') -> torch.Tensor:
    """Dispatch: CPU tensors to :func:`cpu_sampling` (the compiled kernel under
    ``kernel='auto'``, reported when it is missing), everything else to mmcv's PyTorch
    path (:func:`ms_deform_attn_ref`)."""
    if value.device.type == 'cpu':
        sample = cpu_sampling(kernel) or ms_deform_attn_ref
    else:
        sample = _checked(kernel) and ms_deform_attn_ref
    return sample(value, spatial_shapes, sampling_locations, attention_weights)
