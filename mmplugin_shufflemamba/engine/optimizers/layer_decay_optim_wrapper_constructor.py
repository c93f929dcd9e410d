"""Optimizer-wrapper constructors that read the models' ``_no_weight_decay`` mark
(``param._no_weight_decay = True``, as mamba-ssm marks ``A_log`` and ``D``), which neither
MMEngine nor timm reads; see docs/training_and_testing.md (layer-wise learning-rate decay).
"""
import inspect
import logging
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence

import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIMIZERS
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm, _InstanceNorm
from mmpretrain.engine.optimizers.layer_decay_optim_wrapper_constructor import \
    LearningRateDecayOptimWrapperConstructor

from ...errors import ArgumentTypeError, ArgumentValueError
from ...models.layers.arg_checks import is_number

try:  # mmcv's own SyncBN ('MMSyncBN') is no _BatchNorm
    from mmcv.ops import SyncBatchNorm as _MMCVSyncBN
except ImportError:  # pragma: no cover - mmcv built without ops
    _MMCVSyncBN = _BatchNorm
#: Modules whose parameters the layer-decay constructor never decays (by type).
NORM_TYPES = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm, _MMCVSyncBN)


def is_marked_no_decay(param: nn.Parameter) -> bool:
    """Whether the model marked ``param`` with ``_no_weight_decay = True``."""
    return bool(getattr(param, '_no_weight_decay', False))


def optimizer_options(optimizer_cfg: dict, scope: Optional[str] = None
                      ) -> Optional[Dict[str, inspect.Parameter]]:
    """The keyword arguments of the configured optimizer class (None when unknown), the
    type looked up in ``scope``'s registry (default: the current scope)."""
    optimizer = optimizer_cfg.get('type')
    if isinstance(optimizer, str):
        with OPTIMIZERS.switch_scope_and_registry(scope) as registry:
            optimizer = registry.get(optimizer)
    try:
        options = dict(inspect.signature(optimizer).parameters) if optimizer else None
    except (TypeError, ValueError):  # pragma: no cover - no inspectable signature
        return None
    if options and any(p.kind == p.VAR_KEYWORD for p in options.values()):
        return None  # e.g. ZeroRedundancyOptimizer(params, optimizer_type, **kwargs)
    return options


def _check_custom_key_options(name: str, custom_keys: dict, own: Sequence[str],
                              optimizer_cfg: dict, computed: Sequence[str] = ()) -> None:
    """Refuse a custom_keys entry option that nothing reads (a typo such as lr_mul):
    neither one of ``own`` nor a param-group option of the optimizer (except the
    ``computed`` ones), unless the optimizer's options cannot be listed."""
    known = optimizer_options(optimizer_cfg)
    if known is None:
        return
    options = sorted(o for o in known if o != 'params' and o not in computed)
    for key, opts in (custom_keys or {}).items():
        unknown = sorted(o for o in (opts if isinstance(opts, dict) else {})
                         if o not in own and o not in options)
        if unknown:
            raise ArgumentValueError(f'{name}: custom_keys[{key!r}] has {unknown}, which nothing '
                                     f'reads: it takes {list(own)} and the param-group options of '
                                     f"{optimizer_cfg.get('type')!r} ({options}).")


def warn_unmatched_custom_keys(owner: str, custom_keys: dict, module: nn.Module) -> None:
    """Say which ``custom_keys`` match no parameter name of ``module`` (MMEngine's
    constructors ignore them without a word: a misspelt key changes nothing)."""
    names = [n for n, _ in module.named_parameters()]
    unmatched = sorted(k for k in (custom_keys or {}) if not any(k in n for n in names))
    if unmatched:
        print_log(f'{owner}: paramwise_cfg.custom_keys {unmatched} match no parameter name '
                  f'of the model and change nothing (names such as {names[:3]}).',
                  logger='current', level=logging.WARNING)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ShuffleMambaOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """MMEngine's ``DefaultOptimWrapperConstructor`` (same ``paramwise_cfg``), with weight
    decay 0 for every parameter marked ``_no_weight_decay`` (whatever ``custom_keys`` or
    the ``*_decay_mult`` options say): ``constructor='ShuffleMambaOptimWrapperConstructor'``.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        # Non-empty: without paramwise_cfg MMEngine passes model.parameters() as they are.
        super().__init__(optim_wrapper_cfg, paramwise_cfg or dict(custom_keys={}))

    def _validate_cfg(self) -> None:
        super()._validate_cfg()
        name = type(self).__name__
        decay = [k for k in ('layer_decay_rate', 'decay_rate') if k in self.paramwise_cfg]
        if decay:
            raise ArgumentValueError(f"{name} has no layer-wise lr decay: use constructor="
                                     "'ShuffleMambaLayerDecayOptimWrapperConstructor' with "
                                     f'paramwise_cfg.layer_decay_rate (got {decay[0]}).')
        for key in self.paramwise_cfg:  # MMEngine ignores the keys it does not know
            if key not in _DEFAULT_PARAMWISE_KEYS:
                raise ArgumentValueError(
                    f'Unknown paramwise_cfg key {key!r} for {name} (MMEngine would ignore '
                    f'it); it takes {list(_DEFAULT_PARAMWISE_KEYS)}.')
        # MMEngine copies a custom key's entries into its param groups
        _check_custom_key_options(name, self.paramwise_cfg.get('custom_keys'),
                                  ('lr_mult', 'decay_mult'), self.optimizer_cfg)

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   **kwargs) -> None:
        super().add_params(params, module, prefix, **kwargs)
        if prefix == '':  # the top call, after MMEngine's recursion over the children
            warn_unmatched_custom_keys(type(self).__name__,
                                       self.paramwise_cfg.get('custom_keys'), module)
            marked = [g for g in params if is_marked_no_decay(g['params'][0])]
            for group in marked:
                group['weight_decay'] = 0.0
            print_log(f'{type(self).__name__}: weight decay 0 for the {len(marked)} '
                      'parameters marked _no_weight_decay', logger='current')


#: what MMEngine's DefaultOptimWrapperConstructor reads from paramwise_cfg
_DEFAULT_PARAMWISE_KEYS = ('custom_keys', 'bias_lr_mult', 'bias_decay_mult', 'norm_decay_mult',
                           'dwconv_decay_mult', 'flat_decay_mult', 'dcn_offset_lr_mult',
                           'bypass_duplicate')
_PARAMWISE_KEYS = ('layer_decay_rate', 'no_decay', 'custom_keys', 'bypass_duplicate')
#: what ``paramwise_cfg.no_decay`` selects: which parameters get no weight decay
NO_DECAY_RULES = ('marked', 'flat')
_GROUP_KEYS = ('params', 'param_name', 'param_names', 'lr', 'initial_lr', 'weight_decay',
               'lr_scale', 'layer_id', 'custom_key')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ShuffleMambaLayerDecayOptimWrapperConstructor(LearningRateDecayOptimWrapperConstructor):
    """mmpretrain's layer-wise lr decay, for mmseg / mmdet / mmpretrain models.

    A trainable parameter gets ``lr = base_lr * lr_mult * layer_decay_rate **
    (num_layers - 1 - layer_id)``, ``(layer_id, num_layers)`` being the backbone's
    ``get_layer_depth(name, prefix='backbone.')`` (a bare backbone's own), and weight
    decay ``base_wd * decay_mult`` (``base_wd``: the optimizer's default if not set), or
    0 whatever ``decay_mult`` if it is marked ``_no_weight_decay``, of a normalisation
    module (:data:`NORM_TYPES`) or named ``bias`` / ``*_bias`` (``no_decay='marked'``,
    the default); with ``no_decay='flat'`` 0 for the 1-D parameters and biases only, as
    the official detection constructor decides (so ``A_log``, ``pos_embed`` and the
    adapter's ``level_embed`` are decayed). Shared parameters are
    added once, in one group per (layer id, decay or not, custom key), top layer first,
    with ``param_names``, ``layer_id``, ``lr_scale`` and a custom key's (longest match
    first) ``custom_key``, ``lr_mult``, ``decay_mult`` and options; one line per layer is
    logged. See docs/training_and_testing.md for an example.

    Args:
        optim_wrapper_cfg (dict): with ``optimizer`` (``lr`` required).
        paramwise_cfg (dict): ``layer_decay_rate`` in (0, 1] (1: no decay), optional
            ``no_decay`` ('marked' or 'flat', see above), ``custom_keys``
            ``{substring: dict(lr_mult=.., decay_mult=.., requires_grad=.., **group_options)}``
            and ``bypass_duplicate`` (accepted; shared tensors are always added once).
            Other keys are errors.
    """

    def _validate_cfg(self) -> None:
        name, cfg = type(self).__name__, self.paramwise_cfg
        if self.base_wd is None:  # the optimizer's default, for decay_mult and the groups
            wd = (optimizer_options(self.optimizer_cfg) or {}).get('weight_decay')
            if not wd or not is_number(wd.default):
                raise ArgumentValueError(f'{name}: set optimizer.weight_decay (no numeric default '
                                         f'for {self.optimizer_cfg["type"]!r}).')
            self.base_wd = wd.default
        super()._validate_cfg()
        for key in (k for k in cfg if k not in _PARAMWISE_KEYS):
            raise ArgumentValueError(
                f'Unknown paramwise_cfg key {key!r} for {name}; it takes '
                f'{list(_PARAMWISE_KEYS)}. no_decay chooses the parameters without '
                'weight decay; multipliers go in custom_keys.')
        if cfg.get('no_decay', 'marked') not in NO_DECAY_RULES:
            raise ArgumentValueError(f"paramwise_cfg.no_decay must be one of {NO_DECAY_RULES}, got "
                                     f"{cfg['no_decay']!r}: 'marked' (marked, norm and bias "
                                     "parameters) or 'flat' (1-D parameters and biases).")
        rate = cfg.get('layer_decay_rate')
        if rate is None:
            raise ArgumentValueError(f'{name} needs paramwise_cfg=dict(layer_decay_rate=...), got '
                                     f'paramwise_cfg={cfg!r}.')
        if not is_number(rate):
            raise ArgumentTypeError(f'paramwise_cfg.layer_decay_rate must be a number in (0, 1], '
                                    f'got {rate!r}')
        if not 0 < rate <= 1:  # also nan
            raise ArgumentValueError(f'paramwise_cfg.layer_decay_rate must be in (0, 1], got {rate}'
                                     ': layer l gets base_lr * rate ** (num_layers - 1 - l).')
        for key, opts in cfg.get('custom_keys', {}).items():
            if not isinstance(opts, dict) or set(opts) & set(_GROUP_KEYS) or not all(
                    is_number(m) and m >= 0
                    for m in (opts.get('lr_mult', 1.), opts.get('decay_mult', 1.))):
                raise ArgumentValueError(f'custom_keys[{key!r}] = {opts!r}: a dict with lr_mult / '
                                         'decay_mult >= 0 (not the lr or weight decay this '
                                         'constructor computes) and other group options.')
        _check_custom_key_options(name, cfg.get('custom_keys'),
                                  ('lr_mult', 'decay_mult', 'requires_grad'),
                                  self.optimizer_cfg, computed=_GROUP_KEYS)
        if self.base_lr is None:
            raise ArgumentValueError(f'{name} needs optimizer.lr in the config.')

    @staticmethod
    def _get_layer_depth(model: nn.Module) -> Callable:
        backbone = getattr(model, 'backbone', None)
        if backbone is not None and callable(getattr(backbone, 'get_layer_depth', None)):
            return partial(backbone.get_layer_depth, prefix='backbone.')
        if backbone is None and callable(getattr(model, 'get_layer_depth', None)):
            return model.get_layer_depth
        what = (f'its backbone ({type(backbone).__name__}) has no get_layer_depth'
                if backbone is not None else 'it has no `backbone` attribute')
        raise ArgumentTypeError(
            f'ShuffleMambaLayerDecayOptimWrapperConstructor cannot build layer-wise lr '
            f'decay for {type(model).__name__}: {what}. Use a backbone that defines '
            '`get_layer_depth(param_name, prefix)` (ShuffleMamba, ShuffleMambaAdapter) '
            "as `model.backbone`, or constructor='ShuffleMambaOptimWrapperConstructor' "
            '(MMEngine\'s DefaultOptimWrapperConstructor and the mark) instead.')

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   get_layer_depth: Optional[Callable] = None, **kwargs) -> None:
        if prefix or get_layer_depth is not None:  # mmpretrain's recursion
            return super().add_params(params, module, prefix, get_layer_depth, **kwargs)
        per_param: List[dict] = []  # mmpretrain's: one group per parameter
        # (its DEBUG dump of them shows the weight decay before the rules below: dropped)
        logger, no_debug = MMLogger.get_current_instance(), lambda r: r.levelno > logging.DEBUG
        logger.addFilter(no_debug)
        try:
            super().add_params(per_param, module,
                               get_layer_depth=self._get_layer_depth(module))
        finally:
            logger.removeFilter(no_debug)
        norms = {id(p) for m in module.modules() if isinstance(m, NORM_TYPES)
                 for p in m.parameters(recurse=False)}
        custom_keys = self.paramwise_cfg.get('custom_keys', {})
        warn_unmatched_custom_keys(type(self).__name__, custom_keys, module)
        flat = self.paramwise_cfg.get('no_decay', 'marked') == 'flat'
        sorted_keys = sorted(sorted(custom_keys), key=len, reverse=True)
        groups: Dict[tuple, dict] = {}
        seen, scales = set(), {}
        for group in per_param:
            (param, ), name = group.pop('params'), group.pop('param_name')
            if id(param) in seen:
                continue
            seen.add(id(param))
            scales[group['layer_id']] = group['lr_scale']
            if not group.pop('requires_grad', True):
                param.requires_grad_(False)  # a custom key's requires_grad=False
                continue
            key = next((k for k in sorted_keys if k in name), None)
            if key is not None:  # mmpretrain ignores lr_mult
                lr_mult = custom_keys[key].get('lr_mult', 1.)
                group.update(custom_key=key, lr_mult=lr_mult,
                             decay_mult=custom_keys[key].get('decay_mult', 1.),
                             lr_scale=group['lr_scale'] * lr_mult)
                group['lr'] = self.base_lr * group['lr_scale']
            leaf = name.rsplit('.', 1)[-1]
            no_decay = leaf == 'bias' or (
                param.ndim <= 1 if flat else
                is_marked_no_decay(param) or id(param) in norms or leaf.endswith('_bias'))
            if no_decay:
                group['weight_decay'] = 0.0
            merged = groups.setdefault((group['layer_id'], no_decay, key),
                                       dict(group, params=[], param_names=[]))
            merged['params'].append(param)
            merged['param_names'].append(name)
        # Top layer first (MMEngine logs the first group's lr): plain, then custom keys.
        params.extend(groups[k] for k in sorted(
            groups, key=lambda k: (-k[0], k[2] is not None, k[2] or '', k[1])))
        self._log_summary(groups, scales)

    def _log_summary(self, groups: Dict[tuple, dict], scales: Dict[int, float]) -> None:
        rate = self.paramwise_cfg['layer_decay_rate']
        print_log(f'{type(self).__name__}: layer_decay_rate={rate}, base lr '
                  f'{self.base_lr:g}, weight decay {self.base_wd:g} (none on the '
                  f"{self.paramwise_cfg.get('no_decay', 'marked')} rule's parameters), "
                  f'{len(groups)} param groups', logger='current')
        for layer_id in sorted({k[0] for k in groups}):
            layer = {k: g for k, g in groups.items() if k[0] == layer_id}
            count = {nd: sum(len(g['params']) for k, g in layer.items() if k[1] == nd)
                     for nd in (False, True)}
            keys = ''.join(sorted({f', {k[2]!r}' for k in layer if k[2] is not None}))
            print_log(f'  layer {layer_id}: lr_scale {scales[layer_id]:.4g}, {count[False]} '
                      f'decayed + {count[True]} no-decay tensors{keys}', logger='current')
