"""Layer-wise learning-rate decay for ShuffleMamba backbones.

:class:`ShuffleMambaLayerDecayOptimWrapperConstructor` scales the learning rate of a
parameter by ``layer_decay_rate ** (num_layers - 1 - layer_id)``, where the layer id
comes from the backbone's ``get_layer_depth``, and turns weight decay off for the
parameters listed in :func:`is_no_decay_param`. The mapping of one parameter to its
``(layer_id, no_decay)`` is the pure function :func:`get_layer_decay_param_info`; the
constructor only builds the param groups.
"""
import functools
import inspect
from numbers import Real
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import (OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS,
                               OPTIMIZERS)
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

#: Leaf names of parameters that are never weight-decayed: the position embedding,
#: register tokens and their position embedding, the adapter's level embedding and
#: the SSM's ``A_log`` / ``A_b_log`` / ``D`` / ``D_b``.
NO_DECAY_PARAM_NAMES = frozenset({
    'pos_embed', 'cls_token', 'pos_embed_cls', 'level_embed', 'A_log', 'A_b_log', 'D',
    'D_b'
})

#: paramwise_cfg keys of DefaultOptimWrapperConstructor this constructor rejects, with
#: what to use instead.
_REJECTED_PARAMWISE_KEYS = {
    'bias_lr_mult': 'use custom_keys, e.g. {".bias": dict(lr_mult=...)}',
    'bias_decay_mult': 'biases are never weight-decayed by this constructor',
    'norm_decay_mult': 'normalisation parameters are never weight-decayed by this '
                       'constructor',
    'flat_decay_mult': 'use custom_keys with decay_mult for the parameters to exempt',
    'dwconv_decay_mult': 'use custom_keys with decay_mult for the parameters to exempt',
    'dcn_offset_lr_mult': 'use custom_keys, e.g. {"conv_offset": dict(lr_mult=...)}',
    # mmseg's LearningRateDecayOptimizerConstructor / mmpretrain's options
    'decay_rate': "this constructor calls it 'layer_decay_rate'",
    'decay_type': 'the layer id always comes from the backbone\'s get_layer_depth',
    'num_layers': 'the number of layers comes from the backbone\'s get_layer_depth',
}
_ACCEPTED_PARAMWISE_KEYS = ('layer_decay_rate', 'custom_keys', 'bypass_duplicate')
# Group keys the constructor sets itself; custom_keys may not override them.
_RESERVED_GROUP_KEYS = ('params', 'param_names', 'lr', 'initial_lr', 'weight_decay',
                        'lr_scale', 'layer_id', 'custom_key')


@functools.lru_cache(maxsize=None)
def _norm_types() -> Tuple[type, ...]:
    types = [nn.LayerNorm, nn.GroupNorm, _BatchNorm, _InstanceNorm]
    if hasattr(nn, 'RMSNorm'):
        types.append(nn.RMSNorm)
    try:  # mmcv's own SyncBN ('MMSyncBN') does not subclass _BatchNorm
        from mmcv.ops import SyncBatchNorm as MMCVSyncBatchNorm
        types.append(MMCVSyncBatchNorm)
    except Exception:  # pragma: no cover - mmcv built without ops
        pass
    return tuple(types)


def is_norm_module(module: Optional[nn.Module]) -> bool:
    """Whether ``module`` is a normalisation layer (LayerNorm, RMSNorm, GroupNorm,
    any ``_BatchNorm`` incl. SyncBatchNorm, any ``_InstanceNorm``, mmcv's SyncBN)."""
    return module is not None and isinstance(module, _norm_types())


def is_no_decay_param(param_name: str, module: Optional[nn.Module] = None) -> bool:
    """Whether a parameter is excluded from weight decay.

    A parameter is not decayed when any of these holds:

    - it belongs (directly) to a normalisation module, see :func:`is_norm_module`
      (decided by the module's type, not its name);
    - its leaf name is ``bias`` or ends in ``_bias``;
    - its leaf name is one of :data:`NO_DECAY_PARAM_NAMES`: ``pos_embed``,
      ``cls_token``, ``pos_embed_cls``, ``level_embed``, ``A_log``, ``A_b_log``,
      ``D``, ``D_b``;
    - it is an adapter injector's layer scale: leaf name ``gamma`` under a module
      path with an ``injector`` component (``interactions.0.injector.gamma``).

    Args:
        param_name (str): dotted name of the parameter.
        module (nn.Module, optional): the module that owns the parameter directly.
            Defaults to None (no norm check).

    Returns:
        bool: True when the parameter gets weight decay 0.
    """
    parts = param_name.split('.')
    leaf = parts[-1]
    if is_norm_module(module):
        return True
    if leaf == 'bias' or leaf.endswith('_bias'):
        return True
    if leaf in NO_DECAY_PARAM_NAMES:
        return True
    if leaf == 'gamma' and 'injector' in parts[:-1]:
        return True
    return False


class LayerDecayParamInfo(NamedTuple):
    """Where a parameter sits for layer-wise lr decay.

    Attributes:
        layer_id (int): 0 for the embeddings, ``i + 1`` for block ``i``,
            ``num_layers - 1`` (the top) for everything else.
        num_layers (int): number of layer ids of the backbone.
        no_decay (bool): the parameter gets weight decay 0.
    """
    layer_id: int
    num_layers: int
    no_decay: bool


def get_layer_decay_param_info(param_name: str,
                               module: Optional[nn.Module],
                               get_layer_depth: Callable[..., Tuple[int, int]],
                               prefix: str = 'backbone.') -> LayerDecayParamInfo:
    """Map a parameter to its layer id and whether it is weight-decayed.

    Parameters whose name does not start with ``prefix`` (necks, heads) are put in
    the top layer ``num_layers - 1``; the others get ``get_layer_depth(param_name,
    prefix=prefix)``.

    Args:
        param_name (str): full dotted name in the model, e.g.
            ``'backbone.layers.3.mixer.A_log'``.
        module (nn.Module, optional): the module owning the parameter directly
            (for the normalisation-module rule of :func:`is_no_decay_param`).
        get_layer_depth (Callable): the backbone's ``get_layer_depth(name, prefix)``
            returning ``(layer_id, num_layers)``.
        prefix (str): prefix of the backbone's parameters in the model.
            Defaults to 'backbone.'.

    Returns:
        LayerDecayParamInfo: ``(layer_id, num_layers, no_decay)``.
    """
    layer_id, num_layers = get_layer_depth(param_name, prefix=prefix)
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
        raise ValueError(f'get_layer_depth({param_name!r}) returned num_layers='
                         f'{num_layers!r}; expected a positive int.')
    if not param_name.startswith(prefix):
        layer_id = num_layers - 1
    if not isinstance(layer_id, int) or isinstance(layer_id, bool) \
            or not 0 <= layer_id < num_layers:
        raise ValueError(f'get_layer_depth({param_name!r}) returned layer_id='
                         f'{layer_id!r}, outside 0..{num_layers - 1}.')
    return LayerDecayParamInfo(layer_id, num_layers,
                               is_no_decay_param(param_name, module))


def _check_layer_decay_rate(rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, Real):
        raise TypeError(f'paramwise_cfg.layer_decay_rate must be a number in (0, 1], '
                        f'got {rate!r}')
    rate = float(rate)
    if not 0.0 < rate <= 1.0:  # also rejects nan
        raise ValueError(f'paramwise_cfg.layer_decay_rate must be in (0, 1], got {rate}: '
                         'the lr of layer l is base_lr * rate ** (num_layers - 1 - l).')
    return rate


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ShuffleMambaLayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Optimizer-wrapper constructor with layer-wise learning-rate decay.

    Each trainable parameter gets ``lr = base_lr * lr_mult * layer_decay_rate **
    (num_layers - 1 - layer_id)`` and ``weight_decay = 0`` if it is a no-decay
    parameter, else ``base_wd * decay_mult``. ``lr_mult`` / ``decay_mult`` (default 1)
    come from the first ``custom_keys`` key (longest first, then alphabetical, as in
    :class:`~mmengine.optim.DefaultOptimWrapperConstructor`) that is a substring of the
    parameter's full name; other entries of that key's dict (e.g. ``betas``) are passed
    to the param group.

    Layer ids come from the backbone: ``model.backbone.get_layer_depth(name,
    prefix='backbone.')`` (``model.module`` is unwrapped first; a model that is itself
    a backbone with ``get_layer_depth`` uses prefix ''). For ShuffleMamba the patch
    embedding, ``pos_embed`` and the register tokens are layer 0, block ``i`` is layer
    ``i + 1`` and everything else (``norm_f``) is the top layer ``num_layers - 1`` =
    ``L + 1``. Parameters outside the backbone (necks, heads) are in the top layer.

    Adapter policy: the parameters of :class:`ShuffleMambaAdapter` that are not in
    ShuffleMamba (``spm``, ``interactions.*``, ``level_embed``, ``up``,
    ``norm1``..``norm4``) are in the top layer (lr scale 1), as in the official
    ViT-Adapter / ShuffleMamba layer-decay code, because they are trained from
    scratch; ``get_layer_depth`` (inherited from ShuffleMamba) gives them the top id.

    No weight decay (see :func:`is_no_decay_param`) for every parameter of a
    normalisation module (LayerNorm, RMSNorm, GroupNorm, BatchNorm, SyncBN,
    InstanceNorm; by module type), every ``bias`` / ``*_bias``, ``pos_embed``,
    ``cls_token``, ``pos_embed_cls``, ``level_embed``, ``A_log``, ``A_b_log``, ``D``,
    ``D_b`` and the injectors' ``gamma``. A ``decay_mult`` cannot turn decay back on
    for these.

    Parameters with ``requires_grad=False`` (or frozen by a custom key's
    ``requires_grad=False``, as in MMEngine) are left out of the optimizer; a tensor
    shared by several modules is added once. One param group is made per (layer id,
    decay or not, custom key); besides ``params``, ``lr`` and ``weight_decay`` it
    holds ``param_names``, ``layer_id``, ``lr_scale`` (the lr relative to the base lr,
    incl. ``lr_mult``) and, with a custom key, ``custom_key``, ``lr_mult`` and
    ``decay_mult``. The groups are ordered from the top layer down, so the first group
    (whose lr MMEngine logs) has the base lr when the model has an unscaled group.

    ``paramwise_cfg`` options of DefaultOptimWrapperConstructor other than
    ``custom_keys`` and ``bypass_duplicate`` (``bias_lr_mult``, ``bias_decay_mult``,
    ``norm_decay_mult``, ``flat_decay_mult``, ``dwconv_decay_mult``,
    ``dcn_offset_lr_mult``) and unknown keys are rejected with a ValueError.

    Args:
        optim_wrapper_cfg (dict): the ``optim_wrapper`` config, with ``optimizer``
            (whose ``lr`` is required; ``weight_decay`` defaults to the optimizer
            class's default).
        paramwise_cfg (dict): with

            - layer_decay_rate (float): in (0, 1]; 1 disables the decay.
            - custom_keys (dict, optional): ``{substring: dict(lr_mult=..,
              decay_mult=.., requires_grad=.., **group_options)}``. Defaults to {}.
            - bypass_duplicate (bool, optional): accepted for compatibility; shared
              parameters are always added once.

    Example:
        >>> optim_wrapper = dict(
        ...     type='OptimWrapper',
        ...     optimizer=dict(type='AdamW', lr=6e-5, weight_decay=0.01),
        ...     constructor='ShuffleMambaLayerDecayOptimWrapperConstructor',
        ...     paramwise_cfg=dict(layer_decay_rate=0.9,
        ...                        custom_keys={'decode_head': dict(lr_mult=10.)}))
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        if 'layer_decay_rate' not in self.paramwise_cfg:
            raise ValueError(
                f'{type(self).__name__} needs paramwise_cfg=dict(layer_decay_rate=...), '
                f'got paramwise_cfg={paramwise_cfg!r}.')
        self.layer_decay_rate = _check_layer_decay_rate(
            self.paramwise_cfg['layer_decay_rate'])
        self.custom_keys: Dict[str, dict] = dict(self.paramwise_cfg.get('custom_keys') or {})
        # Longest key first, ties alphabetically (DefaultOptimWrapperConstructor's order).
        self._sorted_keys = sorted(sorted(self.custom_keys), key=len, reverse=True)

    def _validate_cfg(self) -> None:
        """Check ``paramwise_cfg`` (called by the parent ``__init__``)."""
        cfg = self.paramwise_cfg
        if not isinstance(cfg, dict):
            raise TypeError(f'paramwise_cfg should be a dict, got {type(cfg).__name__}')
        for key in cfg:
            if key in _REJECTED_PARAMWISE_KEYS:
                raise ValueError(f'{type(self).__name__} does not support paramwise_cfg.'
                                 f'{key}: {_REJECTED_PARAMWISE_KEYS[key]}.')
            if key not in _ACCEPTED_PARAMWISE_KEYS:
                raise ValueError(f'Unknown paramwise_cfg key {key!r} for '
                                 f'{type(self).__name__}; accepted keys: '
                                 f'{list(_ACCEPTED_PARAMWISE_KEYS)}.')
        custom_keys = cfg.get('custom_keys') or {}
        if not isinstance(custom_keys, dict):
            raise TypeError('paramwise_cfg.custom_keys should be a dict, got '
                            f'{type(custom_keys).__name__}')
        for key, opts in custom_keys.items():
            if not isinstance(key, str) or not isinstance(opts, dict):
                raise TypeError('paramwise_cfg.custom_keys should map str to dict, got '
                                f'{key!r}: {opts!r}')
            reserved = sorted(set(opts) & set(_RESERVED_GROUP_KEYS))
            if reserved:
                raise ValueError(f'custom_keys[{key!r}] sets {reserved}, which this '
                                 'constructor computes; use lr_mult / decay_mult.')
            for mult in ('lr_mult', 'decay_mult'):
                value = opts.get(mult, 1.0)
                if isinstance(value, bool) or not isinstance(value, Real) or value < 0:
                    raise ValueError(f'custom_keys[{key!r}].{mult} must be a number >= 0, '
                                     f'got {value!r}')
        if self.base_lr is None:
            raise ValueError(f'{type(self).__name__} needs optimizer.lr in the config.')

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _find_backbone(model: nn.Module) -> Tuple[nn.Module, str]:
        backbone = getattr(model, 'backbone', None)
        if backbone is not None and callable(getattr(backbone, 'get_layer_depth', None)):
            return backbone, 'backbone.'
        if backbone is None and callable(getattr(model, 'get_layer_depth', None)):
            return model, ''
        what = (f'its backbone ({type(backbone).__name__}) has no get_layer_depth'
                if backbone is not None else 'it has no `backbone` attribute')
        raise TypeError(
            f'ShuffleMambaLayerDecayOptimWrapperConstructor cannot build layer-wise lr '
            f'decay for {type(model).__name__}: {what}. Use a backbone that defines '
            '`get_layer_depth(param_name, prefix)` (ShuffleMamba, ShuffleMambaAdapter) '
            "as `model.backbone`, or use constructor='DefaultOptimWrapperConstructor' "
            'with paramwise_cfg.custom_keys instead.')

    def _match_custom_key(self, name: str) -> Optional[str]:
        for key in self._sorted_keys:
            if key in name:
                return key
        return None

    def _resolve_base_wd(self) -> float:
        if self.base_wd is not None:
            return float(self.base_wd)
        optimizer_cls = self.optimizer_cfg['type']
        if isinstance(optimizer_cls, str):
            with OPTIMIZERS.switch_scope_and_registry(None) as registry:
                optimizer_cls = registry.get(optimizer_cls)
        param = inspect.signature(optimizer_cls).parameters.get('weight_decay')
        if param is None or not isinstance(param.default, Real):
            raise ValueError(f'{type(self).__name__}: set optimizer.weight_decay; '
                             f'{optimizer_cls!r} has no numeric default.')
        return float(param.default)

    def build_param_groups(self, model: nn.Module) -> List[dict]:
        """Build the param groups for ``model`` (``model.module`` is unwrapped).

        Args:
            model (nn.Module): the model (or a DDP-like wrapper of it).

        Returns:
            list[dict]: param groups, top layer first.
        """
        if hasattr(model, 'module'):
            model = model.module
        backbone, prefix = self._find_backbone(model)
        base_wd = self._resolve_base_wd()
        rate = self.layer_decay_rate

        groups: Dict[tuple, dict] = {}
        seen = set()
        num_layers = None
        for module_name, module in model.named_modules():
            for leaf, param in module.named_parameters(recurse=False):
                if id(param) in seen:
                    continue
                seen.add(id(param))
                name = f'{module_name}.{leaf}' if module_name else leaf
                custom_key = self._match_custom_key(name)
                opts = dict(self.custom_keys[custom_key]) if custom_key else {}
                if not opts.pop('requires_grad', True):
                    param.requires_grad_(False)  # MMEngine's custom_keys freezing
                if not param.requires_grad:
                    continue
                info = get_layer_decay_param_info(name, module, backbone.get_layer_depth,
                                                  prefix)
                if num_layers is None:
                    num_layers = info.num_layers
                elif info.num_layers != num_layers:
                    raise ValueError(f'get_layer_depth returned num_layers={info.num_layers}'
                                     f' for {name!r} but {num_layers} before.')
                lr_mult = float(opts.get('lr_mult', 1.0))
                decay_mult = float(opts.get('decay_mult', 1.0))
                gkey = (info.layer_id, info.no_decay, custom_key)
                if gkey not in groups:
                    lr_scale = rate**(num_layers - 1 - info.layer_id) * lr_mult
                    group = dict(
                        params=[],
                        param_names=[],
                        lr=self.base_lr * lr_scale,
                        weight_decay=0.0 if info.no_decay else base_wd * decay_mult,
                        layer_id=info.layer_id,
                        lr_scale=lr_scale)
                    if custom_key is not None:
                        group.update(opts)
                        group.update(custom_key=custom_key, lr_mult=lr_mult,
                                     decay_mult=decay_mult)
                    groups[gkey] = group
                groups[gkey]['params'].append(param)
                groups[gkey]['param_names'].append(name)

        if not groups:
            raise ValueError(f'{type(model).__name__} has no trainable parameters.')
        # Top layer first; within a layer: no custom key first, decayed first.
        order = sorted(groups, key=lambda k: (-k[0], k[2] is not None, k[2] or '', k[1]))
        self._log_summary(groups, num_layers, prefix, base_wd)
        return [groups[k] for k in order]

    def _log_summary(self, groups: Dict[tuple, dict], num_layers: int, prefix: str,
                     base_wd: float) -> None:
        """Log one line per layer id through MMEngine's current logger."""
        per_layer: Dict[int, dict] = {}
        for (layer_id, no_decay, _), group in sorted(groups.items(), key=lambda kv: kv[0][0]):
            stats = per_layer.setdefault(layer_id,
                                         dict(decay=0, no_decay=0, numel=0, custom={}))
            n = len(group['params'])
            stats['no_decay' if no_decay else 'decay'] += n
            stats['numel'] += sum(p.numel() for p in group['params'])
            if 'custom_key' in group:
                stats['custom'][group['custom_key']] = \
                    stats['custom'].get(group['custom_key'], 0) + n
        print_log(
            f'{type(self).__name__}: layer_decay_rate={self.layer_decay_rate}, '
            f'{num_layers} layer ids (backbone prefix {prefix!r}), base lr '
            f'{self.base_lr:g}, weight decay {base_wd:g}, {len(groups)} param groups',
            logger='current')
        for layer_id, s in per_layer.items():
            scale = self.layer_decay_rate**(num_layers - 1 - layer_id)
            custom = ''.join(f', {k!r} x{v}' for k, v in s['custom'].items())
            print_log(
                f'  layer {layer_id}: lr_scale {scale:.4g}, {s["decay"]} decayed + '
                f'{s["no_decay"]} no-decay tensors, {s["numel"]} elements{custom}',
                logger='current')

    def __call__(self, model: nn.Module) -> OptimWrapper:
        """Build the optimizer wrapper for ``model``.

        Args:
            model (nn.Module): the model (or a DDP-like wrapper with ``.module``).

        Returns:
            OptimWrapper: the wrapper built from ``optim_wrapper_cfg``.
        """
        optim_wrapper_cfg = self.optim_wrapper_cfg.copy()
        optim_wrapper_cfg.setdefault('type', 'OptimWrapper')
        optimizer_cfg = self.optimizer_cfg.copy()
        optimizer_cls = optimizer_cfg['type']
        if isinstance(optimizer_cls, str):
            with OPTIMIZERS.switch_scope_and_registry(None) as registry:
                optimizer_cls = registry.get(optimizer_cls)
                if optimizer_cls is None:
                    raise KeyError(f'optimizer {optimizer_cfg["type"]!r} is not registered')
        first_arg = next(iter(inspect.signature(optimizer_cls).parameters))
        optimizer_cfg[first_arg] = self.build_param_groups(model)
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        return OPTIM_WRAPPERS.build(optim_wrapper_cfg,
                                    default_args=dict(optimizer=optimizer))
