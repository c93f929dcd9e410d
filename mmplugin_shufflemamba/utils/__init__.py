from ..engine.hooks.finite_loss_hook import NonFiniteTrainingError
from .checkpoint_fit import (CheckpointFitError, check_checkpoint_fit,
                             check_runner_checkpoint, checkpoint_to_load)
from .runtime import (add_training_hooks, load_config, log_kernels, prepare_runtime,
                      shutdown_distributed, stop_message)

#: the errors with which the tools' checks stop a run (printed without a traceback)
STOP_ERRORS = (CheckpointFitError, NonFiniteTrainingError)

__all__ = [
    'CheckpointFitError', 'STOP_ERRORS', 'add_training_hooks', 'check_checkpoint_fit',
    'check_runner_checkpoint', 'checkpoint_to_load', 'load_config', 'log_kernels', 'prepare_runtime',
    'shutdown_distributed', 'stop_message'
]
