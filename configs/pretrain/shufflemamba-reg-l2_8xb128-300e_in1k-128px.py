# ShuffleMamba-Reg-L2 ImageNet-1K pretraining, stage 1 of 3 (paper Table 2: 340M
# parameters, 83.6 top-1 with EMA after the three stages): the Reg-B stages (see
# shufflemamba-reg-b_8xb128-300e_in1k-128px.py; the official run_reg.sh gives them for
# B only) with 48 blocks of width 1024 and 16 registers reduced 1024 -> 128 each
# (cls_reduce 8; head on 2048 features), RMSNorm, as mambar_large_patch16_224 of
# models_reg.py.
_base_ = ['./shufflemamba-reg-b_8xb128-300e_in1k-128px.py']

model = dict(
    backbone=dict(arch='l2', num_registers=16, cls_reduce=8),
    head=dict(in_channels=16 * 1024 // 8))
