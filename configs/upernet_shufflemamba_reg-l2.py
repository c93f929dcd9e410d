# ShuffleMamba-Reg-L2 + UperNet on ADE20K (paper Table 3: 376M parameters, 1373 GFLOPs,
# 49.4 mIoU single-scale / 50.1 multi-scale): the L1 recipe (lr 3e-5) with the deeper
# large backbone, depth 48 / width 1024, drop path 0.3, gradients clipped at norm 5 (the
# official Reg-L2 config) and four levels from blocks 11/23/35/47.
#
# ShuffleMamba-Reg-L2 was pretrained with RMSNorm and 16 register tokens, which the
# paper discards for segmentation (num_registers=0: dropped at load with their position
# embeddings); its official checkpoint loads with only the path set:
#   model = dict(backbone=dict(init_cfg=dict(type='Pretrained',
#                                            checkpoint='path/to/shufflemamba_reg_l2_in1k.pth')))
_base_ = ['./upernet_shufflemamba_l1.py']

model = dict(
    backbone=dict(
        arch='l2',
        norm_cfg=dict(type='RMSNorm', eps=1e-5),
        drop_path_rate=0.3,
        num_registers=0,
        out_indices=(11, 23, 35, 47)))

optim_wrapper = dict(clip_grad=dict(max_norm=5.0))
