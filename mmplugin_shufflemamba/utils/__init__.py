"""Running the tools: configs, runtime set-up, kernel report, stop messages."""
from ..checkpoint.fit import CheckpointFitError
from ..engine.hooks.finite_loss_hook import NonFiniteTrainingError
from .runtime import (add_training_hooks, load_config, log_kernels, prepare_runtime,
                      shutdown_distributed, stop_message)

#: the errors with which the tools' checks stop a run (printed without a traceback)
STOP_ERRORS = (CheckpointFitError, NonFiniteTrainingError)

__all__ = [
    'STOP_ERRORS', 'add_training_hooks', 'load_config', 'log_kernels', 'prepare_runtime',
    'shutdown_distributed', 'stop_message'
]
