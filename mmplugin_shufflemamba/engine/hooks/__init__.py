from .finite_loss_hook import FiniteLossHook, NonFiniteTrainingError
from .rng_state_hook import RNGStateHook

__all__ = ['FiniteLossHook', 'NonFiniteTrainingError', 'RNGStateHook']
