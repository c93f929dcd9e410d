# A tiny ShuffleMamba classifier (one cls token in front, SLWS on, cls token in the
# shuffle) pretrained from scratch on the synthetic ImageNet-layout set that
# tools/quickstart.py --task pretrain generates (4 classes, 64x64, CPU, a few minutes).
# It inherits the ShuffleMamba-B pretraining config and shrinks the model, data and
# schedule; the backbone is the segmentation quickstart's (width 96, 6 blocks, patch 8,
# LayerNorm), so that its checkpoint fine-tunes there (the 8x8 position grid is resized
# to 16x16 at load). The recipe's Mixup / CutMix / RandAugment / random erasing are
# left out: on 800 tiny images and 400 iterations they only slow learning down, and so
# is the official initialisation (ShuffleMambaOfficialInit), which stays near chance
# here (top-1 26.5 to 33.5; chance 25) where the backbone's default one reaches 98.5.
_base_ = ['../pretrain/shufflemamba-b_8xb256-300e_in1k.py']

data_root = 'data/synthetic_imagenet'
classes = ('building', 'sky', 'tree', 'car')
embed_dims = 96
img_size = 64
max_iters = 400
base_lr = 1e-3

model = dict(
    backbone=dict(
        embed_dims=embed_dims,  # overrides arch='b' of the base config
        num_layers=6,
        img_size=img_size,
        patch_size=8,
        norm_cfg=dict(type='LN', eps=1e-5),
        drop_path_rate=0.1,
        shuffle_rate=0.5,
        init_cfg=None),  # the default init (see the header)
    head=dict(num_classes=len(classes), in_channels=embed_dims),
    train_cfg=None)
data_preprocessor = dict(num_classes=len(classes))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.35, 1.0),
         backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=img_size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(_delete_=True, type='CheckedCustomDataset', data_root=data_root,
                 ann_file='meta/train.txt', data_prefix='train',
                 metainfo=dict(classes=classes), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=50,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(_delete_=True, type='CheckedCustomDataset', data_root=data_root,
                 ann_file='meta/val.txt', data_prefix='val',
                 metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

# A CPU run: the plain OptimWrapper (the recipe's bf16 AmpOptimWrapper is for GPUs).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=base_lr, betas=(0.9, 0.95), weight_decay=0.05),
    clip_grad=dict(max_norm=3.0),
    paramwise_cfg={{_base_.optim_wrapper.paramwise_cfg}})
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=40),
    dict(type='CosineAnnealingLR', T_max=max_iters - 40, eta_min=1e-5, by_epoch=False,
         begin=40, end=max_iters),
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
auto_scale_lr = None
# EMA over roughly the last 100 iterations (the recipe's 0.9999 spans 10k).
custom_hooks = [
    dict(type='EMAHook', momentum=0.01, priority='ABOVE_NORMAL'),
    dict(type='FiniteLossHook'),
    dict(type='RNGStateHook'),  # exact resumes
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
