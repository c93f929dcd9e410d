# Mask R-CNN + FPN with ShuffleMambaAdapter-Reg-B on COCO, the paper's recipe (Table 4:
# 131M parameters, 47.7 box AP / 42.6 mask AP): as the M config, with drop path 0.3 and
# interaction groups of 6 blocks.
#
# ShuffleMamba-Reg-B was pretrained with RMSNorm and 12 register tokens; the registers
# are dropped at load (the adapter runs on patch tokens only), so its official
# training checkpoint loads with only init_cfg.checkpoint set.
_base_ = ['./mask-rcnn_shufflemamba_adapter-m.py']

embed_dims = 768
model = dict(
    backbone=dict(
        arch='b',
        norm_cfg=dict(type='RMSNorm', eps=1e-5),
        drop_path_rate=0.3,
        deform_num_heads=12,
        interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]]),
    neck=dict(in_channels=[embed_dims] * 4))
