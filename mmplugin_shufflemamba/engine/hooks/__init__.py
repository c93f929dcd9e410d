from .eval_image_size_hook import EvalImageSizeHook
from .finite_loss_hook import FiniteLossHook, NonFiniteTrainingError
from .rng_state_hook import RNGStateHook

__all__ = ['EvalImageSizeHook', 'FiniteLossHook', 'NonFiniteTrainingError', 'RNGStateHook']
