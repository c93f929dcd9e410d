# ShuffleMamba-Reg-L2 ImageNet-1K pretraining, stage 2 of 3: the Reg-B stage 2 recipe
# (shufflemamba-reg-b_8xb128-100e_in1k-224px.py) with the Reg-L2 model, from the Reg-L2
# stage 1 checkpoint.
_base_ = ['./shufflemamba-reg-b_8xb128-100e_in1k-224px.py']

stage1_checkpoint = 'work_dirs/shufflemamba-reg-l2_8xb128-300e_in1k-128px/epoch_300.pth'
model = dict(
    backbone=dict(arch='l2', num_registers=16, cls_reduce=8,
                  init_cfg=dict(_delete_=True, type='Pretrained', checkpoint=stage1_checkpoint)),
    head=dict(in_channels=16 * 1024 // 8,
              init_cfg=dict(type='Pretrained', checkpoint=stage1_checkpoint,
                            prefix='head')))
