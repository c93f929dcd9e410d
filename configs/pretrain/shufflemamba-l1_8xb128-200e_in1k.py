# ShuffleMamba-L1 ImageNet-1K pretraining (paper Table 2: 284M parameters, 82.9 top-1):
# the B recipe (see shufflemamba-b_8xb256-300e_in1k.py) with 40 blocks of width 1024
# (RMSNorm, one cls token in front: mambar_large_patch16_224_40), batch 1024
# (8 GPUs x 128), 200 epochs, drop path 0.6.
_base_ = ['./shufflemamba-b_8xb256-300e_in1k.py']

embed_dims = 1024
batch_size = 128
max_epochs = 200
warmup_epochs = 20
base_lr = 1e-3
model = dict(
    backbone=dict(arch='l1', drop_path_rate=0.6),
    head=dict(in_channels=embed_dims))
train_dataloader = dict(batch_size=batch_size)
val_dataloader = dict(batch_size=batch_size)
test_dataloader = val_dataloader
param_scheduler = [
    dict(type='LinearLR', start_factor=5e-7 / base_lr, by_epoch=True, begin=0,
         end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=5e-6,
         by_epoch=True, begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
auto_scale_lr = dict(base_batch_size=1024)
