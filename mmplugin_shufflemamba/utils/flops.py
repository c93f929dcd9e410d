"""FLOPs of ShuffleMamba models with MMEngine's counter (``FlopAnalyzer``), plus handles
for the operators it cannot see.

MMEngine traces the model with ``torch.jit`` and counts one fused multiply-add as one
flop for the operators it has handles for (linear, conv, matmul, einsum, norms, ...);
elementwise operators are not counted. Three operators of ShuffleMamba models appear
in the trace as opaque ``prim::PythonOp`` nodes (``torch.autograd.Function``\\ s), and
MMEngine counts nothing for them:

- the selective scan (``_SelectiveScanCPU`` / ``_SelectiveScanTorch`` here,
  ``SelectiveScanFn`` of mamba-ssm on CUDA): per state element ``dt * A``,
  ``dt * u * B``, the recurrence ``h = exp(dt A) h + dt u B`` (a multiply-add) and the
  read-out ``y += C h`` (a multiply-add): 4 flops; per channel element ``dt * u``, the
  ``D`` skip and the ``silu(z)`` gate: 1 each. ``exp``, ``softplus`` and ``silu``
  themselves are elementwise and not counted, as everywhere in MMEngine.
  :func:`selective_scan_flops`.
- the depthwise causal convolution (``_CausalConv1dCPU``, ``CausalConv1dFn`` of
  causal-conv1d): one multiply-add per tap, as MMEngine counts convolutions
  (:func:`causal_conv1d_flops`).
- mmcv's multi-scale deformable attention on CUDA (``MultiScaleDeformableAttnFunction``,
  the adapter) and this package's fused CPU kernel (``_MSDeformAttnCPU``): 4 per sampled
  value (bilinear interpolation), the figure MMEngine's ``grid_sampler`` handle gives
  mmcv's pure-PyTorch path (``SHUFFLEMAMBA_MSDA_CPU=torch``), so every path counts the
  same (:func:`deform_attn_flops`).

MMEngine has no handle for ``aten::rms_norm`` either (the RMSNorm of ShuffleMamba-B,
L1 and the Reg models): 4 per element with a weight, 3 without, one less than
MMEngine's LayerNorm figure (no mean, no bias).

:func:`count_flops` reports three totals:

- ``mmengine``: MMEngine's count without these handles (what
  ``get_model_complexity_info`` prints for this model);
- ``total``: with the handles (every multiply-add of the model);
- ``paper``: the convention of the paper's GFLOPs. The official code computes each
  mixer direction with mamba-ssm's fused ``mamba_inner_fn_no_out_proj`` (causal conv,
  ``x_proj``, ``dt_proj`` and the scan in one ``autograd.Function``), invisible to the
  tracer, and counted with MMEngine's analyzer at 512 x 2048: only ``in_proj``,
  ``out_proj``, the norms, the patch embedding and the heads are counted. Ours runs
  ``x_proj`` / ``dt_proj`` as plain linears, which MMEngine does count; ``paper``
  removes them (and a causal conv MMEngine saw as an ``aten`` convolution, and the
  ``grid_sampler`` of mmcv's deformable attention on CPU, a CUDA kernel there).
"""
import copy
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

SCAN_OPS = ('prim::PythonOp._SelectiveScanCPU', 'prim::PythonOp._SelectiveScanTorch',
            'prim::PythonOp.SelectiveScanFn')
CAUSAL_CONV_OPS = ('prim::PythonOp._CausalConv1dCPU', 'prim::PythonOp.CausalConv1dFn')
DEFORM_ATTN_OPS = ('prim::PythonOp.MultiScaleDeformableAttnFunction', )
#: This package's fused CPU deformable attention (ops/ms_deform_attn.py).
FUSED_DEFORM_ATTN_OPS = ('prim::PythonOp._MSDeformAttnCPU', )
RMS_NORM_OPS = ('aten::rms_norm', )
HANDLED = ('selective_scan', 'causal_conv1d', 'deform_attn', 'rms_norm')


# ------------------------------------------------------------------------- formulas
def selective_scan_flops(batch: int, dim: int, seqlen: int, d_state: int,
                         with_d: bool = True, with_z: bool = True) -> int:
    """Flops of one selective scan over (batch, dim, seqlen) with ``d_state`` states."""
    return batch * dim * seqlen * (4 * d_state + 1 + int(with_d) + int(with_z))


def causal_conv1d_flops(batch: int, dim: int, seqlen: int, width: int) -> int:
    """Flops of a depthwise causal convolution of ``width`` taps."""
    return batch * dim * seqlen * width


def deform_attn_flops(batch: int, num_queries: int, num_heads: int, head_dims: int,
                      num_levels: int, num_points: int) -> int:
    """Flops of the sampling of multi-scale deformable attention (bilinear: 4 per
    sampled value; the weighted sum over the points is elementwise, not counted)."""
    return 4 * batch * num_queries * num_heads * head_dims * num_levels * num_points


# ------------------------------------------------------------------------- handles
def _shape(value) -> Optional[List[int]]:
    from mmengine.analysis.jit_handles import get_shape
    if value is None or not isinstance(value, torch._C.Value):
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


def deform_attn_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Handle for mmcv's ``MultiScaleDeformableAttnFunction(value (bs, keys, heads,
    head_dims), shapes, level_start, sampling_locations (bs, queries, heads, levels,
    points, 2), attention_weights, im2col_step)``."""
    args = _python_op_args(inputs, outputs)
    bs, _, heads, head_dims = _shape(args[0])
    _, queries, _, levels, points, _ = _shape(args[3])
    return Counter(deform_attn=deform_attn_flops(bs, queries, heads, head_dims, levels,
                                                 points))


def fused_deform_attn_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Handle for this package's ``_MSDeformAttnCPU(value (bs, keys, heads, head_dims),
    shapes, sampling_locations (bs, queries, heads, levels, points, 2),
    attention_weights)``: the same count as mmcv's kernel."""
    args = _python_op_args(inputs, outputs)
    bs, _, heads, head_dims = _shape(args[0])
    _, queries, _, levels, points, _ = _shape(args[2])
    return Counter(deform_attn=deform_attn_flops(bs, queries, heads, head_dims, levels,
                                                 points))


def rms_norm_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Handle for ``aten::rms_norm(input, normalized_shape, weight, eps)``."""
    shape = _shape(inputs[0])
    numel = 1
    for s in shape:
        numel *= s
    with_weight = len(inputs) > 2 and _shape(inputs[2]) is not None
    return Counter(rms_norm=numel * (4 if with_weight else 3))


def extra_flop_handles() -> Dict[str, Any]:
    """``FlopAnalyzer.set_op_handle`` keyword arguments for the ops above."""
    handles = {}
    handles.update({k: selective_scan_flop_jit for k in SCAN_OPS})
    handles.update({k: causal_conv1d_flop_jit for k in CAUSAL_CONV_OPS})
    handles.update({k: deform_attn_flop_jit for k in DEFORM_ATTN_OPS})
    handles.update({k: fused_deform_attn_flop_jit for k in FUSED_DEFORM_ATTN_OPS})
    handles.update({k: rms_norm_flop_jit for k in RMS_NORM_OPS})
    return handles


# ------------------------------------------------------------------------- counting
def _hidden_in_official_trace(model: nn.Module, by_module: Dict[str, Counter]) -> int:
    """What the official code's fused kernels hide from the tracer but MMEngine counts
    here: each mixer direction's ``x_proj`` and ``dt_proj`` linears and the causal
    convolution when it ran as an ``aten`` convolution (no compiled kernel), and the
    ``grid_sampler`` calls of mmcv's deformable attention on CPU (a CUDA kernel in the
    official runs)."""
    from ..models.layers.bimamba import BiMambaMixer
    try:
        from mmcv.ops import MultiScaleDeformableAttention
    except ImportError:  # pragma: no cover - mmcv without ops
        MultiScaleDeformableAttention = ()
    hidden = 0
    for name, m in model.named_modules():
        if MultiScaleDeformableAttention and isinstance(m, MultiScaleDeformableAttention):
            hidden += by_module.get(name, Counter()).get('grid_sampler', 0)
            continue
        if not isinstance(m, BiMambaMixer):
            continue
        prefix = f'{name}.' if name else ''
        counts = by_module.get(name, Counter())
        out_proj = by_module.get(prefix + 'out_proj', Counter()).get('linear', 0)
        D, d_inner, R, N = m.embed_dims, m.d_inner, m.dt_rank, m.d_state
        if out_proj % (d_inner * D):
            raise RuntimeError(f'{name}.out_proj counted {out_proj} flops, not a multiple '
                               f'of {d_inner} x {D}: the mixer changed, update flops.py')
        tokens = out_proj // (d_inner * D)
        x_dt = 2 * tokens * (d_inner * (R + 2 * N) + R * d_inner)  # both directions
        expected = tokens * (D * 2 * d_inner + d_inner * D) + x_dt
        if counts.get('linear', 0) != expected:
            raise RuntimeError(
                f'{name}: linear flops {counts.get("linear", 0)} are not in_proj + x_proj '
                f'+ dt_proj + out_proj ({expected}) for {tokens} tokens: the mixer '
                'changed, update flops.py')
        hidden += x_dt + counts.get('conv', 0)
    return hidden


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
    paper = mmengine - _hidden_in_official_trace(model, analyzer.by_module_and_operator())
    return dict(total=total, mmengine=int(mmengine), paper=int(paper),
                by_operator=by_operator, unsupported=Counter(analyzer.unsupported_ops()),
                params=sum(p.numel() for p in model.parameters()))


def _framework(cfg) -> str:
    scope = cfg.get('default_scope', None)
    if scope in ('mmseg', 'mmdet'):
        return scope
    return 'mmdet' if cfg.model.get('type') in ('MaskRCNN', 'FasterRCNN') else 'mmseg'


def build_model_for_flops(cfg, device: str = 'cpu') -> Tuple[nn.Module, str]:
    """Build ``cfg.model`` (SyncBN as BN, no weights loaded) in its framework's scope,
    in eval mode on ``device``. Returns (model, 'mmseg' | 'mmdet')."""
    from mmengine.registry import DefaultScope

    from .runtime import _replace_syncbn
    scope = _framework(cfg)
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    model_cfg = copy.deepcopy(cfg.model)
    _replace_syncbn(model_cfg)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(model_cfg)
    return model.to(device).eval(), scope


def model_complexity(cfg, shape: Sequence[int] = (512, 2048),
                     device: str = 'cpu') -> Dict[str, Any]:
    """Parameters and flops of a config's whole model on one (1, 3, H, W) image.

    Segmentors run their ``tensor`` forward (backbone + decode head; the auxiliary
    head is not run in inference, but its parameters are counted, as the paper's
    parameter counts do). Detectors run their ``tensor`` forward with one data
    sample of that shape (backbone, neck, RPN and RoI heads).

    Args:
        cfg (Config): a config (``Config.fromfile``).
        shape (tuple): (H, W). Defaults to (512, 2048), the paper's ADE20K shape.
        device (str): Defaults to 'cpu'.
    """
    import functools
    H, W = (int(shape[0]), int(shape[0])) if len(shape) == 1 else map(int, shape)
    model, scope = build_model_for_flops(cfg, device)
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
