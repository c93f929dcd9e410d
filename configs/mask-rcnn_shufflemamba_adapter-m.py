# Mask R-CNN + FPN with ShuffleMambaAdapter-M on COCO, the paper's recipe (Table 4:
# 103M parameters, 46.8 box AP / 41.8 mask AP): 1x schedule (12 epochs, lr steps at
# 8 and 11), 8 GPUs x 2 images, AdamW lr 1e-4 betas (0.9, 0.999) wd 0.05, layer-wise lr
# decay 0.9, drop path 0.4, interaction groups of 8 blocks, 12 deformable heads.
#
#   tools/dist_train.sh configs/mask-rcnn_shufflemamba_adapter-m.py 8
#
# ShuffleMamba-M was pretrained with LayerNorm and one cls token in front (dropped
# here): its official training checkpoint loads with only the path set, e.g.
#   model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='m.pth')))
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
# mmplugin_shufflemamba.compat: MMEngine's loaders read MMEngine and official checkpoints
# with the safe torch.load (load_from, --resume, Pretrained) in any tool.
custom_imports = dict(
    imports=['mmplugin_shufflemamba', 'mmplugin_shufflemamba.datasets',
             'mmplugin_shufflemamba.compat'],
    allow_failed_imports=False)
# Stop at the first NaN / inf loss (tools/train.py --no-finite-check turns it off);
# keep torch's generator state in checkpoints (exact resumes, also without the tools).
custom_hooks = [dict(type='FiniteLossHook'), dict(type='RNGStateHook')]

embed_dims = 576
model = dict(
    backbone=dict(
        _delete_=True,
        type='ShuffleMambaAdapter',
        arch='m',
        img_size=224,  # resolution of the ImageNet position embedding
        patch_size=16,
        norm_cfg=dict(type='LN', eps=1e-5),
        drop_path_rate=0.4,
        shuffle_rate=0.0,  # the official fine-tuning recipe does not shuffle
        conv_inplane=64,
        n_points=4,
        deform_num_heads=12,
        init_values=0.0,
        interaction_indexes=[[0, 7], [8, 15], [16, 23], [24, 31]],
        with_cffn=True,
        cffn_ratio=0.25,
        deform_ratio=0.5,
        add_backbone_feature=True,
        use_extra_extractor=True,
        adapter_norm_cfg=dict(type='SyncBN', requires_grad=True),
        with_cp=False),
    neck=dict(
        in_channels=[embed_dims] * 4,
        norm_cfg=dict(type='SyncBN', requires_grad=True)))

# Layer-wise lr decay 0.9 over the blocks (the adapter's own modules and the heads at
# the full lr); no weight decay on the 1-D parameters (norms, D, the injector gammas) and
# the biases only, as the official detection constructor decides (no_decay='flat': it
# decays A_log, pos_embed and the level embeddings; 'marked', the default, would not).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='ShuffleMambaLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.9, no_decay='flat'))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1),
]

# mmdet's COCO pipelines with the data checks of this package: each image against the
# size its annotation declares (CheckImageSize), files named when they cannot be read and
# what mmdet sets aside (degenerate polygons, images without annotations) counted in one
# warning line (CheckedCocoDataset).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CheckImageSize'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CheckImageSize'),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# 8 GPUs x 2 images = batch 16.
train_dataloader = dict(
    batch_size=2, dataset=dict(type='CheckedCocoDataset', pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset', pipeline=test_pipeline))
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
