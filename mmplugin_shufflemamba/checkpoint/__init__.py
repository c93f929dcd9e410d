"""Checkpoints: reading files and choosing raw / EMA weights (:mod:`.files`, with the
``torch.load`` allow-list in :mod:`.safe_load`), layout conversion from the published
layouts (:mod:`.layout`), loading into the backbones (:mod:`.loading`; through
``load_state_dict``, :mod:`.pre_hook`) and the tools'
strict fit check of a checkpoint (:mod:`.fit`, :mod:`.saved_config`) and of the one a
runner will load (:mod:`.runner`)."""
from .fit import CheckpointFitError, check_checkpoint_fit, load_checked
from .runner import check_runner_checkpoint, checkpoint_to_load
from .loading import (load_backbone_state, load_into_backbone, load_pretrained_backbone,
                      read_backbone_weights, read_weights)
from .pre_hook import published_layout_pre_hook
from .files import (CheckpointError, CheckpointNotFoundError, NoEMAWeightsError,
                    check_checkpoint_path, check_finite, nonfinite_tensors, read_checkpoint,
                    select_state_dict)
from .layout import (CHECKPOINT_FORMATS, convert_to_backbone, describe_state_dict,
                     detect_format, is_mmpretrain_classifier, mmpretrain_to_official,
                     official_to_mmpretrain)
from .saved_config import format_hint, recorded_grid

__all__ = [
    'CHECKPOINT_FORMATS', 'CheckpointError', 'CheckpointFitError', 'CheckpointNotFoundError',
    'NoEMAWeightsError', 'check_checkpoint_fit',
    'check_runner_checkpoint', 'checkpoint_to_load', 'check_checkpoint_path', 'check_finite',
    'convert_to_backbone', 'describe_state_dict', 'detect_format', 'format_hint',
    'is_mmpretrain_classifier', 'load_backbone_state', 'load_checked', 'load_into_backbone',
    'load_pretrained_backbone', 'mmpretrain_to_official', 'nonfinite_tensors',
    'official_to_mmpretrain', 'published_layout_pre_hook', 'read_backbone_weights',
    'read_checkpoint', 'read_weights', 'recorded_grid', 'select_state_dict']
