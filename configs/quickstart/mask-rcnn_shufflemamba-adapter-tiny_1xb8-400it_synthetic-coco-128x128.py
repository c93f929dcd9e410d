# A tiny ShuffleMambaAdapter + slimmed Mask R-CNN trained from scratch on the synthetic
# COCO-format instance dataset that `tools/quickstart.py --task detection` generates
# (CPU, a few minutes). It inherits the paper config and only shrinks the model (a
# 6-block 96-wide backbone, 64-channel FPN and heads), data and schedule.
_base_ = ['../mask-rcnn_shufflemamba_adapter-m.py']

data_root = 'data/synthetic_coco'
classes = ('building', 'sky', 'tree', 'car')
metainfo = dict(classes=classes)
img_scale = (128, 128)
embed_dims = 96
channels = 64
max_iters = 400
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        embed_dims=embed_dims,  # overrides arch of the base config
        num_layers=6,
        img_size=128,
        norm_cfg=dict(type='LN', eps=1e-5),
        drop_path_rate=0.1,
        shuffle_rate=0.5,
        conv_inplane=16,
        deform_num_heads=6,
        interaction_indexes=[[0, 1], [2, 2], [3, 4], [5, 5]],
        adapter_norm_cfg=norm_cfg),
    neck=dict(in_channels=[embed_dims] * 4, out_channels=channels, norm_cfg=norm_cfg),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(in_channels=channels, fc_out_channels=256,
                       num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=channels),
        mask_head=dict(in_channels=channels, conv_out_channels=channels, num_convs=2,
                       num_classes=len(classes))),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(max_per_img=50)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CheckImageSize'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CheckImageSize'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        data_root=data_root, metainfo=metainfo,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(
        data_root=data_root, metainfo=metainfo,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + '/annotations/instances_val2017.json')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=5.0))
auto_scale_lr = dict(enable=False, base_batch_size=8)  # the lr is for 1 x 8 images
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=50,
         end=max_iters, T_max=max_iters - 50),
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
