# ShuffleMamba-Reg-B ImageNet-1K pretraining, stage 1 of 3 (paper Table 2: 83.1 top-1
# after the three stages). The Reg models follow the official run_reg.sh (the paper
# gives one recipe for the plain models only):
#   1. this file: 128 px, 300 epochs, batch 1024 (8 GPUs x 128), --lr 5e-4 scaled by
#      batch / 512 as the official script does (1e-3), wd 0.05, drop path 0.1,
#      shuffle_rate 0.1, ThreeAugment, repeated augmentation, no Mixup / CutMix, no
#      label smoothing, no random erasing;
#   2. shufflemamba-reg-b_8xb128-100e_in1k-224px.py: 224 px from this checkpoint;
#   3. shufflemamba-reg-b_8xb64-20e_in1k-224px-ft.py: a 20-epoch 224 px fine-tune.
# The script's defaults where run_reg.sh sets nothing: 5 warmup epochs from 1e-6,
# cosine to 1e-5, AdamW betas (0.9, 0.999), no gradient clipping. Two exceptions, both
# settings of the script's defaults that run_reg.sh does not switch off: main_reg.py
# mixes (Mixup 0.8 / CutMix 1.0) and keeps an EMA in every stage; these stages do not
# mix (to follow the script there: model = dict(train_cfg=dict(augments=[dict(
# type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))), and only stage 3 keeps
# an EMA (stage 2 starts from the raw weights, as the official --finetune reads them).
# Registers: 12 tokens spread through the patches, reduced by the neck (768 -> 192 each,
# cls_reduce 4) and norm_neck before the head (2304 inputs), RMSNorm, as
# mambar_base_patch16_224 of models_reg.py.
_base_ = ['./shufflemamba-b_8xb256-300e_in1k.py']

img_size = 128
batch_size = 128
base_lr = 1e-3
max_epochs = 300
warmup_epochs = 5
num_registers = 12
cls_reduce = 4
embed_dims = 768

model = dict(
    backbone=dict(
        img_size=img_size,
        with_cls_token=False,
        num_registers=num_registers,
        cls_reduce=cls_reduce,
        drop_path_rate=0.1,
        shuffle_rate=0.1,
        # From scratch as the official model (models_reg.py): Mamba's mixer init.
        init_cfg=dict(type='ShuffleMambaOfficialInit', official='reg')),
    head=dict(
        in_channels=num_registers * embed_dims // cls_reduce,
        loss=dict(_delete_=True, type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=None)

bgr_mean = [103.53, 116.28, 123.675]
# DeiT III's ThreeAugment: random resized crop, flip, one of grayscale / solarization /
# Gaussian blur, colour jitter 0.3.
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
    dict(type='ResizeEdge', scale=int(img_size / 0.875), edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=batch_size,
    sampler=dict(_delete_=True, type='RepeatAugSampler', shuffle=True, seed=0),
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=batch_size, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(lr=base_lr, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / base_lr, by_epoch=True, begin=0,
         end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=1e-5,
         by_epoch=True, begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
auto_scale_lr = dict(base_batch_size=1024)
custom_hooks = [dict(type='FiniteLossHook'), dict(type='RNGStateHook')]
