# A tiny ShuffleMamba (SLWS on) + UperNet, trained from scratch on the synthetic
# ADE20K-layout dataset that tools/quickstart.py generates (CPU, about 5 minutes).
# It inherits the paper config and only shrinks the model, data and schedule.
_base_ = ['../upernet_shufflemamba_b.py']

data_root = 'data/synthetic_ade20k'
crop_size = (128, 128)
embed_dims = 96
max_iters = 300
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        embed_dims=embed_dims,  # overrides arch='b' of the base config
        num_layers=6,
        img_size=128,
        patch_size=8,
        # Trained from scratch: LayerNorm (the B config's RMSNorm matches its checkpoint).
        norm_cfg=dict(type='LN', eps=1e-5),
        drop_path_rate=0.1,
        shuffle_rate=0.5,
        out_indices=(1, 3, 4, 5),
        out_type='residual'),
    decode_head=dict(in_channels=[embed_dims] * 4, channels=64, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=embed_dims, channels=32, norm_cfg=norm_cfg),
    test_cfg=dict(_delete_=True, mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegLabels', num_classes={{_base_.num_classes}}),
    dict(type='RandomResize', scale=(128, 128), ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.9),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegLabels', num_classes={{_base_.num_classes}}),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=0.01))
auto_scale_lr = dict(enable=False, base_batch_size=8)  # the lr is for 1 x 8 images
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=1e-5, power=1.0, begin=30, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1))
randomness = dict(seed=0)
