# VideoMamba-S + UperNet on ADE20K, from the published ImageNet weights of VideoMamba-S
# (model 'videomamba_small'; not a row of the paper: a starting point from public weights,
# with the recipe of upernet_shufflemamba_b.py). RMSNorm blocks, width 384.
# VideoMamba's image models put one cls token in front (dropped at load).
# Its mixer sums the two directions (the others average them): the loader doubles
# out_proj, exactly. The official file names no model, so give its format:
#   model = dict(backbone=dict(init_cfg=dict(type='Pretrained', ckpt_format='videomamba',
#                                            checkpoint='path/to/videomamba-s.pth')))
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
