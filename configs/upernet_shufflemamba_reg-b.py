# ShuffleMamba-Reg-B + UperNet on ADE20K (paper Table 3: 131M parameters, 477 GFLOPs,
# 48.2 mIoU single-scale / 48.9 multi-scale): the B config with the register model's
# ImageNet checkpoint. ShuffleMamba-Reg-B was pretrained with RMSNorm and 12 register
# tokens; the paper discards them for segmentation (num_registers=0: they are dropped at
# load, with their position embeddings), so the backbone is the B one and the official
# checkpoint loads with only the path set:
#   model = dict(backbone=dict(init_cfg=dict(type='Pretrained',
#                                            checkpoint='path/to/shufflemamba_reg_b_in1k.pth')))
_base_ = ['./upernet_shufflemamba_b.py']

model = dict(
    backbone=dict(
        arch='b',
        norm_cfg=dict(type='RMSNorm', eps=1e-5),
        drop_path_rate=0.2,
        num_registers=0))
