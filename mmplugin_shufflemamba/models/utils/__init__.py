from .checkpoint import (CHECKPOINT_FORMATS, CheckpointError, check_checkpoint_path,
                         convert_to_backbone, describe_state_dict, detect_format,
                         format_hint, is_mmpretrain_classifier, load_backbone_state,
                         load_into_backbone, load_pretrained_backbone,
                         mmpretrain_to_official, official_to_mmpretrain,
                         read_backbone_weights, read_checkpoint, select_state_dict)

__all__ = [
    'CHECKPOINT_FORMATS', 'CheckpointError', 'check_checkpoint_path', 'convert_to_backbone',
    'describe_state_dict', 'detect_format', 'format_hint', 'is_mmpretrain_classifier',
    'load_backbone_state', 'load_into_backbone', 'load_pretrained_backbone',
    'mmpretrain_to_official', 'official_to_mmpretrain', 'read_backbone_weights',
    'read_checkpoint', 'select_state_dict'
]
