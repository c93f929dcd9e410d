# Mask R-CNN + FPN with ShuffleMambaAdapter-Reg-L2 on COCO, the paper's recipe (Table 4:
# 383M parameters, 48.9 box AP / 43.6 mask AP): as the M config, with drop path 0.5,
# interaction groups of 12 blocks and 16 deformable heads.
#
# ShuffleMamba-Reg-L2 was pretrained with RMSNorm and 16 register tokens (dropped at
# load).
_base_ = ['./mask-rcnn_shufflemamba_adapter-m.py']

embed_dims = 1024
model = dict(
    backbone=dict(
        arch='l2',
        norm_cfg=dict(type='RMSNorm', eps=1e-5),
        drop_path_rate=0.5,
        deform_num_heads=16,
        interaction_indexes=[[0, 11], [12, 23], [24, 35], [36, 47]]),
    neck=dict(in_channels=[embed_dims] * 4))
