# Vim-S + UperNet on ADE20K, from the published ImageNet weights of Vim-S
# (model 'vim_small_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2';
# not a row of the paper: a starting point from public weights,
# with the recipe of upernet_shufflemamba_b.py). RMSNorm blocks, width 384.
# Vim's cls token sits in the middle of the sequence (position N // 2); it is dropped
# at load (num_registers=0), as the paper drops the classification tokens.
# The official file loads with only the path set:
#   model = dict(backbone=dict(init_cfg=dict(type='Pretrained',
#                                            checkpoint='path/to/vim-s.pth')))
# The backbone and recipe of upernet_mambar_s.py; only the weights differ.
_base_ = ['./upernet_mambar_s.py']
