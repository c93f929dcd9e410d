# ShuffleMamba-L1 + UperNet on ADE20K (paper Table 3: 320M parameters, 1168 GFLOPs,
# 48.8 mIoU single-scale / 49.9 multi-scale): the B recipe with the large backbone,
# depth 40 / width 1024, lr 3e-5 (large rows), gradients clipped at norm 3 (the
# official large config), drop path 0.2 and four levels from blocks 9/19/29/39.
#
# ShuffleMamba-L1 (mambar_large_patch16_224_40) was pretrained with RMSNorm; its
# official checkpoint loads with only the path set:
#   model = dict(backbone=dict(init_cfg=dict(type='Pretrained',
#                                            checkpoint='path/to/shufflemamba_l1_in1k.pth')))
_base_ = ['./upernet_shufflemamba_b.py']

embed_dims = 1024
model = dict(
    backbone=dict(
        arch='l1',
        norm_cfg=dict(type='RMSNorm', eps=1e-5),
        drop_path_rate=0.2,
        out_indices=(9, 19, 29, 39)),
    decode_head=dict(in_channels=[embed_dims] * 4),
    auxiliary_head=dict(in_channels=embed_dims))

optim_wrapper = dict(optimizer=dict(lr=3e-5), clip_grad=dict(max_norm=3.0))
