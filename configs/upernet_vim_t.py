# Vim-T + UperNet on ADE20K, from the published ImageNet weights of Vim-T
# (model 'vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2';
# not a row of the paper: a starting point from public weights,
# with the recipe of upernet_shufflemamba_b.py). RMSNorm blocks, width 192.
# Vim's cls token sits in the middle of the sequence (position N // 2); it is dropped
# at load (num_registers=0), as the paper drops the classification tokens.
# The official file loads with only the path set:
#   model = dict(backbone=dict(init_cfg=dict(type='Pretrained',
#                                            checkpoint='path/to/vim-t.pth')))
_base_ = ['./upernet_shufflemamba_b.py']

embed_dims = 192
model = dict(
    backbone=dict(
        arch='t',
        norm_cfg=dict(type='RMSNorm', eps=1e-5),
        drop_path_rate=0.1,
        out_indices=(5, 11, 17, 23),
        num_registers=0),
    decode_head=dict(in_channels=[embed_dims] * 4),
    auxiliary_head=dict(in_channels=embed_dims))
