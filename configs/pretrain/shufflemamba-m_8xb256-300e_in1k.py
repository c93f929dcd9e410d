# ShuffleMamba-M ImageNet-1K pretraining (paper Table 2: 74M parameters, 82.8 top-1):
# the B recipe (see shufflemamba-b_8xb256-300e_in1k.py) with 32 blocks of width 576 and
# LayerNorm (mambar_middle_patch16_224), drop path 0.5.
_base_ = ['./shufflemamba-b_8xb256-300e_in1k.py']

embed_dims = 576
model = dict(
    backbone=dict(arch='m', norm_cfg=dict(type='LN', eps=1e-5), drop_path_rate=0.5),
    head=dict(in_channels=embed_dims))
