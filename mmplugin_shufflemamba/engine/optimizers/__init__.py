from .amp_optim_wrapper import CPUAmpOptimWrapper, amp_optim_wrapper_cfg
from .layer_decay_optim_wrapper_constructor import (
    NORM_TYPES, ShuffleMambaLayerDecayOptimWrapperConstructor,
    ShuffleMambaOptimWrapperConstructor, is_marked_no_decay)

__all__ = [
    'ShuffleMambaLayerDecayOptimWrapperConstructor', 'ShuffleMambaOptimWrapperConstructor',
    'is_marked_no_decay', 'NORM_TYPES', 'CPUAmpOptimWrapper', 'amp_optim_wrapper_cfg'
]
