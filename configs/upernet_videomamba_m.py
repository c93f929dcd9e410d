# VideoMamba-M + UperNet on ADE20K, from the published ImageNet weights of VideoMamba-M
# (model 'videomamba_middle'; not a row of the paper: a starting point from public weights,
# with the recipe of upernet_shufflemamba_b.py). RMSNorm blocks, width 576.
# VideoMamba's image models put one cls token in front (dropped at load). Unlike
# ShuffleMamba-M (LayerNorm, upernet_shufflemamba_m.py), VideoMamba-M uses RMSNorm.
# Its mixer sums the two directions (the others average them): the loader doubles
# out_proj, exactly. The official file names no model, so give its format:
#   model = dict(backbone=dict(init_cfg=dict(type='Pretrained', ckpt_format='videomamba',
#                                            checkpoint='path/to/videomamba-m.pth')))
_base_ = ['./upernet_shufflemamba_b.py']

embed_dims = 576
model = dict(
    backbone=dict(
        arch='m',
        norm_cfg=dict(type='RMSNorm', eps=1e-5),
        drop_path_rate=0.3,
        out_indices=(7, 15, 23, 31),
        num_registers=0),
    decode_head=dict(in_channels=[embed_dims] * 4),
    auxiliary_head=dict(in_channels=embed_dims))
