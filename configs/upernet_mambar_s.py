# Mamba-Reg-S + UperNet on ADE20K, from the published ImageNet weights of Mamba-Reg-S
# (model 'mambar_small_patch16_224'; not a row of the paper: a starting point from public weights,
# with the recipe of upernet_shufflemamba_b.py). RMSNorm blocks, width 384.
# Its 12 register tokens (and the classification neck, cls_reduce 2) are dropped at
# load (num_registers=0), as the paper does for the Reg models.
# The official file loads with only the path set:
#   model = dict(backbone=dict(init_cfg=dict(type='Pretrained',
#                                            checkpoint='path/to/mamba-reg-s.pth')))
_base_ = ['./upernet_shufflemamba_b.py']

embed_dims = 384
model = dict(
    backbone=dict(
        arch='s',
        norm_cfg=dict(type='RMSNorm', eps=1e-5),
        drop_path_rate=0.1,
        out_indices=(5, 11, 17, 23),
        num_registers=0),
    decode_head=dict(in_channels=[embed_dims] * 4),
    auxiliary_head=dict(in_channels=embed_dims))
