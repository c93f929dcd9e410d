from .amp_optim_wrapper import CPUAmpOptimWrapper, amp_optim_wrapper_cfg
from .layer_decay_optim_wrapper_constructor import (
    NO_DECAY_PARAM_NAMES, LayerDecayParamInfo, ShuffleMambaLayerDecayOptimWrapperConstructor,
    get_layer_decay_param_info, is_no_decay_param, is_norm_module)

__all__ = [
    'ShuffleMambaLayerDecayOptimWrapperConstructor', 'LayerDecayParamInfo',
    'get_layer_decay_param_info', 'is_no_decay_param', 'is_norm_module',
    'NO_DECAY_PARAM_NAMES', 'CPUAmpOptimWrapper', 'amp_optim_wrapper_cfg'
]
