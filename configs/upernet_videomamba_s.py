# VideoMamba-S + UperNet on ADE20K, from the published ImageNet weights of VideoMamba-S
# (model 'videomamba_small'; not a row of the paper: a starting point from public weights,
# with the recipe of upernet_shufflemamba_b.py). RMSNorm blocks, width 384.
# VideoMamba's image models put one cls token in front (dropped at load).
# Its mixer sums the two directions (the others average them): the loader doubles
# out_proj, exactly. The official file names no model, so give its format:
#   model = dict(backbone=dict(init_cfg=dict(type='Pretrained', ckpt_format='videomamba',
#                                            checkpoint='path/to/videomamba-s.pth')))
# The backbone and recipe of upernet_mambar_s.py; only the weights differ.
_base_ = ['./upernet_mambar_s.py']
