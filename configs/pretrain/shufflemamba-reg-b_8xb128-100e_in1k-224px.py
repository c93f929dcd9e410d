# ShuffleMamba-Reg-B ImageNet-1K pretraining, stage 2 of 3 (run_reg.sh): 224 px for 100
# epochs from stage 1's checkpoint (backbone and head; the loader resizes the position
# embedding from the 8x8 to the 14x14 grid), --lr 2e-4 scaled by batch / 512 (4e-4),
# drop path 0.4; the rest as stage 1. Point stage1_checkpoint to stage 1's file if its
# work dir differs.
_base_ = ['./shufflemamba-reg-b_8xb128-300e_in1k-128px.py']

img_size = 224
base_lr = 4e-4
max_epochs = 100
warmup_epochs = 5
stage1_checkpoint = 'work_dirs/shufflemamba-reg-b_8xb128-300e_in1k-128px/epoch_300.pth'

model = dict(
    backbone=dict(
        img_size=img_size,
        drop_path_rate=0.4,
        # _delete_: not merged into stage 1's ShuffleMambaOfficialInit
        init_cfg=dict(_delete_=True, type='Pretrained', checkpoint=stage1_checkpoint)),
    # _delete_: not merged into the base's TruncNormal init (PretrainedInit takes only
    # checkpoint / prefix / map_location).
    head=dict(init_cfg=dict(_delete_=True, type='Pretrained', checkpoint=stage1_checkpoint,
                            prefix='head')))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomChoice', transforms=[
        [dict(type='RandomGrayscale', prob=1.0, keep_channels=True)],
        [dict(type='Solarize', thr=128, prob=1.0)],
        [dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf',
              prob=1.0)],
    ]),
    dict(type='ColorJitter', brightness=0.3, contrast=0.3, saturation=0.3),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=base_lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / base_lr, by_epoch=True, begin=0,
         end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=1e-5,
         by_epoch=True, begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
