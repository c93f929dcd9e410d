# ShuffleMamba-Reg-L2 ImageNet-1K pretraining, stage 3 of 3: the Reg-B fine-tune recipe
# (shufflemamba-reg-b_8xb64-20e_in1k-224px-ft.py) with the Reg-L2 model, from the Reg-L2
# stage 2 checkpoint; EMA 0.99996 (paper: 83.6 top-1 with EMA). The dense Reg-L2 configs
# load this stage's checkpoint.
_base_ = ['./shufflemamba-reg-b_8xb64-20e_in1k-224px-ft.py']

stage2_checkpoint = 'work_dirs/shufflemamba-reg-l2_8xb128-100e_in1k-224px/epoch_100.pth'
model = dict(
    backbone=dict(arch='l2', num_registers=16, cls_reduce=8,
                  init_cfg=dict(_delete_=True, type='Pretrained', checkpoint=stage2_checkpoint)),
    head=dict(in_channels=16 * 1024 // 8,
              init_cfg=dict(type='Pretrained', checkpoint=stage2_checkpoint,
                            prefix='head')))
