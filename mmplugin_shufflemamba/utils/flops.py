"""FLOPs of ShuffleMamba models with MMEngine's counter (``FlopAnalyzer``, one
multiply-add = one flop, elementwise ops not counted), plus handles for the ops it sees
only as opaque ``prim::PythonOp`` nodes or has no handle for: ``BiMambaInnerFn`` (per
direction the causal conv, the ``x_proj`` + ``dt_proj`` linears and the scan, and the
shared ``out_proj``), the selective scan, the depthwise causal convolution, multi-scale
deformable attention (mmcv's CUDA function, this package's CPU kernel) and
``aten::rms_norm`` (4 per element with a weight, 3 without).

:func:`count_flops` reports MMEngine's count (``mmengine``), the count with these handles
(``total``) and the paper's convention (``paper``: MMEngine's count plus the mixers'
``out_proj``, less mmcv's CPU ``grid_sampler``); docs/model_zoo.md#flops explains them.
"""
import copy
import functools
import math
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..errors import ArgumentValueError

SCAN_OPS = ('prim::PythonOp._SelectiveScanCPU', 'prim::PythonOp._SelectiveScanTorch',
            'prim::PythonOp.SelectiveScanFn')
CAUSAL_CONV_OPS = ('prim::PythonOp._CausalConv1dCPU', 'prim::PythonOp.CausalConv1dFn')
DEFORM_ATTN_OPS = ('prim::PythonOp.MultiScaleDeformableAttnFunction', )
#: This package's fused CPU deformable attention (ops/ms_deform_attn.py).
FUSED_DEFORM_ATTN_OPS = ('prim::PythonOp._MSDeformAttnCPU', )
RMS_NORM_OPS = ('aten::rms_norm', )
BIMAMBA_OPS = ('prim::PythonOp.BiMambaInnerFn', )
HANDLED = ('selective_scan', 'causal_conv1d', 'deform_attn', 'rms_norm', 'bimamba_proj',
           'bimamba_out_proj')


# ------------------------------------------------------------------------- formulas
def selective_scan_flops(batch: int, dim: int, seqlen: int, d_state: int,
                         with_d: bool = True, with_z: bool = True) -> int:
    """Flops of one selective scan over (batch, dim, seqlen) with ``d_state`` states: 4
    per state element (``dt A``, ``dt u B``, the recurrence and the read-out), 1 per
    channel element for each of ``dt u``, ``D`` and the ``silu(z)`` gate."""
    return batch * dim * seqlen * (4 * d_state + 1 + int(with_d) + int(with_z))


def causal_conv1d_flops(batch: int, dim: int, seqlen: int, width: int) -> int:
    """Flops of a depthwise causal convolution of ``width`` taps."""
    return batch * dim * seqlen * width


def deform_attn_flops(batch: int, num_queries: int, num_heads: int, head_dims: int,
                      num_levels: int, num_points: int) -> int:
    """Flops of the sampling of multi-scale deformable attention (bilinear: 4 per
    sampled value, what MMEngine counts for mmcv's PyTorch path; the weighted sum over
    the points is elementwise, not counted)."""
    return 4 * batch * num_queries * num_heads * head_dims * num_levels * num_points


# ------------------------------------------------------------------------- handles
def _shape(value) -> Optional[List[int]]:
    from mmengine.analysis.jit_handles import get_shape
    if not isinstance(value, torch._C.Value):
        return None
    return get_shape(value)


def _python_op_args(inputs: List[Any], outputs: List[Any]) -> List[Any]:
    """All arguments of a ``prim::PythonOp`` in call order: tensors as jit values,
    the rest (``None`` for an absent optional tensor, flags) as Python objects. The
    node's calling convention (``cconv``: 'd' tensor, 'c' scalar) interleaves them."""
    node = outputs[0].node()
    try:
        cconv, scalars = node.cconv(), list(node.scalar_args())
    except Exception:  # pragma: no cover - not a PythonOp
        return list(inputs)
    tensors, scalars = iter(inputs), iter(scalars)
    return [next(tensors) if c == 'd' else next(scalars) for c in cconv]


def selective_scan_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Handle for ``selective_scan(u, delta, A, B, C, D, z, delta_bias, ...)``."""
    args = _python_op_args(inputs, outputs)
    batch, dim, seqlen = _shape(args[0])
    d_state = _shape(args[2])[1]
    with_d = len(args) > 5 and _shape(args[5]) is not None
    with_z = len(args) > 6 and _shape(args[6]) is not None
    return Counter(selective_scan=selective_scan_flops(batch, dim, seqlen, d_state,
                                                       with_d, with_z))


def causal_conv1d_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Handle for ``causal_conv1d(x (B, D, L), weight (D, K), ...)``."""
    args = _python_op_args(inputs, outputs)
    batch, dim, seqlen = _shape(args[0])
    width = _shape(args[1])[-1]
    return Counter(causal_conv1d=causal_conv1d_flops(batch, dim, seqlen, width))


def bimamba_inner_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Handle for ``BiMambaInnerFn(xz (B, 2 d_inner, L), 7 tensors per direction (conv
    weight, conv bias, x_proj weight, dt_proj weight, dt bias, A, D), out_proj weight
    (D, d_inner), backend)``."""
    args = _python_op_args(inputs, outputs)
    batch, two_d_inner, seqlen = _shape(args[0])
    d_inner, tokens = two_d_inner // 2, batch * seqlen
    counts = Counter()
    for d in range(2):
        conv_w, _, x_w, dt_w, _, A, _ = args[1 + 7 * d:8 + 7 * d]
        width, (rank_2n, _), (_, rank), d_state = (_shape(conv_w)[-1], _shape(x_w),
                                                   _shape(dt_w), _shape(A)[1])
        counts['causal_conv1d'] += causal_conv1d_flops(batch, d_inner, seqlen, width)
        counts['selective_scan'] += selective_scan_flops(batch, d_inner, seqlen, d_state)
        counts['bimamba_proj'] += tokens * (d_inner * rank_2n + rank * d_inner)
    out_dims = _shape(args[15])[0]
    counts['bimamba_out_proj'] = tokens * d_inner * out_dims
    return counts


def _deform_attn_flop_jit(locations_arg: int):
    """Handle for a deformable attention function ``(value (bs, keys, heads, head_dims),
    ..., sampling_locations (bs, queries, heads, levels, points, 2), ...)`` whose
    sampling locations are argument ``locations_arg`` (3 in mmcv's
    ``MultiScaleDeformableAttnFunction``, 2 in this package's ``_MSDeformAttnCPU``)."""

    def handle(inputs: List[Any], outputs: List[Any]) -> Counter:
        args = _python_op_args(inputs, outputs)
        bs, _, heads, head_dims = _shape(args[0])
        _, queries, _, levels, points, _ = _shape(args[locations_arg])
        return Counter(deform_attn=deform_attn_flops(bs, queries, heads, head_dims,
                                                     levels, points))

    return handle


def rms_norm_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Handle for ``aten::rms_norm(input, normalized_shape, weight, eps)``."""
    with_weight = len(inputs) > 2 and _shape(inputs[2]) is not None
    return Counter(rms_norm=math.prod(_shape(inputs[0])) * (4 if with_weight else 3))


def extra_flop_handles() -> Dict[str, Any]:
    """``FlopAnalyzer.set_op_handle`` keyword arguments for the ops above."""
    table = ((SCAN_OPS, selective_scan_flop_jit), (CAUSAL_CONV_OPS, causal_conv1d_flop_jit),
             (DEFORM_ATTN_OPS, _deform_attn_flop_jit(3)),
             (FUSED_DEFORM_ATTN_OPS, _deform_attn_flop_jit(2)),
             (RMS_NORM_OPS, rms_norm_flop_jit), (BIMAMBA_OPS, bimamba_inner_flop_jit))
    return {op: handle for ops, handle in table for op in ops}


# ------------------------------------------------------------------------- counting
def _msda_sampling_on_cpu(model: nn.Module, by_module: Dict[str, Counter]) -> int:
    """The ``grid_sampler`` flops of mmcv's deformable attention on CPU, which MMEngine
    counts but the official runs' CUDA kernel hides from the tracer."""
    try:
        from mmcv.ops import MultiScaleDeformableAttention
    except ImportError:  # pragma: no cover - mmcv without ops
        return 0
    return sum(by_module.get(name, Counter()).get('grid_sampler', 0)
               for name, m in model.named_modules()
               if isinstance(m, MultiScaleDeformableAttention))


def count_flops(model: nn.Module, inputs: Tuple[Any, ...]) -> Dict[str, Any]:
    """Count the flops of ``model(*inputs)`` (one traced forward, eval mode as given).

    Returns:
        dict: ``total`` (with the handles of this module), ``mmengine`` (MMEngine's
        own handles only), ``paper`` (the paper's convention, see the module
        docstring), ``by_operator`` (Counter, with the handles), ``unsupported``
        (Counter of operators nothing counted) and ``params``.
    """
    from mmengine.analysis import FlopAnalyzer
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**extra_flop_handles())
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    total = int(analyzer.total())
    by_operator = Counter(analyzer.by_operator())
    mmengine = total - sum(by_operator.get(k, 0) for k in HANDLED)
    paper = mmengine + by_operator.get('bimamba_out_proj', 0) - _msda_sampling_on_cpu(
        model, analyzer.by_module_and_operator())
    return dict(total=total, mmengine=int(mmengine), paper=int(paper),
                by_operator=by_operator, unsupported=Counter(analyzer.unsupported_ops()),
                params=sum(p.numel() for p in model.parameters()))


def _framework(cfg) -> str:
    scope = cfg.get('default_scope', None)
    if scope in ('mmseg', 'mmdet', 'mmpretrain'):
        return scope
    by_type = dict(MaskRCNN='mmdet', FasterRCNN='mmdet', ImageClassifier='mmpretrain')
    return by_type.get(cfg.model.get('type'), 'mmseg')


def build_model_for_flops(cfg, device: str = 'cpu') -> Tuple[nn.Module, str]:
    """Build ``cfg.model`` (SyncBN as BN, no weights loaded) in its framework's scope,
    in eval mode on ``device``. Returns (model, 'mmseg' | 'mmdet' | 'mmpretrain')."""
    from mmengine.registry import MODELS, DefaultScope

    from .runtime import _replace_syncbn
    scope = _framework(cfg)
    model_cfg = copy.deepcopy(cfg.model)
    _replace_syncbn(model_cfg)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(model_cfg)  # (MMEngine imports the scope's modules)
    return model.to(device).eval(), scope


def model_complexity(cfg, shape: Sequence[int] = (512, 2048),
                     device: str = 'cpu') -> Dict[str, Any]:
    """Parameters and flops of a config's whole model on one (1, 3, H, W) image.

    Segmentors run their ``tensor`` forward (backbone + decode head; the auxiliary
    head is not run in inference, but its parameters are counted, as the paper's
    parameter counts do). Detectors run their ``tensor`` forward with one data
    sample of that shape (backbone, neck, RPN and RoI heads); image classifiers
    (mmpretrain) theirs (backbone, neck, head).

    Args:
        cfg (Config): a config (``Config.fromfile``).
        shape (tuple): (H, W). Defaults to (512, 2048), the paper's ADE20K shape.
        device (str): Defaults to 'cpu'.
    """
    H, W = (int(shape[0]), int(shape[0])) if len(shape) == 1 else map(int, shape)
    model, scope = build_model_for_flops(cfg, device)
    check = getattr(getattr(model, 'backbone', None), 'check_input', None)
    if check is not None:  # its refusal, not a trace through the flop counter
        try:
            check(torch.empty(1, 3, H, W, device='meta'))
        except ValueError as e:
            raise ArgumentValueError(f'shape ({H}, {W}): {e}') from None
    x = torch.rand(1, 3, H, W, device=device)
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        sample = DetDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W),
                                             pad_shape=(H, W), batch_input_shape=(H, W),
                                             scale_factor=(1.0, 1.0)))
        model.forward = functools.partial(model.forward, data_samples=[sample],
                                          mode='tensor')
    with torch.no_grad():
        result = count_flops(model, (x, ))
    return dict(result, shape=(H, W), framework=scope)
