"""Running the tools: configs, runtime set-up, kernel report, stop messages."""
from ..checkpoint.files import CheckpointError
from ..checkpoint.fit import CheckpointFitError
from ..datasets.data_checks import DataError
from ..engine.hooks.finite_loss_hook import NonFiniteTrainingError
from ..errors import ArgumentError
from .config import enable_auto_scale_lr, load_config, merge_cfg_options
from .config_checks import (ConfigError, check_backbone_channels, check_backbone_outputs,
                            check_config, check_detection_classes, check_evaluator_files,
                            check_label_classes)
from .run_values import check_run_values
from .runtime import (add_training_hooks, apply_resume, build_runner, latest_checkpoint,
                      log_kernels, prepare_runtime, resume_seed, shutdown_distributed,
                      stop_message, warn_random_backbone)

#: the errors with which the tools' checks stop a run (printed without a traceback): a
#: checkpoint that does not fit or is not there, a diverged run, a config or data problem,
#: a setting the modules or the optimizer constructors refuse when the runner builds them
STOP_ERRORS = (CheckpointFitError, CheckpointError, NonFiniteTrainingError, ConfigError,
               DataError, ArgumentError)

__all__ = [
    'ConfigError', 'STOP_ERRORS', 'add_training_hooks', 'apply_resume', 'build_runner',
    'check_backbone_channels', 'check_backbone_outputs', 'check_config',
    'check_detection_classes', 'check_evaluator_files', 'check_label_classes', 'check_run_values',
    'enable_auto_scale_lr',
    'latest_checkpoint', 'load_config', 'log_kernels', 'merge_cfg_options', 'prepare_runtime',
    'resume_seed',
    'shutdown_distributed', 'stop_message', 'warn_random_backbone'
]
