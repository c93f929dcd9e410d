"""The dense configs (configs/*.py, UperNet and Mask R-CNN): their framework's scope and
registry, and a shrunk copy that builds in a test (test_configs, test_pretrain_configs)."""
from mmplugin_shufflemamba.utils.runtime import _replace_syncbn


def framework(cfg) -> str:
    return 'mmdet' if cfg.model.type in ('MaskRCNN', 'FasterRCNN') else 'mmseg'


def registry(scope):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return MODELS


def shrink(cfg, dims=32, layers=4):
    bb = cfg.model.backbone
    bb.arch = dict(embed_dims=dims, num_layers=layers)
    bb.pop('embed_dims', None)
    bb.pop('num_layers', None)
    if bb.type == 'ShuffleMambaAdapter':
        bb.interaction_indexes = None  # 4 groups of one block
        bb.deform_num_heads = 4
        bb.conv_inplane = 8
        n_out = 4
    else:
        n_out = len(bb.out_indices) if not isinstance(bb.out_indices, int) else 1
        bb.out_indices = tuple(range(layers - n_out, layers))
    if cfg.model.get('neck'):
        cfg.model.neck.in_channels = [dims] * n_out
        cfg.model.neck.out_channels = 16
        cfg.model.rpn_head.in_channels = cfg.model.rpn_head.feat_channels = 16
        roi = cfg.model.roi_head
        for k in ('bbox_roi_extractor', 'mask_roi_extractor'):
            roi[k].out_channels = 16
        roi.bbox_head.in_channels = 16
        roi.bbox_head.fc_out_channels = 32
        roi.mask_head.in_channels = roi.mask_head.conv_out_channels = 16
    else:
        head = cfg.model.decode_head
        head.in_channels = [dims] * n_out
        head.channels = 16
        if cfg.model.get('auxiliary_head'):
            cfg.model.auxiliary_head.in_channels = dims
            cfg.model.auxiliary_head.channels = 8
    _replace_syncbn(cfg.model)
    return cfg
