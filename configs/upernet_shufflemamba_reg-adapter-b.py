# UperNet with ShuffleMambaAdapter-Reg-B on ADE20K, the official recipe (Table 3: 145M
# parameters, 49.3 mIoU single-scale): 160k iterations, 8 GPUs x 2 images, 512x512,
# AdamW lr 6e-5 wd 0.01 (no layer decay), poly with 1500-iteration warmup, drop path
# 0.2, four adapter levels (strides 4-32) into UPerHead, FCN auxiliary head on the
# third level (stride 16, as ViT-Adapter's UperNet), sliding-window test 512/341.
#
# ShuffleMamba-Reg-B was pretrained with RMSNorm and 12 register tokens (dropped at
# load): its official training checkpoint loads with only init_cfg.checkpoint set.
_base_ = ['./upernet_shufflemamba_b.py']

embed_dims = 768
model = dict(
    backbone=dict(
        _delete_=True,
        type='ShuffleMambaAdapter',
        arch='b',
        img_size=224,
        patch_size=16,
        norm_cfg=dict(type='RMSNorm', eps=1e-5),
        drop_path_rate=0.2,
        shuffle_rate=0.0,
        conv_inplane=64,
        n_points=4,
        deform_num_heads=12,
        init_values=0.0,
        interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]],
        with_cffn=True,
        cffn_ratio=0.25,
        deform_ratio=0.5,
        add_backbone_feature=True,
        use_extra_extractor=True,
        adapter_norm_cfg=dict(type='SyncBN', requires_grad=True),
        with_cp=False),
    decode_head=dict(in_channels=[embed_dims] * 4, in_index=[0, 1, 2, 3]),
    auxiliary_head=dict(in_channels=embed_dims, in_index=2))
