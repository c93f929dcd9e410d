# ShuffleMamba-Reg-B ImageNet-1K pretraining, stage 3 of 3 (run_reg.sh): a 20-epoch
# 224 px fine-tune from stage 2's checkpoint, batch 512 (8 GPUs x 64), lr 1e-5
# (--lr 1e-5 at batch 512), wd 0.1, RandAugment (rand-m9-mstd0.5-inc1), label smoothing
# 0.1, no repeated augmentation, no random erasing, test crop ratio 1.0, drop path 0.4,
# shuffle_rate 0.1; EMA 0.99996, main_reg.py's default (the paper's Reg accuracies are
# EMA's). This stage's checkpoint is the one the dense Reg configs load (registers
# dropped at load).
_base_ = ['./shufflemamba-reg-b_8xb128-100e_in1k-224px.py']

batch_size = 64
base_lr = 1e-5
max_epochs = 20
warmup_epochs = 5
stage2_checkpoint = 'work_dirs/shufflemamba-reg-b_8xb128-100e_in1k-224px/epoch_100.pth'
bgr_mean = [103.53, 116.28, 123.675]

model = dict(
    backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained',
                                checkpoint=stage2_checkpoint)),
    head=dict(
        loss=dict(_delete_=True, type='LabelSmoothLoss', label_smooth_val=0.1,
                  mode='original'),
        init_cfg=dict(type='Pretrained', checkpoint=stage2_checkpoint, prefix='head')))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=224, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=batch_size,
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True, seed=0),
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=batch_size, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=base_lr, weight_decay=0.1))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 1e-5, by_epoch=True, begin=0,
         end=warmup_epochs, convert_to_iter_based=True),
    # The script's minimum lr (1e-5) equals this stage's lr: constant after warmup.
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=1e-5,
         by_epoch=True, begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
auto_scale_lr = dict(base_batch_size=512)
custom_hooks = [
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),  # decay 0.99996
    dict(type='FiniteLossHook'),
    dict(type='RNGStateHook'),  # exact resumes
]
