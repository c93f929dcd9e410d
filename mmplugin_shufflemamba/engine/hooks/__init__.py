from .eval_image_size_hook import EvalImageSizeHook, check_eval_image_sizes
from .finite_loss_hook import FiniteLossHook, NonFiniteTrainingError
from .rng_state_hook import RNGStateHook

__all__ = ['EvalImageSizeHook', 'check_eval_image_sizes', 'FiniteLossHook',
           'NonFiniteTrainingError', 'RNGStateHook']
