# ShuffleMamba-M + UperNet on ADE20K (paper Table 3: 106M parameters, 384 GFLOPs,
# 47.2 mIoU single-scale / 48.2 multi-scale): the B recipe (lr 6e-5, 160k iterations,
# 8 GPUs x 2 images) with the middle-size backbone, depth 32 / width 576, drop path 0.3
# and four levels from blocks 7/15/23/31.
#
# ShuffleMamba-M (mambar_middle_patch16_224) was pretrained with LayerNorm, so this
# config uses LayerNorm and its official checkpoint loads with only the path set:
#   model = dict(backbone=dict(init_cfg=dict(type='Pretrained',
#                                            checkpoint='path/to/shufflemamba_m_in1k.pth')))
_base_ = ['./upernet_shufflemamba_b.py']

embed_dims = 576
model = dict(
    backbone=dict(
        arch='m',
        norm_cfg=dict(type='LN', eps=1e-5),
        drop_path_rate=0.3,
        out_indices=(7, 15, 23, 31)),
    decode_head=dict(in_channels=[embed_dims] * 4),
    auxiliary_head=dict(in_channels=embed_dims))
